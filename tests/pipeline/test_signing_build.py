"""Signed bundles, the build's side (issue 18): `make keys`, SIGNING_KEY, manifest.json.sig, refusals.

Real ssh-keygen and the real bundle stage, on copies of the session's build (no retraining).
"""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from runtime import trust
from tests.support.builds import Built, copied_build
from tests.support.bundles import keypair, trusted_keys
from tests.support.core import one_error_line, pipeline, ROOT, sha256_bytes

NO_KEY = {"SIGNING_KEY": ""}  # whatever the caller's environment holds


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("SIGNING_KEY", "KEY", "MAKEFLAGS")}
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True,
                          env={**e, **(env or {})}, timeout=600)


def fingerprint(pub: Path) -> tuple[str, str]:
    """(fingerprint, comment) of a public key file, as ssh-keygen -l says them."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True).stdout
    bits, fp, rest = out.strip().split(" ", 2)
    return fp, rest.rsplit(" (", 1)[0]


def ssh_verify(manifest: bytes, sig: bytes, pub: Path, tmp: Path) -> subprocess.CompletedProcess:
    """OpenSSH's own check of ``sig`` over ``manifest``, with ``pub`` the one allowed signer."""
    allowed, sig_file = tmp / "allowed_signers", tmp / "checked.sig"
    allowed.write_text(f'release namespaces="{trust.NAMESPACE}" {pub.read_text().strip()}\n')
    sig_file.write_bytes(sig)
    return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "release", "-n", trust.NAMESPACE,
                           "-s", str(sig_file)], input=manifest, capture_output=True, timeout=60)


def secrets(key: Path) -> list[bytes]:
    """What must never leave the private key file: its base64 lines (but the first, the same in every
    unencrypted ed25519 key) and, unless it is encrypted, the raw 32-byte ed25519 seed inside them."""
    lines = [s for s in key.read_text().splitlines() if s and not s.startswith("-----")]
    blob = base64.b64decode("".join(lines))
    assert blob.startswith(b"openssh-key-v1\0"), "not an OpenSSH private key"
    if blob[19:23] != b"none":  # the cipher: the private section is encrypted
        return [s.encode() for s in lines[1:]]

    def skip(at: int) -> int:
        return at + 4 + int.from_bytes(blob[at:at + 4], "big")

    at = skip(skip(skip(15)))  # cipher, kdf, kdf options
    at = skip(at + 4)  # the number of keys, the public key
    at += 4 + 8  # the private section's length, its two check words
    at = skip(skip(at))  # key type, public key
    assert int.from_bytes(blob[at:at + 4], "big") == 64  # ed25519: seed, then the public key
    seed = blob[at + 4:at + 36]
    return [s.encode() for s in lines[1:]] + [seed, seed.hex().encode(), base64.b64encode(seed)[:40]]


def assert_no_secret(key: Path, *blobs: bytes) -> None:
    for s in secrets(key):
        for b in blobs:
            assert s not in b, "the private key's content got out"


def files_of(*folders: Path) -> dict[str, bytes]:
    """Every file under ``folders``, by path, with its bytes (and the tarball's, decompressed)."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                out[str(p)] = p.read_bytes()
                if p.name.endswith(".tar.gz"):
                    out[f"{p} (unpacked)"] = gzip.decompress(out[str(p)])
    return out


def members(tarball: Path) -> dict[str, bytes]:
    with tarfile.open(tarball) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def bundle(b: Built, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return pipeline(*b.args("bundle"), *args, env={**NO_KEY, **(env or {})})


@pytest.fixture(scope="module")
def builds(built, tmp_path_factory):
    """One key and three bundle stages on copies of the session's build: unsigned, signed (by
    --signing-key) and signed again (by $SIGNING_KEY); each name -> (Built, its run)."""
    root = tmp_path_factory.mktemp("signing")
    key = keypair(root / "keys", "release", comment="release key")
    out = {}
    for name, args, env in (("unsigned", (), {}), ("signed", ("--signing-key", str(key)), {}),
                            ("again", (), {"SIGNING_KEY": str(key)})):
        b = Built(root / name, built.config)
        shutil.copytree(built.build, b.build)
        r = bundle(b, *args, env=env)
        assert r.returncode == 0, r.stderr.decode()
        out[name] = b, r
    return key, out


def test_the_signed_manifest_is_the_unsigned_one_and_its_signature_verifies(builds, tmp_path):
    key, b = builds
    unsigned, signed = b["unsigned"][0].dist / "bundle", b["signed"][0].dist / "bundle"
    manifest = (signed / "manifest.json").read_bytes()
    assert manifest == (unsigned / "manifest.json").read_bytes()
    assert (signed / "manifest.json.sha256").read_bytes() == (unsigned / "manifest.json.sha256").read_bytes()
    assert not (unsigned / trust.SIGNATURE).exists()
    sig = (signed / trust.SIGNATURE).read_bytes()
    assert sig.startswith(b"-----BEGIN SSH SIGNATURE-----\n")
    r = ssh_verify(manifest, sig, Path(f"{key}.pub"), tmp_path)
    assert r.returncode == 0 and b'Good "edge-bundle" signature for release' in r.stdout + r.stderr, r.stderr
    # The control: the same signature over a manifest changed by one byte does not verify.
    assert ssh_verify(manifest.replace(b'"format"', b'"Format"', 1), sig, Path(f"{key}.pub"), tmp_path).returncode != 0
    # Everything else is the unsigned bundle's, byte for byte; the signature is listed nowhere.
    rel = {p.relative_to(signed).as_posix(): p.read_bytes() for p in signed.rglob("*") if p.is_file()}
    want = {p.relative_to(unsigned).as_posix(): p.read_bytes() for p in unsigned.rglob("*") if p.is_file()}
    assert rel.pop(trust.SIGNATURE) == sig and rel == want
    assert trust.SIGNATURE.encode() not in manifest


def test_the_tarball_holds_the_signature_beside_the_manifest(builds):
    key, b = builds
    signed, unsigned = members(b["signed"][0].dist / "bundle.tar.gz"), members(b["unsigned"][0].dist / "bundle.tar.gz")
    assert signed.pop(f"bundle/{trust.SIGNATURE}") == (b["signed"][0].dist / "bundle" / trust.SIGNATURE).read_bytes()
    assert signed == unsigned and f"bundle/{trust.SIGNATURE}" not in unsigned


def test_the_runtime_trusts_the_signed_bundle_and_refuses_the_unsigned(builds, tmp_path):
    key, b = builds
    trusted = trust.read_keys(trusted_keys(tmp_path / "trusted_keys", key))
    folder = b["signed"][0].dist / "bundle"
    origin = trust.check(folder, (folder / "manifest.json").read_bytes(), trusted)
    assert origin.verified and origin.key.fingerprint == fingerprint(Path(f"{key}.pub"))[0]
    folder = b["unsigned"][0].dist / "bundle"
    with pytest.raises(trust.TrustError) as e:
        trust.check(folder, (folder / "manifest.json").read_bytes(), trusted)
    assert "unsigned" in e.value.message


def test_the_same_key_gives_the_same_tarball_and_the_line_names_it(builds):
    key, b = builds
    fp, comment = fingerprint(Path(f"{key}.pub"))
    assert comment == "release key"
    tarballs = {n: (b[n][0].dist / "bundle.tar.gz").read_bytes() for n in b}
    assert sha256_bytes(tarballs["signed"]) == sha256_bytes(tarballs["again"])  # by option and by variable
    assert sha256_bytes(tarballs["signed"]) != sha256_bytes(tarballs["unsigned"])
    for name in ("signed", "again"):
        line, = b[name][1].stdout.decode().splitlines()
        assert line.startswith("bundle: ") and f", signed by {fp} (release key) [" in line
        assert sha256_bytes(tarballs[name]) in line
    line, = b["unsigned"][1].stdout.decode().splitlines()
    assert ", unsigned (no SIGNING_KEY) [" in line and "signed by" not in line


def test_another_key_gives_another_signature_over_the_same_manifest(builds, built, tmp_path):
    key, b = builds
    other = keypair(tmp_path / "keys", "other")
    o = Built(tmp_path, built.config)
    shutil.copytree(built.build, o.build)
    assert bundle(o, "--signing-key", str(other)).returncode == 0
    first, second = b["signed"][0].dist / "bundle", o.dist / "bundle"
    assert (second / "manifest.json").read_bytes() == (first / "manifest.json").read_bytes()
    sig = (second / trust.SIGNATURE).read_bytes()
    assert sig != (first / trust.SIGNATURE).read_bytes()
    assert trust.signer(sig).fingerprint == fingerprint(Path(f"{other}.pub"))[0]
    assert ssh_verify((second / "manifest.json").read_bytes(), sig, Path(f"{key}.pub"), tmp_path).returncode != 0
    assert ssh_verify((second / "manifest.json").read_bytes(), sig, Path(f"{other}.pub"), tmp_path).returncode == 0


def test_signing_txt_records_the_key_for_make(builds):
    key, b = builds
    assert (b["unsigned"][0].build / "signing.txt").read_text() == "unsigned\n"
    assert (b["signed"][0].build / "signing.txt").read_text() == fingerprint(Path(f"{key}.pub"))[0] + "\n"


def test_the_build_never_prints_or_writes_the_private_key(builds):
    key, b = builds
    for name in ("signed", "again"):
        build, run = b[name]
        written = files_of(build.build, build.dist)
        assert any(n.endswith(trust.SIGNATURE) for n in written)  # the check looks where the signature is
        assert_no_secret(key, run.stdout, run.stderr, *written.values())


# --- keys that cannot sign: one line, exit 2, nothing written -----------------------------------

def _fake_ssh_keygen(tmp: Path, body: str) -> dict:
    """EDGE_SSH_KEYGEN pointing at a shell script that runs ``body`` for `-Y sign` (stdin: what to
    sign) and the real ssh-keygen for everything else."""
    real = shutil.which("ssh-keygen")
    script = tmp / "fake-ssh-keygen"
    script.write_text(f'#!/bin/sh\nif [ "$1" = -Y ] && [ "$2" = sign ]; then\n{body}\nfi\nexec {real} "$@"\n')
    script.chmod(0o755)
    return {trust.SSH_KEYGEN_ENV: str(script)}


def _missing(tmp):
    return tmp / "keys" / "nothing-here", {}, "no such file; make a key with `make keys KEY="


def _public(tmp):
    k = keypair(tmp / "keys")
    return Path(f"{k}.pub"), {}, f"is a public key; give the private key it belongs to, {k}"


def _not_a_key(tmp):
    (tmp / "keys").mkdir()
    (tmp / "keys" / "notes").write_text("remember to sign the bundle\n")
    (tmp / "keys" / "notes").chmod(0o600)
    return tmp / "keys" / "notes", {}, "not an OpenSSH private key"


def _too_open(tmp):
    k = keypair(tmp / "keys")
    k.chmod(0o644)
    return k, {}, f"permissions 0644 are too open for a private key (ssh-keygen refuses one that others can read): chmod 600 {k}"


def _passphrase(tmp):
    (tmp / "keys").mkdir()
    k = tmp / "keys" / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(k)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    return k, {}, "is protected by a passphrase, which a build cannot type; it needs a key without a passphrase"


def _no_ssh_keygen(tmp):
    (tmp / "empty-bin").mkdir()
    return keypair(tmp / "keys"), {"PATH": str(tmp / "empty-bin")}, "ssh-keygen not found: signing needs OpenSSH"


def _old_ssh_keygen(tmp):  # OpenSSH 8.0 and older: no -Y
    env = _fake_ssh_keygen(tmp, '  echo "ssh-keygen: illegal option -- Y" >&2\n  echo "usage: ssh-keygen [-q]" >&2\n'
                                "  exit 1")
    return keypair(tmp / "keys"), env, "has no -Y sign (OpenSSH older than 8.1? it says: ssh-keygen: illegal option -- Y)"


def _signs_with_another_key(tmp):
    other = keypair(tmp / "keys", "other")
    env = _fake_ssh_keygen(tmp, f"  exec ssh-keygen -Y sign -f {other} -n {trust.NAMESPACE}")
    return keypair(tmp / "keys"), env, f"signed with {fingerprint(Path(f'{other}.pub'))[0]}, not with this key"


def _damages_the_manifest_signature(tmp):
    # A good signature of the probe, a wrong one of anything else: only a check of the
    # manifest's own signature (not just the key's at the start) catches it.
    env = _fake_ssh_keygen(tmp, '  data=$(cat)\n  if [ "$data" = "edge-bundle signing probe" ]; then\n'
                                '    printf "%s\\n" "$data" | ssh-keygen "$@"\n  else\n'
                                '    echo "not the manifest" | ssh-keygen "$@"\n  fi\n  exit')
    return keypair(tmp / "keys"), env, "its signature does not verify with its own public key"


BAD_KEYS = {f.__name__.lstrip("_").replace("_", " "): f for f in (
    _missing, _public, _not_a_key, _too_open, _passphrase, _no_ssh_keygen, _old_ssh_keygen,
    _signs_with_another_key, _damages_the_manifest_signature)}


@pytest.mark.parametrize("case", BAD_KEYS)
def test_a_key_that_cannot_sign_is_one_line_exit_2_and_writes_nothing(case, builds, tmp_path):
    key, env, says = BAD_KEYS[case](tmp_path)
    b = Built(tmp_path / "copy", builds[1]["unsigned"][0].config)
    copied_build((builds[1]["unsigned"][0].build, builds[1]["unsigned"][0].dist), b.root)
    before = files_of(b.build, b.dist)
    r = pipeline(*b.args("bundle"), env={"SIGNING_KEY": str(key), **env})
    assert r.returncode == 2, r.stderr.decode()
    line = one_error_line(r)
    assert line.startswith(f"error: SIGNING_KEY {key}: ") and says in line, line
    assert r.stdout == b""
    assert files_of(b.build, b.dist) == before
    for k in {key, key.with_suffix("")} if key.suffix == ".pub" else {key}:
        if k.is_file() and k.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----"):
            assert_no_secret(k, r.stdout, r.stderr)


def test_all_refuses_a_bad_key_before_it_trains(tmp_path):
    b = Built(tmp_path, ROOT / "configs" / "default.toml")
    key = tmp_path / "missing-key"
    r = pipeline(*b.args("all"), "--signing-key", str(key))
    assert r.returncode == 2
    assert one_error_line(r).startswith(f"error: SIGNING_KEY {key}: no such file")
    assert not b.build.exists() and not b.dist.exists()


@pytest.mark.slow  # an example's build: shared with test_examples in make test
def test_another_models_bundle_is_signed_the_same_way(example_build, tmp_path):
    """The wine example's (13 features, 3 classes): signing does not depend on the model."""
    build, dist = copied_build(example_build("wine"), tmp_path)
    key = keypair(tmp_path / "keys")
    r = pipeline("bundle", "--config", str(build / "config.toml"), "--build", str(build), "--dist", str(dist),
                 "--signing-key", str(key))
    assert r.returncode == 0, r.stderr.decode()
    assert f", signed by {fingerprint(Path(f'{key}.pub'))[0]} (test key signing) [" in r.stdout.decode()
    manifest = (dist / "bundle" / "manifest.json").read_bytes()
    assert manifest == (example_build("wine")[1] / "bundle" / "manifest.json").read_bytes()
    sig = members(dist / "bundle.tar.gz")[f"bundle/{trust.SIGNATURE}"]
    assert sig == (dist / "bundle" / trust.SIGNATURE).read_bytes()
    assert ssh_verify(manifest, sig, Path(f"{key}.pub"), tmp_path).returncode == 0


# --- make keys -----------------------------------------------------------------------------------

def test_make_keys_writes_a_private_key_0600_and_its_public_key(tmp_path):
    key = tmp_path / "new folder" / "release key"  # a space: one path all the same; the folder made
    r = make("keys", f"KEY={key}")
    assert r.returncode == 0, r.stderr.decode()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    pub = Path(f"{key}.pub")
    fp, comment = fingerprint(pub)
    assert comment.startswith("edge-bundle signing key ")
    line, = r.stdout.decode().splitlines()
    assert line.startswith(f"keys: wrote {key} ") and f"{pub} ({fp})" in line
    assert "edge_trusted_keys" in line and "EDGE_TRUSTED_KEYS" in line
    assert r.stderr == b""
    assert_no_secret(key, r.stdout, r.stderr)
    # A pair, without a passphrase: the private key gives the public one with an empty passphrase.
    derived = subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == pub.read_text().split()[:2]
    assert sorted(p.name for p in key.parent.iterdir()) == ["release key", "release key.pub"]


@pytest.mark.parametrize("existing", ["the key", "its .pub"])
def test_make_keys_refuses_to_overwrite(existing, tmp_path):
    key = tmp_path / "k"
    there = key if existing == "the key" else Path(f"{key}.pub")
    there.write_bytes(b"precious\n")
    os.utime(there, (1_600_000_000, 1_600_000_000))
    r = make("keys", f"KEY={key}")
    assert r.returncode == 2
    errors = [s for s in r.stderr.decode().splitlines() if s.startswith("error:")]
    assert errors == [f"error: make keys: {there} exists; refusing to overwrite a key (choose another KEY=path)"]
    assert [p.name for p in tmp_path.iterdir()] == [there.name]
    assert there.read_bytes() == b"precious\n" and there.stat().st_mtime == 1_600_000_000


def test_make_keys_without_KEY_says_so(tmp_path):
    r = make("keys")
    assert r.returncode == 2 and r.stdout == b""
    errors = [s for s in r.stderr.decode().splitlines() if s.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: make keys needs KEY=path")


def test_make_help_lists_keys_and_all_does_not_make_one(tmp_path):
    r = make("-s", "help")
    assert any(s.split()[0] == "keys" and len(s.split()) > 1 for s in r.stdout.decode().splitlines() if s.strip())
    dry = make("-n", "all", f"BUILD={tmp_path}/build", f"DIST={tmp_path}/dist", f"KEY={tmp_path}/k")
    assert dry.returncode == 0, dry.stderr.decode()
    assert b"-t ed25519" not in dry.stdout and b"-y -P" in dry.stdout  # the signing stamp, not keys


# --- make: a new signing key re-bundles, the same one does nothing -------------------------------

def test_make_all_refuses_a_bad_key_before_it_trains(tmp_path):
    key = keypair(tmp_path / "keys")
    key.chmod(0o640)
    r = make("all", f"BUILD={tmp_path}/build", f"DIST={tmp_path}/dist", f"SIGNING_KEY={key}")
    assert r.returncode == 2
    errors = [s for s in r.stderr.decode().splitlines() if s.startswith("error:")]
    assert errors == [f"error: SIGNING_KEY {key}: permissions 0640 are too open for a private key (ssh-keygen "
                      f"refuses one that others can read): chmod 600 {key}"]
    assert not (tmp_path / "build").exists() and not (tmp_path / "dist").exists()
    assert_no_secret(key, r.stdout, r.stderr)


@pytest.mark.slow  # runs make four times: make test, not test-fast
def test_make_rebundles_when_the_signing_key_changes_and_only_then(built, tmp_path):
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("run through `make test` (needs the Makefile's .venv)")
    build, dist = copied_build((built.build, built.dist), tmp_path)
    k1, k2 = keypair(tmp_path / "keys", "one"), keypair(tmp_path / "keys", "two")

    def bundle_with(*args: str, env: dict | None = None) -> tuple[bool, str | None]:
        """make bundle: (whether the bundle stage ran, the fingerprint the bundle is signed by)."""
        r = make(f"VENV={venv}", f"BUILD={build}", f"DIST={dist}", "bundle", *args, env=env)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        sig = dist / "bundle" / trust.SIGNATURE
        return f" --dist {dist} bundle".encode() in r.stdout, trust.signer(sig.read_bytes()).fingerprint if sig.exists() else None

    fp = {k: fingerprint(Path(f"{k}.pub"))[0] for k in (k1, k2)}
    by_hand = Built(tmp_path, built.config)  # the same build and dist
    assert bundle(by_hand).returncode == 0  # records "unsigned" in BUILD/signing.txt, as make would
    assert bundle_with() == (False, None)
    assert bundle_with("SIGNING_KEY=") == (False, None)
    assert bundle(by_hand, "--signing-key", str(k2)).returncode == 0
    assert bundle_with(f"SIGNING_KEY={k2}") == (False, fp[k2])  # the stage's record is make's
    assert bundle_with() == (True, None)
    assert bundle_with(f"SIGNING_KEY={k1}") == (True, fp[k1])
    assert bundle_with(f"SIGNING_KEY={k1}") == (False, fp[k1])
    assert bundle_with(env={"SIGNING_KEY": str(k1)}) == (False, fp[k1])  # the environment's is the same key
    # The same key again starts no Python (ssh-keygen alone tells it is the recorded key).
    assert bundle_with(f"SIGNING_KEY={k1}", "PY=/nonexistent/python") == (False, fp[k1])
    assert bundle_with() == (True, None)
    assert bundle_with(env={"SIGNING_KEY": str(k1)}) == (True, fp[k1])
    assert (build / "signing.txt").read_text() == fp[k1] + "\n"
    for f in (k1, Path(f"{k1}.pub")):  # a new key at the same path
        f.unlink()
    keypair(tmp_path / "keys", "one")
    new = fingerprint(Path(f"{k1}.pub"))[0]
    assert new != fp[k1]
    assert bundle_with(f"SIGNING_KEY={k1}") == (True, new)
    assert bundle_with(f"SIGNING_KEY={k2}") == (True, fp[k2])
    # A key that cannot sign never passes as up to date: each run says why, and dist stays.
    k2.chmod(0o644)
    before = files_of(dist)
    for _ in range(2):
        r = make(f"VENV={venv}", f"BUILD={build}", f"DIST={dist}", "bundle", f"SIGNING_KEY={k2}")
        assert r.returncode == 2
        errors = [s for s in r.stderr.decode().splitlines() if s.startswith("error:")]
        assert errors == [f"error: SIGNING_KEY {k2}: permissions 0644 are too open for a private key (ssh-keygen "
                          f"refuses one that others can read): chmod 600 {k2}"]
        assert files_of(dist) == before
