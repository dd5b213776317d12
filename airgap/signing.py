"""Ed25519 keys and detached signatures (pynacl). The library never prints; key files are written safely.

Key id
    ``"ed25519:" + sha256(<32 public key bytes>).hexdigest()[:16]``, e.g. ``ed25519:3f2a9c0d1e7b6a54``.
    It only names a key; verification never trusts it alone.

Files are UTF-8 JSON, one object (written with a 2-space indent, keys in the order shown), ending in a newline.
``<b64>`` is standard base64 with padding (RFC 4648 section 4). Readers refuse unknown ``type`` or ``version`` values.

Public key file (``KEY.pub``, mode 0644)::

    {"type": "airgap-ed25519-public-key", "version": 1, "key_id": "ed25519:...",
     "public_key": "<b64 of the 32-byte Ed25519 public key>"}

Private key file, unencrypted (``KEY``, mode 0600)::

    {"type": "airgap-ed25519-private-key", "version": 1, "key_id": "ed25519:...",
     "encrypted": false, "seed": "<b64 of the 32-byte Ed25519 seed>"}

Private key file, encrypted with a passphrase (``KEY``, mode 0600)::

    {"type": "airgap-ed25519-private-key", "version": 1, "key_id": "ed25519:...",
     "encrypted": true, "kdf": "argon2id", "opslimit": 3, "memlimit": 268435456,
     "salt": "<b64, 16 bytes>", "nonce": "<b64, 24 bytes>", "ciphertext": "<b64, 48 bytes>"}

    key = argon2id(passphrase, salt, opslimit, memlimit) -> 32 bytes (libsodium crypto_pwhash, ALG_ARGON2ID13);
    ciphertext = XSalsa20-Poly1305 SecretBox(key).encrypt(seed, nonce) without the nonce (16-byte MAC + 32 bytes).
    Defaults are libsodium's MODERATE limits (opslimit 3, memlimit 256 MiB); readers accept limits between
    libsodium's MIN and SENSITIVE values (opslimit 1..4, memlimit 8 KiB..1 GiB). The key_id is checked
    against the decrypted key, so a wrong passphrase or an edited file is always detected.

Signature file (detached; the signature is over the exact bytes of the signed file, e.g. manifest.json)::

    {"type": "airgap-signature", "version": 1, "algorithm": "ed25519", "key_id": "ed25519:...",
     "signature": "<b64 of the 64-byte Ed25519 signature>"}

    Readers refuse signature files over 4 KiB before parsing them, and any signature file that is not byte for
    byte this canonical form (so an edit anywhere in the file, even to whitespace, is refused). A signature is
    accepted only when its key_id names one of the trusted public keys AND the signature verifies with that key.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import secrets
import stat
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.signing
import nacl.utils

from airgap.atomic import fsync_dir
from airgap.errors import AirgapError, InvalidInput

__all__ = [
    "BadSignature",
    "KeyFileError",
    "KeyPermissionWarning",
    "MalformedSignature",
    "PassphraseError",
    "PrivateKey",
    "PublicKey",
    "SignatureError",
    "UnknownSigner",
    "decode_public_key",
    "encode_public_key",
    "generate_keypair",
    "key_id_of",
    "load_private_key",
    "load_public_key",
    "read_passphrase",
    "sign",
    "verify",
]

PUBLIC_KEY_TYPE = "airgap-ed25519-public-key"
PRIVATE_KEY_TYPE = "airgap-ed25519-private-key"
SIGNATURE_TYPE = "airgap-signature"
FORMAT_VERSION = 1
ALGORITHM = "ed25519"
PASSPHRASE_ENV = "AIRGAP_KEY_PASSPHRASE"

MAX_SIGNATURE_FILE = 4 * 1024
MAX_KEY_FILE = 64 * 1024
MAX_PASSPHRASE_FILE = 64 * 1024

OPSLIMIT_MODERATE: int = argon2id.OPSLIMIT_MODERATE
MEMLIMIT_MODERATE: int = argon2id.MEMLIMIT_MODERATE
OPSLIMIT_INTERACTIVE: int = argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT_INTERACTIVE: int = argon2id.MEMLIMIT_INTERACTIVE
_OPS_RANGE = (argon2id.OPSLIMIT_MIN, argon2id.OPSLIMIT_SENSITIVE)
_MEM_RANGE = (argon2id.MEMLIMIT_MIN, argon2id.MEMLIMIT_SENSITIVE)

_PASSPHRASE_HINT = f"give its passphrase with --passphrase-file FILE or {PASSPHRASE_ENV}"
_DAMAGED_HINT = "restore the key file from your backup"
_TAMPERED_HINT = "the bundle was altered or damaged; do not use it"


# --- errors -------------------------------------------------------------------------------------------------------


class SignatureError(AirgapError):
    """Signing or verification failed, or a key could not be used.

    SignatureError
    ├── KeyFileError          a key file is missing, unreadable, of the wrong kind or damaged
    │   └── PassphraseError   an encrypted key without its passphrase, or with a wrong one
    ├── MalformedSignature    a signature file that is too large or not in the airgap format
    ├── UnknownSigner         signed by a key that is not among the trusted keys
    └── BadSignature          the data does not match its signature
    """

    exit_code = 6


class KeyFileError(SignatureError):
    pass


class PassphraseError(KeyFileError):
    default_hint = _PASSPHRASE_HINT


class MalformedSignature(SignatureError):
    default_hint = _TAMPERED_HINT


class UnknownSigner(SignatureError):
    default_hint = ("if you expect this signer, get its public key by a channel you trust (not from the media) and "
                    "pass it with --pubkey; if not, the bundle may be forged: do not use it")


class BadSignature(SignatureError):
    default_hint = _TAMPERED_HINT


class KeyPermissionWarning(UserWarning):
    """An unencrypted private key file that others can read, or that a passphrase was given for."""


# --- keys ---------------------------------------------------------------------------------------------------------


def key_id_of(public_key: bytes) -> str:
    """The key id of a 32-byte Ed25519 public key."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key. ``key_id`` must be the key id of ``key`` (checked)."""

    key: bytes
    key_id: str

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(self.key)}")
        if self.key_id != key_id_of(self.key):
            raise ValueError(f"key id {self.key_id!r} does not belong to this key ({key_id_of(self.key)})")

    @classmethod
    def from_bytes(cls, key: bytes) -> PublicKey:
        return cls(key=key, key_id=key_id_of(key))


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 private key (its 32-byte seed, never shown by ``repr``) and its public half."""

    seed: bytes = field(repr=False)
    public: PublicKey = field(init=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError(f"an Ed25519 seed has 32 bytes, not {len(self.seed)}")
        verify_key = nacl.signing.SigningKey(self.seed).verify_key
        object.__setattr__(self, "public", PublicKey.from_bytes(bytes(verify_key)))

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(seed=bytes(nacl.signing.SigningKey.generate()))

    @property
    def key_id(self) -> str:
        return self.public.key_id


def encode_public_key(key: PublicKey) -> bytes:
    """The content of a public key file for ``key``."""
    return _dump(
        {"type": PUBLIC_KEY_TYPE, "version": FORMAT_VERSION, "key_id": key.key_id, "public_key": _b64(key.key)}
    )


def decode_public_key(data: bytes, *, source: str = "public key") -> PublicKey:
    """Parse the content of a public key file; ``source`` names it in errors."""
    obj = _parse_json(data)
    kind = obj.get("type") if obj is not None else None
    if kind == PRIVATE_KEY_TYPE:
        raise KeyFileError(
            f"{source} is a private key, not a public key",
            hint=f"pass the public key file ({source}.pub); never hand out the private key",
        )
    if obj is None or kind != PUBLIC_KEY_TYPE:
        raise KeyFileError(f"{source} is not an airgap public key file", hint="pass the .pub file of an airgap key")
    _check_version(obj, source)
    key = _field_b64(obj, "public_key", 32, source)
    return PublicKey(key=key, key_id=_check_key_id(obj, key, source))


def generate_keypair(
    path: Path,
    *,
    passphrase: bytes | None = None,
    overwrite: bool = False,
    opslimit: int = OPSLIMIT_MODERATE,
    memlimit: int = MEMLIMIT_MODERATE,
) -> PublicKey:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub`` (mode 0644).

    With ``passphrase`` the seed is encrypted (argon2id with ``opslimit``/``memlimit``, then SecretBox).
    Existing files are refused unless ``overwrite``; each file is written to a temporary name, fsynced
    and renamed, so a crash never leaves a half-written key.
    """
    path = Path(path)
    pub_path = _pub_path(path)
    if passphrase is not None and not passphrase:
        raise InvalidInput(
            "the passphrase is empty", hint="give a non-empty passphrase, or none for an unencrypted key"
        )
    if passphrase is not None:
        _check_limits(opslimit, memlimit, str(path), caller=True)
    if not overwrite:
        for p in (path, pub_path):
            if os.path.lexists(p):
                raise KeyFileError(f"{p} already exists", hint="choose another path, or replace it with "
                                                               "`airgap keygen --force` (the old key is lost)")
    if path.name.endswith(".pub"):
        raise InvalidInput(f"{path} is named as a public key, but it would hold the private key",
                           hint=f"give the private key's path, e.g. {path.with_name(path.name[:-4])}: its public "
                                "key goes beside it as PATH.pub")
    key = PrivateKey.generate()
    # both staged before either is renamed into place, the public key first: a full disk or a path in the way
    # leaves no private key without its public key, and --force replaces no old key that way
    staged = [(_stage(path, _encode_private_key(key, passphrase, opslimit, memlimit), 0o600), path)]
    try:
        staged.insert(0, (_stage(pub_path, encode_public_key(key.public), 0o644), pub_path))
        _commit(*staged[0], overwrite)
        try:
            _commit(*staged[1], overwrite)
        except KeyFileError:
            if not overwrite:  # a private key made meanwhile by another run: take back the public key of ours
                pub_path.unlink(missing_ok=True)
            raise
    finally:
        for tmp, _ in staged:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return key.public


def load_private_key(path: Path, *, passphrase: bytes | None) -> PrivateKey:
    """Read a private key file, decrypting it with ``passphrase`` when it is encrypted.

    Warns with :class:`KeyPermissionWarning` when an unencrypted key file is readable by group or others.
    """
    path = Path(path)
    source = str(path)
    data, mode = _read_key_file(path, "private key file")
    obj = _parse_json(data)
    kind = obj.get("type") if obj is not None else None
    if kind == PUBLIC_KEY_TYPE:
        raise KeyFileError(
            f"{source} is a public key file, but the private key is needed to sign",
            hint="give the private key file (the one without .pub)",
        )
    if obj is None or kind != PRIVATE_KEY_TYPE:
        raise KeyFileError(
            f"{source} is not an airgap private key file", hint="give the private key file of an airgap key"
        )
    _check_version(obj, source)
    encrypted = obj.get("encrypted")
    if encrypted is False:
        seed = _field_b64(obj, "seed", 32, source)
        if passphrase:  # the operator may believe the key is protected
            warnings.warn(KeyPermissionWarning(f"the private key {source} is not encrypted: the passphrase given was "
                                               "not needed, and does not protect it"), stacklevel=2)
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.warn(
                KeyPermissionWarning(
                    f"the unencrypted private key {source} can be read by other users (mode {stat.S_IMODE(mode):04o}):"
                    f" run `chmod 600 {source}`, or encrypt it with a passphrase"
                ),
                stacklevel=2,
            )
    elif encrypted is True:
        seed = _decrypt_seed(obj, passphrase, source)
    else:
        raise KeyFileError(
            f"private key file {source} is damaged: 'encrypted' must be true or false", hint=_DAMAGED_HINT
        )
    key = PrivateKey(seed=seed)
    _check_key_id(obj, key.public.key, source)
    return key


def load_public_key(path: Path) -> PublicKey:
    """Read a public key file (``KEY.pub``). A private key file is refused."""
    path = Path(path)
    data, _ = _read_key_file(path, "public key file")
    return decode_public_key(data, source=str(path))


def read_passphrase(passphrase_file: Path | None, env: Mapping[str, str]) -> bytes | None:
    """The passphrase from ``passphrase_file`` (its first line, without the line ending) or ``$AIRGAP_KEY_PASSPHRASE``.

    The file wins over the environment. An empty or unset variable means no passphrase; an empty file is an error.
    """
    if passphrase_file is not None:
        try:
            with open(passphrase_file, "rb") as f:
                data = f.read(MAX_PASSPHRASE_FILE)
        except OSError as exc:
            raise InvalidInput(
                f"cannot read passphrase file {passphrase_file}: {exc.strerror or exc}",
                hint="check the path given with --passphrase-file",
            ) from None
        line = data.split(b"\n", 1)[0].removesuffix(b"\r")
        if not line:
            raise InvalidInput(
                f"passphrase file {passphrase_file} is empty", hint="write the passphrase on its first line"
            )
        return line
    value = env.get(PASSPHRASE_ENV)
    if value:  # as from the file: a line ending is not part of it (`export VAR="$(cat f)"` keeps none, `<<<` does)
        return value.removesuffix("\n").removesuffix("\r").encode("utf-8", "surrogateescape") or None
    return None


# --- signatures ---------------------------------------------------------------------------------------------------


def sign(key: PrivateKey, data: bytes) -> bytes:
    """The content of a detached signature file for ``data``."""
    signature = nacl.signing.SigningKey(key.seed).sign(data).signature
    return _signature_file(key.key_id, signature)


def _signature_file(key_id: str, signature: bytes) -> bytes:
    return _dump(
        {
            "type": SIGNATURE_TYPE,
            "version": FORMAT_VERSION,
            "algorithm": ALGORITHM,
            "key_id": key_id,
            "signature": _b64(signature),
        }
    )


def verify(
    data: bytes, signature_file: bytes, trusted: Sequence[PublicKey], *, subject: str = "manifest.json"
) -> PublicKey:
    """Check ``signature_file`` over ``data`` against the ``trusted`` keys; return the key that verified.

    ``subject`` names the signed file in error messages.
    """
    if len(signature_file) > MAX_SIGNATURE_FILE:
        raise MalformedSignature(
            f"the signature of {subject} is malformed: {len(signature_file)} bytes, more than {MAX_SIGNATURE_FILE}"
        )
    source = f"the signature of {subject}"
    obj = _parse_json(signature_file)
    if obj is None or obj.get("type") != SIGNATURE_TYPE:
        raise MalformedSignature(f"{source} is malformed: not an airgap signature file")
    if obj.get("version") != FORMAT_VERSION:
        raise MalformedSignature(
            f"{source} has unsupported version {obj.get('version')!r}",
            hint="verify it with the airgap version that made the bundle, or a newer one",
        )
    if obj.get("algorithm") != ALGORITHM:
        raise MalformedSignature(f"{source} uses unsupported algorithm {obj.get('algorithm')!r}, not {ALGORITHM}")
    key_id = obj.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise MalformedSignature(f"{source} is malformed: no key_id")
    try:
        signature = _decode_b64_field(obj, "signature", 64)
    except _BadField as exc:
        raise MalformedSignature(f"{source} is malformed: {exc}") from None
    if signature_file != _signature_file(key_id, signature):
        raise MalformedSignature(
            f"{source} has been edited: it is not byte for byte the form airgap writes",
            hint="copy manifest.json.sig again from the original media",
        )
    candidates = [k for k in trusted if k.key_id == key_id]
    if not candidates:
        known = ", ".join(sorted({k.key_id for k in trusted})) or "none"
        raise UnknownSigner(f"{subject} is signed by key {key_id!r}, which is not trusted (trusted keys: {known})")
    for candidate in candidates:
        try:
            nacl.signing.VerifyKey(candidate.key).verify(data, signature)
        except nacl.exceptions.BadSignatureError:
            continue
        return candidate
    raise BadSignature(f"{subject} does not match its signature")


# --- helpers ------------------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def _pub_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def _parse_json(data: bytes) -> dict[str, Any] | None:
    """The JSON object in ``data``, or None when it is not one."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _check_version(obj: dict[str, Any], source: str) -> None:
    if obj.get("version") != FORMAT_VERSION:
        raise KeyFileError(
            f"{source} has unsupported version {obj.get('version')!r}",
            hint="use the airgap version that made the key, or a newer one",
        )


class _BadField(Exception):
    pass


def _decode_b64_field(obj: dict[str, Any], name: str, size: int) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _BadField(f"no {name!r} field")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _BadField(f"{name!r} is not base64") from None
    if len(raw) != size:
        raise _BadField(f"{name!r} has {len(raw)} bytes, not {size}")
    return raw


def _field_b64(obj: dict[str, Any], name: str, size: int, source: str) -> bytes:
    try:
        return _decode_b64_field(obj, name, size)
    except _BadField as exc:
        raise KeyFileError(f"{source} is damaged: {exc}", hint=_DAMAGED_HINT) from None


def _field_int(obj: dict[str, Any], name: str, source: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise KeyFileError(f"{source} is damaged: {name!r} is not a whole number", hint=_DAMAGED_HINT)
    return value


def _check_key_id(obj: dict[str, Any], public_key: bytes, source: str) -> str:
    stated, actual = obj.get("key_id"), key_id_of(public_key)
    if stated != actual:
        raise KeyFileError(
            f"{source} is damaged: its key_id {stated!r} does not match its key ({actual})", hint=_DAMAGED_HINT
        )
    return actual


def _check_limits(opslimit: int, memlimit: int, source: str, *, caller: bool = False) -> None:
    if _OPS_RANGE[0] <= opslimit <= _OPS_RANGE[1] and _MEM_RANGE[0] <= memlimit <= _MEM_RANGE[1]:
        return
    detail = (
        f"argon2id opslimit {opslimit} / memlimit {memlimit} outside {_OPS_RANGE[0]}..{_OPS_RANGE[1]} / "
        f"{_MEM_RANGE[0]}..{_MEM_RANGE[1]}"
    )
    if caller:
        raise InvalidInput(detail, hint="use the INTERACTIVE or MODERATE limits")
    raise KeyFileError(f"{source} is damaged: {detail}", hint=_DAMAGED_HINT)


def _kdf(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    key: bytes = argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    return key


def _encode_private_key(key: PrivateKey, passphrase: bytes | None, opslimit: int, memlimit: int) -> bytes:
    obj: dict[str, Any] = {"type": PRIVATE_KEY_TYPE, "version": FORMAT_VERSION, "key_id": key.key_id}
    if passphrase is None:
        obj.update(encrypted=False, seed=_b64(key.seed))
        return _dump(obj)
    salt = nacl.utils.random(argon2id.SALTBYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_kdf(passphrase, salt, opslimit, memlimit))
    ciphertext = box.encrypt(key.seed, nonce).ciphertext
    obj.update(
        encrypted=True,
        kdf="argon2id",
        opslimit=opslimit,
        memlimit=memlimit,
        salt=_b64(salt),
        nonce=_b64(nonce),
        ciphertext=_b64(ciphertext),
    )
    return _dump(obj)


def _decrypt_seed(obj: dict[str, Any], passphrase: bytes | None, source: str) -> bytes:
    if obj.get("kdf") != "argon2id":
        raise KeyFileError(f"{source} uses unsupported kdf {obj.get('kdf')!r}, not argon2id", hint=_DAMAGED_HINT)
    opslimit, memlimit = _field_int(obj, "opslimit", source), _field_int(obj, "memlimit", source)
    _check_limits(opslimit, memlimit, source)
    salt = _field_b64(obj, "salt", argon2id.SALTBYTES, source)
    nonce = _field_b64(obj, "nonce", nacl.secret.SecretBox.NONCE_SIZE, source)
    ciphertext = _field_b64(obj, "ciphertext", 32 + nacl.secret.SecretBox.MACBYTES, source)
    if passphrase is None:
        raise PassphraseError(f"the key {source} is encrypted")
    box = nacl.secret.SecretBox(_kdf(passphrase, salt, opslimit, memlimit))
    try:
        return box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise PassphraseError(  # the box cannot tell a wrong passphrase from an edited salt, limits or ciphertext
            f"wrong passphrase for the key {source}, or the key file is damaged",
            hint="check the passphrase (the first line of --passphrase-file, or AIRGAP_KEY_PASSPHRASE); if it is "
                 "right, restore the key file from its backup",
        ) from None


def _read_key_file(path: Path, what: str) -> tuple[bytes, int]:
    """The content of a key file (bounded) and its mode."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(21, "Is a directory")
            data = f.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist", hint="check the path") from None
    except OSError as exc:
        raise KeyFileError(
            f"cannot read {what} {path}: {exc.strerror or exc}", hint="check the path and its permissions"
        ) from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(
            f"{path} is not an airgap key file (larger than {MAX_KEY_FILE // 1024} KiB)", hint="check the path"
        )
    return data, mode


def _stage(path: Path, content: bytes, mode: int) -> Path:
    """``content`` in a temporary file beside ``path``, created with ``mode`` and fsynced (missing directories
    are made 0700, whatever the umask); its path. Any failure is a :class:`KeyFileError` naming ``path``."""
    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{secrets.token_hex(6)}"
    try:
        for parent in reversed([d for d in (directory, *directory.absolute().parents) if not d.exists()]):
            parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror or exc}",
                           hint="choose a directory you can write to") from None
    try:
        try:
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "free some space there, or choose another directory"
        elif exc.errno in (errno.ENOSYS, errno.EPERM, errno.ENOTSUP):  # a chmod the file system cannot do
            hint = "choose another directory, on a file system that keeps file modes (not FAT, exFAT or NTFS)"
        else:
            hint = "choose another directory"
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}", hint=hint) from None
    return tmp


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename the staged ``tmp`` to ``path`` (refusing an existing ``path`` unless ``overwrite``)."""
    exists = KeyFileError(f"{path} already exists", hint="choose another path, or replace it with `airgap keygen "
                                                          "--force` (the old key is lost)")
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists, with no window for a race
            except FileExistsError:
                raise exists from None
            except OSError:  # a file system without hard links (FAT)
                if os.path.lexists(path):
                    raise exists from None
                os.replace(tmp, path)
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}",
                           hint="remove what is in the way, or choose another path") from None
    fsync_dir(path.parent)
