"""Signed bundles on the device (runtime/trust.py): a device that trusts keys runs only what
one of them signed. Real keys and signatures (OpenSSH's ssh-keygen), real bundles, real
`python -m runtime` processes and a real `serve`; the deploy's gate is tests/deploy/test_deploy.py's.

The attack the issue names is the first test: one byte of the model changed and every
sha256 recomputed (manifest and manifest.json.sha256 included), which every check before
signatures accepted.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from runtime import Runner, selfcheck, trust
from runtime.errors import EXIT_BAD_INPUT, EXIT_BAD_SIGNATURE, EXIT_ENVIRONMENT, EXIT_UNSIGNED, EXIT_UNTRUSTED_KEY
from tests.support import forkrun
from tests.support.bundles import keypair, resign, shifted_bundle, sign, trusted_keys
from tests.support.core import one_error_line, ROOT, run_module


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """Two signing keys: the build's ("old") and the one it rotates to ("new"), and a stranger's."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: keypair(folder, name, f"{name} key") for name in ("old", "new", "stranger")}


def cli(bundle: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m runtime ...` with this checkout's runtime, on ``bundle``."""
    return run_module("runtime", args[0], "--bundle", str(bundle), *args[1:], env=env, stdin=b"")


def attacked(bundle: Path) -> None:
    """The attack: one byte of model.onnx changed, and every sha256 recomputed to match."""
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    resign(bundle, "model.onnx", bytes(data))


@pytest.fixture
def signed(bundle, keys) -> Path:
    sign(bundle, keys["old"])
    return bundle


@pytest.fixture
def trusting(tmp_path, keys) -> Path:
    """A trusted-keys file listing the build's key."""
    return trusted_keys(tmp_path / "trusted_keys", keys["old"])


def test_the_attack_is_refused_by_a_device_that_trusts_the_builds_key(signed, trusting):
    attacked(signed)
    assert selfcheck(signed)[-1]["name"] == "golden"  # without trusted keys, every check still passes...
    assert all(c["ok"] for c in selfcheck(signed))
    r = cli(signed, "selfcheck", "--trusted-keys", str(trusting))  # ... with them, the attack is refused
    assert r.returncode == EXIT_BAD_SIGNATURE, r.stderr
    line = one_error_line(r)
    assert line.startswith("error: selfcheck signature: manifest.json | does not match its signature by SHA256:")
    assert "(old key): changed after it was signed" in line
    assert "FAIL signature" in r.stdout.decode()
    with pytest.raises(trust.TrustError) as e:
        Runner.from_bundle(signed, trusted_keys=trusting)
    assert e.value.exit_code == EXIT_BAD_SIGNATURE


def test_a_bundle_signed_by_a_trusted_key_passes_and_selfcheck_names_the_key(signed, trusting, keys):
    r = cli(signed, "selfcheck", "--trusted-keys", str(trusting))
    assert r.returncode == 0, r.stderr
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", f"{keys['old']}.pub"], capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    row = next(ln for ln in r.stdout.decode().splitlines() if ln.split()[1] == "signature")
    assert row.split(None, 2) == ["ok", "signature", f"signed by {fingerprint} (old key), trusted "
                                                     f"(trusted keys {trusting})"]
    with Runner.from_bundle(signed, trusted_keys=trusting) as r:
        assert r.origin.verified and r.origin.key.fingerprint == fingerprint
        assert r.predict([100.0]).shape == (1,)


@pytest.mark.parametrize("case, code, says", [
    ("unsigned", EXIT_UNSIGNED, "manifest.json.sig | missing: the bundle is unsigned"),
    ("stranger", EXIT_UNTRUSTED_KEY, "manifest.json.sig | signed by SHA256:"),
    ("altered", EXIT_BAD_SIGNATURE, "manifest.json | does not match its signature"),
    ("other namespace", EXIT_BAD_SIGNATURE, "manifest.json.sig | not a bundle signature: made for namespace 'file'"),
    ("garbage", EXIT_BAD_SIGNATURE, "manifest.json.sig | not a bundle signature: expected the armored output"),
    ("huge", EXIT_BAD_SIGNATURE, "manifest.json.sig | not a bundle signature: larger than 65536 bytes"),
])
def test_each_refusal_is_one_line_with_its_own_exit_code_at_load_selfcheck_and_every_command(
        bundle, trusting, keys, case, code, says):
    if case == "stranger":
        sign(bundle, keys["stranger"])
    elif case == "altered":
        sign(bundle, keys["old"])
        attacked(bundle)
    elif case == "other namespace":
        r = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["old"]), "-n", "file"],
                           input=(bundle / "manifest.json").read_bytes(), capture_output=True, check=True)
        (bundle / trust.SIGNATURE).write_bytes(r.stdout)
    elif case == "garbage":
        (bundle / trust.SIGNATURE).write_text("not a signature\n")
    elif case == "huge":  # a real signature, padded: read no further than a signature can be
        sign(bundle, keys["old"])
        with open(bundle / trust.SIGNATURE, "ab") as f:
            f.write(b"\n" * (64 << 10))
    with pytest.raises(trust.TrustError) as e:
        Runner.from_bundle(bundle, trusted_keys=trusting)
    assert e.value.exit_code == code and e.value.message.startswith(says), e.value.message
    failed = selfcheck(bundle, trusted_keys=trusting)[-1]
    assert (failed["name"], failed["ok"], failed["exit_code"], failed["detail"]) == ("signature", False, code,
                                                                                    e.value.message)
    for command in (["selfcheck"], ["predict", "100"], ["info"], ["stream"]):
        r = cli(bundle, *command, env={trust.ENV: str(trusting)})  # the environment variable, this time
        assert r.returncode == code, (command, r.stderr)
        assert one_error_line(r).endswith(e.value.message)
    if case == "stranger":  # names the key that signed and the ones trusted
        assert "(trusted keys" in e.value.message and "(old key)" in e.value.message


def test_with_no_trusted_key_unsigned_and_signed_bundles_run_unverified_in_origin(bundle, keys):
    for signed_by in (None, "old"):
        if signed_by:
            sign(bundle, keys[signed_by])
        r = cli(bundle, "selfcheck", env={"EDGE_SSH_KEYGEN": "/nonexistent/ssh-keygen"})  # never run: nothing to check
        assert r.returncode == 0, r.stderr
        info = json.loads(cli(bundle, "info").stdout)
        assert info["origin"]["verified"] is False and info["origin"]["trusted_keys"] is None
        assert "unverified in origin" in info["origin"]["detail"] or "not verified" in info["origin"]["detail"]
        assert (info["origin"]["signed_by"] is None) == (signed_by is None)


def test_more_than_one_key_may_be_trusted_and_a_removed_key_is_refused(bundle, tmp_path, keys):
    both = trusted_keys(tmp_path / "both", keys["old"], keys["new"])
    only_new = trusted_keys(tmp_path / "new", keys["new"])
    sign(bundle, keys["old"])
    assert cli(bundle, "selfcheck", "--trusted-keys", str(both)).returncode == 0
    r = cli(bundle, "selfcheck", "--trusted-keys", str(only_new))
    assert r.returncode == EXIT_UNTRUSTED_KEY and "(old key)" not in one_error_line(r)
    sign(bundle, keys["new"])
    for file in (both, only_new):
        assert cli(bundle, "selfcheck", "--trusted-keys", str(file)).returncode == 0


def test_the_flag_wins_over_the_environment(signed, tmp_path, keys, trusting):
    stranger = trusted_keys(tmp_path / "stranger", keys["stranger"])
    assert cli(signed, "selfcheck", env={trust.ENV: str(stranger)}).returncode == EXIT_UNTRUSTED_KEY
    assert cli(signed, "selfcheck", "--trusted-keys", str(trusting), env={trust.ENV: str(stranger)}).returncode == 0


@pytest.mark.parametrize("content, says", [
    (None, "cannot read: No such file or directory"),
    ("", "lists no key, expected public keys one per line"),
    ("# only a comment\n\n", "lists no key"),
    ("ssh-ed25519\n", "line 1: expected a public key as ssh-keygen writes it"),
    ("# ok\nssh-ed25519 AAAA!!notbase64 c\n", "line 2: the key after 'ssh-ed25519' is not base64"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILNluCpE7w1AypKluV+bUdtf604axQWWMctOt9RfkxIf x\n",
     "line 1: the key says it is 'ssh-ed25519', the line says 'ssh-rsa'"),
])
def test_a_bad_trusted_keys_file_fails_closed_in_one_line_exit_2(signed, tmp_path, content, says):
    path = tmp_path / "trusted_keys"
    if content is not None:
        path.write_text(content)
    for how in ("flag", "env"):
        args = ("--trusted-keys", str(path)) if how == "flag" else ()
        r = cli(signed, "selfcheck", *args, env={trust.ENV: str(path)} if how == "env" else None)
        assert r.returncode == EXIT_BAD_INPUT
        line = one_error_line(r)
        assert line.startswith(f"error: selfcheck signature: trusted keys {path}") and says in line, line


def test_no_ssh_keygen_is_one_line_exit_5_and_an_untrusted_key_needs_none(signed, trusting, tmp_path, keys):
    env = {"EDGE_SSH_KEYGEN": "/nonexistent/ssh-keygen"}
    r = cli(signed, "selfcheck", "--trusted-keys", str(trusting), env=env)
    assert r.returncode == EXIT_ENVIRONMENT
    assert "/nonexistent/ssh-keygen not found: checking a bundle's signature needs OpenSSH's ssh-keygen" in \
        one_error_line(r)
    stranger = trusted_keys(tmp_path / "stranger", keys["stranger"])
    assert cli(signed, "selfcheck", "--trusted-keys", str(stranger), env=env).returncode == EXIT_UNTRUSTED_KEY


def test_fingerprints_and_key_parsing_agree_with_ssh_keygen(keys):
    for path in keys.values():
        out = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], capture_output=True, text=True,
                             check=True).stdout.split()
        key = trust.parse_public_key(Path(f"{path}.pub").read_text())
        assert key.fingerprint == out[1] and key.type == "ssh-ed25519"
        assert key.line == " ".join(Path(f"{path}.pub").read_text().split()[:2])


def start_serve(bundle: Path, *args: str, env: dict | None = None):
    from tests.support.server import Server

    return Server(bundle, "--port", "0", *args, env=env)


def test_serve_refuses_to_start_on_each_refusal_with_its_exit_code(bundle, trusting, keys):
    sign(bundle, keys["stranger"])
    r = forkrun.python("-m", "runtime", "serve", "--bundle", str(bundle), "--port", "0",
                       "--trusted-keys", str(trusting), cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == EXIT_UNTRUSTED_KEY
    assert one_error_line(r).startswith("error: serve: selfcheck signature: manifest.json.sig | signed by SHA256:")


def test_a_sighup_reload_refuses_what_is_not_trusted_and_the_old_model_keeps_serving(bundle, tmp_path, keys):
    """serve reads the trusted keys anew at each reload: an unsigned, an untrusted and an
    altered release are refused in turn, and so is the running release once its key is
    removed from the file; the old model answers throughout."""
    trusting = trusted_keys(tmp_path / "trusted_keys", keys["old"])
    a = tmp_path / "a"
    shutil.copytree(bundle, a)
    sign(a, keys["old"])
    current = tmp_path / "current"
    current.symlink_to(a)
    s = start_serve(current, "--trusted-keys", str(trusting))
    try:
        sha_a = json.loads((a / "manifest.json").read_text())["files"]["model.onnx"]
        conn = http.client.HTTPConnection(s.host, s.port, timeout=60)

        def model_answering() -> str:
            conn.request("POST", "/predict", json.dumps({"celsius": [100.0]}), {"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200
            return json.loads(r.read())["model"]

        def repoint(target: Path) -> None:
            tmp = tmp_path / "current.new"
            tmp.symlink_to(target)
            os.replace(tmp, current)

        releases = {}
        for case in ("unsigned", "stranger", "altered"):
            b = shifted_bundle(a, tmp_path / case, delta=1.0)  # a valid release: another model, hashes right
            if case == "stranger":
                sign(b, keys["stranger"])
            elif case == "altered":
                sign(b, keys["old"])
                attacked(b)
            else:
                (b / trust.SIGNATURE).unlink(missing_ok=True)
            releases[case] = b
        for case, says in (("unsigned", "the bundle is unsigned"), ("stranger", "a key this device does not trust"),
                           ("altered", "does not match its signature")):
            repoint(releases[case])
            s.proc.send_signal(signal.SIGHUP)
            line = s.wait_for("reload failed")
            assert f"still serving model {sha_a[:12]}: signature: " in line and says in line, line
            assert model_answering() == sha_a
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        health = json.loads(r.read())
        assert r.status == 503 and health["checks"][-1]["name"] == "signature"

        repoint(a)  # the running release again, and then its key revoked
        s.proc.send_signal(signal.SIGHUP)
        s.wait_for("reloaded: model")
        trusted_keys(trusting, keys["new"])
        s.proc.send_signal(signal.SIGHUP)
        line = s.wait_for("reload failed")
        assert "a key this device does not trust" in line
        assert model_answering() == sha_a
        conn.close()
    finally:
        assert s.stop() == 0
