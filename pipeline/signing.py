"""Signing the bundle: ``manifest.json`` signed with an OpenSSH key, checked by the runtime's own code.

The bundle stage signs the manifest (which pins every other file by sha256) with
``ssh-keygen -Y sign -n edge-bundle`` and ships the armored signature beside it as
``manifest.json.sig``; the manifest itself is the same bytes signed or not. Ed25519
signatures are deterministic, so the same content and key give the same tarball.

A key is checked before the pipeline writes anything (``load``): it must be an OpenSSH
private key, not its ``.pub``, readable by this user alone, without a passphrase (a build
cannot type one), and ssh-keygen must be 8.1 or newer (``-Y``). Each refusal is one
``SigningKeyError`` line, exit 2. Every signature is verified at once with
``runtime.trust`` (what a device runs) against the public key ssh-keygen derives from the
private one, so a key that signs oddly fails here, not on a device. No cryptography here,
and the private key's content is never printed, copied or written (its first bytes are
read, to tell what the file is): only its public half and fingerprint are.

``BUILD/signing.txt`` (the key's fingerprint, or ``unsigned``) is make's record of how the
bundle was signed: the Makefile rewrites it when that changes, so a new key re-bundles;
a key it has not recorded yet it checks first with ``python -m pipeline.signing BUILD KEY``
(``main``), before anything trains. A bundle stage run by hand records it too, as stages
record the config in force.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runtime import trust

from . import fsutil
from .errors import EXIT_USAGE, PipelineError

ENV = "SIGNING_KEY"  # the variable make and the CLI read (--signing-key's default)
STAMP = "signing.txt"  # in BUILD: the fingerprint of the key in force, or "unsigned"
UNSIGNED = "unsigned"
PROBE = b"edge-bundle signing probe\n"  # what load() signs to prove the key and ssh-keygen work
NEEDS = "OpenSSH's ssh-keygen 8.1 or newer (Debian/Raspberry Pi OS package openssh-client)"


class SigningKeyError(PipelineError):
    """SIGNING_KEY cannot sign: one line naming the file, the problem and the fix."""

    exit_code = EXIT_USAGE

    def __init__(self, path, problem: str):
        super().__init__(f"{ENV} {path}: {problem}" if path is not None else f"{ENV}: {problem}")


@dataclass(frozen=True)
class SigningKey:
    """A private key proven able to sign, by its path, and its public half (``public.name``:
    fingerprint and comment)."""

    path: str
    public: trust.Key




def _ssh_keygen(args: list[str], path: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """ssh-keygen without an agent and without a terminal, so it signs with the file or fails,
    and never prompts. Its stdout is returned to the caller, never printed."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    try:
        return subprocess.run([trust.ssh_keygen(), *args], input=stdin, capture_output=True, env=env, timeout=60,
                              start_new_session=True)
    except FileNotFoundError:
        raise SigningKeyError(path, f"{trust.ssh_keygen()} not found: signing needs {NEEDS}, or {trust.SSH_KEYGEN_ENV} "
                                    "set to its path") from None
    except (OSError, subprocess.SubprocessError) as e:
        raise SigningKeyError(path, f"{trust.ssh_keygen()} did not run: {e}") from None


def _said(r: subprocess.CompletedProcess) -> str:
    """ssh-keygen's complaint on one line, without its banner of @ signs."""
    lines = [s.strip() for s in r.stderr.decode("utf-8", "replace").splitlines()]
    return " ".join(s for s in lines if s and not s.startswith("@")) or f"exit {r.returncode}"


def _too_old(why: str) -> bool:
    return any(s in why for s in ("illegal option", "unknown option", "invalid option", "usage:"))


def _looks_public(head: bytes) -> bool:
    text = head.decode("utf-8", "replace").strip()
    if text.startswith("---- BEGIN SSH2 PUBLIC KEY ----"):
        return True
    try:
        trust.parse_public_key(text.splitlines()[0] if text else "")
    except ValueError:
        return False
    return True


def load(path: str | os.PathLike) -> SigningKey:
    """The private key at ``path``, checked: SigningKeyError (exit 2) unless it can sign.

    Reads only the file's first bytes (to tell a private key from a public one or from
    something else), then lets ssh-keygen derive the public key (``-y -P ""``: fails rather
    than asks for a passphrase) and sign a probe, which runtime.trust verifies.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise SigningKeyError(path, f"no such file; make a key with `make keys KEY={path}`, or point "
                                    f"{ENV} at an existing private key") from None
    except IsADirectoryError:
        raise SigningKeyError(path, "is a folder, expected a private key file (as `make keys KEY=path` "
                                    "writes)") from None
    except OSError as e:
        raise SigningKeyError(path, f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SigningKeyError(path, "is not a regular file, expected a private key file")
    if _looks_public(head):
        private = path[:-4] if path.endswith(".pub") else None
        hint = (f"give the private key it belongs to, {private}" if private and os.path.exists(private)
                else "give the private key it belongs to (the file without .pub)")
        raise SigningKeyError(path, f"is a public key; {hint}")
    if b"PRIVATE KEY-----" not in head.split(b"\n", 1)[0]:
        raise SigningKeyError(path, "not an OpenSSH private key (expected a file as `make keys KEY=path` "
                                    "writes, starting -----BEGIN OPENSSH PRIVATE KEY-----)")
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        raise SigningKeyError(path, f"permissions {stat.S_IMODE(st.st_mode):04o} are too open for a private "
                                    f"key (ssh-keygen refuses one that others can read): chmod 600 {path}")
    r = _ssh_keygen(["-y", "-P", "", "-f", path], path)
    if r.returncode != 0:
        why = _said(r)
        if "passphrase" in why:
            raise SigningKeyError(path, "is protected by a passphrase, which a build cannot type; it needs a key "
                                        "without a passphrase, as `make keys KEY=path` writes")
        if "bad permissions" in why:
            raise SigningKeyError(path, f"ssh-keygen refuses its permissions: chmod 600 {path}")
        raise SigningKeyError(path, f"ssh-keygen cannot read it as a private key ({why[:160]})")
    try:
        public = trust.parse_public_key(r.stdout.decode("utf-8", "replace"))
    except ValueError as e:
        raise SigningKeyError(path, f"ssh-keygen -y gave no usable public key: {e}") from None
    key = SigningKey(path, public)
    sign(key, PROBE)
    return key


def configured(given: str | None) -> SigningKey | None:
    """The key ``--signing-key`` names (its default: $SIGNING_KEY), checked; None when it is
    unset or empty (an unsigned bundle)."""
    return load(given) if given else None


def sign(key: SigningKey, data: bytes) -> bytes:
    """The armored ``ssh-keygen -Y sign -n edge-bundle`` signature of ``data`` (on stdin; the
    signature on stdout), verified before it is returned as a device would verify it: the
    signature must name ``key.public`` and ``ssh-keygen -Y verify`` must accept it.
    SigningKeyError otherwise."""
    r = _ssh_keygen(["-Y", "sign", "-f", key.path, "-n", trust.NAMESPACE], key.path, stdin=data)
    if r.returncode != 0:
        why = _said(r)
        if _too_old(why):
            raise SigningKeyError(key.path, f"{trust.ssh_keygen()} has no -Y sign (OpenSSH older than 8.1? it says: "
                                            f"{why.split(' usage:')[0][:80]}); signing needs {NEEDS}")
        raise SigningKeyError(key.path, f"ssh-keygen -Y sign failed: {why[:160]}")
    sig = r.stdout
    try:
        by = trust.signer(sig)
    except trust.TrustError as e:
        raise SigningKeyError(key.path, f"ssh-keygen -Y sign wrote no usable signature: {e.message}") from None
    if by.blob != key.public.blob:
        raise SigningKeyError(key.path, f"ssh-keygen -Y sign signed with {by.fingerprint}, not with this key "
                                        f"({key.public.fingerprint}): check {key.path} and {trust.ssh_keygen()}")
    try:
        v = trust._ssh_keygen_verify(data, sig, key.public)  # the device's own check, through pipes
    except trust.TrustError as e:
        raise SigningKeyError(key.path, f"cannot verify its signature: {e.message}") from None
    if v.returncode != 0:
        why = " ".join((v.stderr or v.stdout).decode("utf-8", "replace").split()) or f"exit {v.returncode}"
        if _too_old(why):
            raise SigningKeyError(key.path, f"{trust.ssh_keygen()} cannot verify signatures ({why[:120]}): it needs {NEEDS}")
        raise SigningKeyError(key.path, f"its signature does not verify with its own public key "
                                        f"{key.public.fingerprint} (ssh-keygen: {why[:160]})")
    return sig


def stamp_text(key: SigningKey | None) -> bytes:
    """BUILD/signing.txt's content, the same the Makefile writes: the fingerprint, or ``unsigned``."""
    return f"{key.public.fingerprint if key else UNSIGNED}\n".encode()


def record(build: Path, key: SigningKey | None) -> None:
    """Write BUILD/signing.txt when its content changes (so make sees no change otherwise)."""
    path = Path(build) / STAMP
    data = stamp_text(key)
    if not (path.is_file() and path.read_bytes() == data):
        fsutil.write_bytes(path, data)


def main(argv: list[str] | None = None) -> int:
    """make's check of a SIGNING_KEY it has not recorded yet: `python -m pipeline.signing BUILD KEY`
    checks KEY as the bundle stage will, then records it in BUILD/signing.txt, so that a key that
    cannot sign stops `make all` before it trains. One ``error:`` line and exit 2 otherwise."""
    import sys

    build, path = argv if argv is not None else sys.argv[1:]
    try:
        record(Path(build), load(path))
    except PipelineError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"error: cannot write {e.filename or build}: {e.strerror or e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
