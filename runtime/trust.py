"""Who made a bundle: its signature, checked against the keys this device trusts. Stdlib only.

The build signs ``manifest.json`` (which pins every other file by sha256) with an OpenSSH
key, ``ssh-keygen -Y sign -n edge-bundle``, and ships the signature beside it as
``manifest.json.sig``. The device trusts the public keys listed in a trusted-keys file,
one per line exactly as ``ssh-keygen`` writes ``KEY.pub`` (``#`` starts a comment): the
file ``--trusted-keys PATH`` names, else ``$EDGE_TRUSTED_KEYS``, else
/etc/edge-model/trusted_keys when it exists (where the deploy installs them).

The signature is checked by OpenSSH's ``ssh-keygen -Y verify`` (OpenSSH 8.1 or newer:
present wherever the deploy reaches a device over SSH, since openssh-server depends on
openssh-client), fed through pipes: the manifest bytes that were checked are the bytes
that are then parsed, and nothing is written to disk. No cryptography here: this module
only reads the signature's envelope (PROTOCOL.sshsig) to name the key that signed, which
decides nothing by itself; a key this device does not trust is refused without running
ssh-keygen, and any other verdict is ssh-keygen's.

A device that trusts no key accepts any bundle, unverified in origin (``Origin.verified``
false); one that trusts at least one refuses an unsigned bundle (exit 6), one signed by a
key it does not trust (exit 7), and one whose manifest changed after signing (exit 8).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .manifest import _sha256
from .errors import (EXIT_BAD_INPUT, EXIT_BAD_SIGNATURE, EXIT_ENVIRONMENT, EXIT_UNSIGNED, EXIT_UNTRUSTED_KEY,
                     BundleError)

if TYPE_CHECKING:
    import subprocess

SIGNATURE = "manifest.json.sig"
NAMESPACE = "edge-bundle"  # ssh-keygen -Y -n: a signature made for another purpose does not verify here
ENV = "EDGE_TRUSTED_KEYS"
SYSTEM_FILE = "/etc/edge-model/trusted_keys"
SSH_KEYGEN_ENV = "EDGE_SSH_KEYGEN"  # the ssh-keygen to run (default: the one on PATH)
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
MAX_FILE = 1 << 20  # a trusted-keys file larger than this is not one
MAX_SIGNATURE = 64 << 10  # nor a signature (an Ed25519 one is 300 bytes, RSA-16384's about 3 KiB)


class TrustError(BundleError):
    """The bundle's origin is refused. ``exit_code`` says why (docs/exit-codes.md)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Key:
    """One OpenSSH public key: its type (``ssh-ed25519``), its wire blob and its comment."""

    type: str
    blob: bytes
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        """As ``ssh-keygen -l`` prints it: SHA256: and the unpadded base64 of the blob's sha256."""
        return "SHA256:" + base64.b64encode(_sha256(self.blob).digest()).decode().rstrip("=")

    @property
    def name(self) -> str:
        """The fingerprint, and the comment when there is one: how messages name the key."""
        return f"{self.fingerprint} ({self.comment})" if self.comment else self.fingerprint

    @property
    def line(self) -> str:
        return f"{self.type} {base64.b64encode(self.blob).decode()}"


@dataclass(frozen=True)
class TrustedKeys:
    """The keys a device trusts and the file they came from (``source`` says how it was named)."""

    path: str
    source: str
    keys: tuple[Key, ...]

    def find(self, key: Key) -> Key | None:
        return next((k for k in self.keys if k.blob == key.blob), None)


@dataclass(frozen=True)
class Origin:
    """What the signature check found: ``key`` signed it and is trusted (``verified``), or
    nothing was checked (``verified`` false: no trusted keys; ``key`` the signer if signed).
    ``trusted_keys`` is the trusted-keys file checked against (None: none in force)."""

    verified: bool
    key: Key | None
    detail: str
    trusted_keys: str | None = None

    def summary(self) -> dict:
        """As `info` and GET /info show it: verified or not, the key that signed (if signed), why."""
        return {"verified": self.verified, "signed_by": self.key.name if self.key else None, "detail": self.detail}


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    """One SSH wire-format string (uint32 length, bytes) at ``at``; the next offset."""
    if at + 4 > len(data):
        raise ValueError("truncated")
    n = int.from_bytes(data[at:at + 4], "big")
    if at + 4 + n > len(data):
        raise ValueError("truncated")
    return data[at + 4:at + 4 + n], at + 4 + n


def parse_public_key(text: str) -> Key:
    """A public key line as ``KEY.pub`` holds it: ``TYPE BASE64 [COMMENT]``. Raises ValueError
    (saying what was expected) when it is not one; the blob must name the same type."""
    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("expected a public key as ssh-keygen writes it (ssh-ed25519 AAAA... comment)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        inner, _ = _string(blob, 0)
    except (binascii.Error, ValueError):
        raise ValueError(f"the key after {parts[0]!r} is not base64 of an OpenSSH public key") from None
    if inner.decode("ascii", "replace") != parts[0]:
        raise ValueError(f"the key says it is {inner.decode('ascii', 'replace')!r}, the line says {parts[0]!r}")
    return Key(parts[0], blob, parts[2].strip() if len(parts) > 2 else "")


def parse_keys(text: str, path: str) -> tuple[Key, ...]:
    """Every key of a trusted-keys file's ``text``; TrustError (exit 2) naming the first bad line."""
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(parse_public_key(line))
        except ValueError as e:
            raise TrustError(f"trusted keys {path} line {n}: {e}", EXIT_BAD_INPUT) from None
    return tuple(keys)


def read_keys(path: str | Path, source: str = "--trusted-keys") -> TrustedKeys:
    """The trusted-keys file at ``path``. A file that is named must exist and list at least one
    key: a typo or an emptied file fails closed, as one line and exit 2, rather than trusting
    everything."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise TrustError(f"trusted keys {path} ({source}): cannot read: {e.strerror or e}", EXIT_BAD_INPUT) from None
    if len(data) > MAX_FILE:
        raise TrustError(f"trusted keys {path} ({source}): larger than {MAX_FILE} bytes, expected a list of "
                         "public keys", EXIT_BAD_INPUT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrustError(f"trusted keys {path} ({source}): not UTF-8 text, expected public keys one per line",
                         EXIT_BAD_INPUT) from None
    keys = parse_keys(text, path)
    if not keys:
        raise TrustError(f"trusted keys {path} ({source}): lists no key, expected public keys one per line "
                         f"as KEY.pub holds them (to trust none, name no file)", EXIT_BAD_INPUT)
    return TrustedKeys(path, source, keys)


def configured(path: str | Path | None = None) -> TrustedKeys | None:
    """The keys this process trusts: ``path`` (``--trusted-keys``), else ``$EDGE_TRUSTED_KEYS``,
    else SYSTEM_FILE when it exists; None when none applies (an empty variable counts as unset)."""
    if path:
        return read_keys(path, "--trusted-keys")
    if os.environ.get(ENV):
        return read_keys(os.environ[ENV], ENV)
    if os.path.lexists(SYSTEM_FILE):
        return read_keys(SYSTEM_FILE, "the system's")
    return None


def signer(sig: bytes) -> Key:
    """The public key a signature file names (its SSHSIG envelope), without verifying anything.

    Raises TrustError (exit 8) when it is not an OpenSSH signature for this namespace.
    """
    def bad(why: str) -> TrustError:
        return TrustError(f"{SIGNATURE} | not a bundle signature: {why}", EXIT_BAD_SIGNATURE)

    text = sig.decode("ascii", "replace").strip().splitlines()
    if len(text) < 3 or text[0].strip() != _ARMOR[0] or text[-1].strip() != _ARMOR[1]:
        raise bad("expected the armored output of ssh-keygen -Y sign")
    try:
        blob = base64.b64decode("".join(line.strip() for line in text[1:-1]), validate=True)
        if blob[:6] != b"SSHSIG" or int.from_bytes(blob[6:10], "big") != 1:
            raise bad("expected an SSHSIG version 1 signature")
        pub, at = _string(blob, 10)
        namespace, _ = _string(blob, at)
        kind, _ = _string(pub, 0)
    except (binascii.Error, ValueError):
        raise bad("its base64 or its fields are damaged") from None
    if namespace != NAMESPACE.encode():
        raise bad(f"made for namespace {namespace.decode('ascii', 'replace')!r}, expected {NAMESPACE!r}")
    return Key(kind.decode("ascii", "replace"), pub)


def ssh_keygen() -> str:
    """The ssh-keygen to run: $EDGE_SSH_KEYGEN, else the one on PATH."""
    return os.environ.get(SSH_KEYGEN_ENV) or "ssh-keygen"


def _feed(fd: int, data: bytes) -> None:
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(data)
    except OSError:  # ssh-keygen left early: its exit status says why
        pass


def _ssh_keygen_verify(manifest: bytes, sig: bytes, key: Key) -> subprocess.CompletedProcess:
    """``ssh-keygen -Y verify`` of ``manifest`` against ``sig`` with ``key`` as the only allowed
    signer; the allowed-signers file and the signature go through pipes (/dev/fd/N)."""
    # Imported here, where a signature is verified: every command loads this module, and on a
    # device that trusts no key (or for an unsigned bundle) nothing runs ssh-keygen; the two
    # cost ~6 ms of each cold `predict`.
    import subprocess
    import threading

    allowed = f'{NAMESPACE} namespaces="{NAMESPACE}" {key.line}\n'.encode()
    exe = ssh_keygen()
    fds = [os.pipe(), os.pipe()]
    try:
        feeders = [threading.Thread(target=_feed, args=(w, data), daemon=True)
                   for (_, w), data in zip(fds, (allowed, sig))]
        for t in feeders:
            t.start()
        (ra, _), (rs, _) = fds
        try:
            return subprocess.run([exe, "-Y", "verify", "-f", f"/dev/fd/{ra}", "-I", NAMESPACE, "-n", NAMESPACE,
                                   "-s", f"/dev/fd/{rs}"], input=manifest, pass_fds=(ra, rs),
                                  capture_output=True, timeout=120)
        except FileNotFoundError:
            raise TrustError(f"{exe} not found: checking a bundle's signature needs OpenSSH's ssh-keygen "
                             f"(8.1 or newer; Debian/Raspberry Pi OS package openssh-client), or set "
                             f"{SSH_KEYGEN_ENV} to its path", EXIT_ENVIRONMENT) from None
        except (OSError, subprocess.SubprocessError) as e:
            raise TrustError(f"{exe} -Y verify did not run: {e}", EXIT_ENVIRONMENT) from None
        finally:
            for t in feeders:
                t.join(timeout=5)
    finally:
        for r, _ in fds:
            os.close(r)


def check(bundle: Path, manifest: bytes, trusted: TrustedKeys | None) -> Origin:
    """Whether ``manifest`` (the bytes of the bundle's manifest.json, as read once) was signed
    by a trusted key. Raises TrustError with the refusal's exit code; with ``trusted`` None
    nothing is refused and the Origin says whether the bundle was signed, and by whom."""
    path = Path(bundle) / SIGNATURE
    try:
        with open(path, "rb") as f:
            sig = f.read(MAX_SIGNATURE + 1)  # whoever wrote the bundle chose its size
    except FileNotFoundError:
        sig = None
    except OSError as e:
        raise TrustError(f"{SIGNATURE} | cannot read: {e.strerror or e}", EXIT_BAD_SIGNATURE) from None
    if sig is not None and len(sig) > MAX_SIGNATURE:
        raise TrustError(f"{SIGNATURE} | not a bundle signature: larger than {MAX_SIGNATURE} bytes",
                         EXIT_BAD_SIGNATURE)
    if trusted is None:
        if sig is None:
            return Origin(False, None, "unsigned, unverified in origin (this device trusts no key)")
        try:
            key = signer(sig)
        except TrustError as e:
            return Origin(False, None, f"unverified in origin (this device trusts no key); {e.message}")
        return Origin(False, key, f"signed by {key.fingerprint}, not verified: this device trusts no key")
    where = f"trusted keys {trusted.path}"
    if sig is None:
        raise TrustError(f"{SIGNATURE} | missing: the bundle is unsigned, and this device trusts only signed "
                         f"bundles ({where}: {len(trusted.keys)} key(s)); build it with SIGNING_KEY", EXIT_UNSIGNED)
    key = signer(sig)
    known = trusted.find(key)
    if known is None:
        raise TrustError(f"{SIGNATURE} | signed by {key.fingerprint}, a key this device does not trust "
                         f"({where}: {', '.join(k.name for k in trusted.keys)})", EXIT_UNTRUSTED_KEY)
    r = _ssh_keygen_verify(manifest, sig, known)
    if r.returncode != 0:
        why = " ".join((r.stderr or r.stdout).decode("utf-8", "replace").split()) or f"exit {r.returncode}"
        if "unknown option" in why or "illegal option" in why or "usage:" in why:
            raise TrustError(f"ssh-keygen cannot check signatures here ({why[:120]}): it needs OpenSSH 8.1 or "
                             "newer", EXIT_ENVIRONMENT)
        raise TrustError(f"manifest.json | does not match its signature by {known.name}: changed after it "
                         f"was signed, or the signature is damaged (ssh-keygen: {why[:160]})", EXIT_BAD_SIGNATURE)
    return Origin(True, known, f"signed by {known.name}, trusted ({where})", trusted.path)
