"""Ed25519 keys, key files and detached signatures: round trips, tampering and every error path."""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest

from airgap.errors import AirgapError, InvalidInput
from airgap.signing import (
    MEMLIMIT_INTERACTIVE,
    OPSLIMIT_INTERACTIVE,
    BadSignature,
    KeyFileError,
    KeyPermissionWarning,
    MalformedSignature,
    PassphraseError,
    PrivateKey,
    PublicKey,
    SignatureError,
    UnknownSigner,
    decode_public_key,
    encode_public_key,
    generate_keypair,
    key_id_of,
    load_private_key,
    load_public_key,
    read_passphrase,
    sign,
    verify,
)

DATA = b'{"schemaVersion": 1, "images": []}\n'


def gen(path: Path, *, passphrase: bytes | None = None, overwrite: bool = False) -> PublicKey:
    """generate_keypair with fast argon2id limits."""
    return generate_keypair(
        path, passphrase=passphrase, overwrite=overwrite, opslimit=OPSLIMIT_INTERACTIVE, memlimit=MEMLIMIT_INTERACTIVE
    )


def keypair(tmp_path: Path, name: str = "key", *, passphrase: bytes | None = None) -> tuple[Path, PublicKey]:
    path = tmp_path / name
    return path, gen(path, passphrase=passphrase)


def read_json(path: Path) -> dict[str, Any]:
    obj = json.loads(path.read_text())
    assert isinstance(obj, dict)
    return obj


def canonical(obj: dict[str, Any]) -> bytes:
    """A signature file's canonical bytes (what ``sign`` writes), so a test reaches the signature check."""
    return (json.dumps(obj, indent=2) + "\n").encode()


def write_json(path: Path, obj: dict[str, Any], mode: int = 0o600) -> None:
    path.write_text(json.dumps(obj))
    path.chmod(mode)


# --- keys and key files -------------------------------------------------------------------------------------------


def test_key_id_format() -> None:
    key = PrivateKey.generate()
    assert key.key_id.startswith("ed25519:")
    assert len(key.key_id) == len("ed25519:") + 16
    assert key.key_id == key_id_of(key.public.key)
    int(key.key_id.split(":")[1], 16)


def test_private_key_repr_hides_seed() -> None:
    key = PrivateKey.generate()
    assert key.seed.hex() not in repr(key)
    assert repr(key.seed) not in repr(key)
    assert "seed" not in repr(key)
    assert key.key_id in repr(key)


def test_public_key_checks_its_fields() -> None:
    key = PrivateKey.generate().public
    with pytest.raises(ValueError, match="32 bytes"):
        PublicKey(key=b"x" * 31, key_id=key.key_id)
    with pytest.raises(ValueError, match="does not belong"):
        PublicKey(key=key.key, key_id="ed25519:0000000000000000")
    assert PublicKey.from_bytes(key.key) == key


def test_generate_writes_private_0600_and_public_0644(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path, pub = keypair(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pub_path = tmp_path / "key.pub"
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "key.pub"]  # no temporary files left

    private = read_json(path)
    assert list(private) == ["type", "version", "key_id", "encrypted", "seed"]
    assert private["type"] == "airgap-ed25519-private-key"
    assert private["version"] == 1
    assert private["encrypted"] is False
    assert private["key_id"] == pub.key_id
    assert len(base64.b64decode(private["seed"])) == 32

    public = read_json(pub_path)
    assert public == {
        "type": "airgap-ed25519-public-key",
        "version": 1,
        "key_id": pub.key_id,
        "public_key": base64.b64encode(pub.key).decode(),
    }
    assert pub_path.read_bytes().endswith(b"}\n")


def test_generate_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        path, _ = keypair(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "key.pub").stat().st_mode) == 0o644


def test_round_trip_unencrypted(tmp_path: Path) -> None:
    path, pub = keypair(tmp_path)
    key = load_private_key(path, passphrase=None)
    assert key.public == pub
    assert load_public_key(tmp_path / "key.pub") == pub


def test_round_trip_encrypted(tmp_path: Path) -> None:
    path, pub = keypair(tmp_path, passphrase=b"correct horse")
    obj = read_json(path)
    assert list(obj) == [
        "type", "version", "key_id", "encrypted", "kdf", "opslimit", "memlimit", "salt", "nonce", "ciphertext",
    ]  # fmt: skip
    assert obj["encrypted"] is True
    assert obj["kdf"] == "argon2id"
    assert (obj["opslimit"], obj["memlimit"]) == (OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE)
    assert len(base64.b64decode(obj["salt"])) == 16
    assert len(base64.b64decode(obj["nonce"])) == 24
    assert len(base64.b64decode(obj["ciphertext"])) == 48
    assert "seed" not in obj
    key = load_private_key(path, passphrase=b"correct horse")
    assert key.public == pub
    assert key.seed.hex() not in path.read_text()


def test_encrypted_key_without_passphrase(tmp_path: Path) -> None:
    path, _ = keypair(tmp_path, passphrase=b"pw")
    with pytest.raises(PassphraseError) as info:
        load_private_key(path, passphrase=None)
    assert str(info.value) == (
        f"the key {path} is encrypted: give its passphrase with --passphrase-file FILE or AIRGAP_KEY_PASSPHRASE"
    )
    assert info.value.exit_code == 6


def test_wrong_passphrase(tmp_path: Path) -> None:
    path, _ = keypair(tmp_path, passphrase=b"right")
    with pytest.raises(PassphraseError, match="wrong passphrase") as info:
        load_private_key(path, passphrase=b"wrong")
    assert str(path) in info.value.message
    assert "passphrase" in info.value.hint


def test_passphrase_given_for_unencrypted_key_is_ignored_with_a_warning(tmp_path: Path) -> None:
    path, pub = keypair(tmp_path)
    with pytest.warns(KeyPermissionWarning, match="is not encrypted: the passphrase given was not needed"):
        assert load_private_key(path, passphrase=b"unused").public == pub


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        gen(tmp_path / "key", passphrase=b"")
    assert list(tmp_path.iterdir()) == []


def test_limits_out_of_range_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="opslimit"):
        generate_keypair(tmp_path / "key", passphrase=b"pw", opslimit=0, memlimit=MEMLIMIT_INTERACTIVE)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path, pub = keypair(tmp_path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists") as info:
        gen(path)
    assert str(path) in info.value.message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "key.pub"]


def test_refuses_when_only_the_pub_file_exists(tmp_path: Path) -> None:
    (tmp_path / "key.pub").write_text("old")
    with pytest.raises(KeyFileError, match=r"key\.pub already exists"):
        gen(tmp_path / "key")
    assert not (tmp_path / "key").exists()


def test_a_path_named_as_a_public_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="named as a public key"):
        gen(tmp_path / "key.pub")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_public_key_write_leaves_the_old_pair(tmp_path: Path) -> None:
    """--force over a pair whose .pub cannot be replaced (a directory in the way): the old private key stays,
    and no new private key lands without its public key."""
    path, old = keypair(tmp_path)
    before = path.read_bytes()
    (tmp_path / "key.pub").unlink()
    (tmp_path / "key.pub").mkdir()
    with pytest.raises(KeyFileError, match=r"cannot write .*key\.pub"):
        gen(path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "key.pub"]


def test_missing_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        gen(tmp_path / "a" / "b" / "key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_overwrite_replaces_both_files(tmp_path: Path) -> None:
    path, old = keypair(tmp_path)
    (path).chmod(0o644)
    new = gen(path, overwrite=True)
    assert new != old
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path, passphrase=None).public == new
    assert load_public_key(tmp_path / "key.pub") == new


def test_missing_private_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as info:
        load_private_key(tmp_path / "nope", passphrase=None)
    assert str(tmp_path / "nope") in info.value.message


def test_missing_public_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="public key file .* does not exist"):
        load_public_key(tmp_path / "nope.pub")


def test_directory_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read private key file"):
        load_private_key(tmp_path, passphrase=None)


def test_public_key_given_as_private_key(tmp_path: Path) -> None:
    keypair(tmp_path)
    with pytest.raises(KeyFileError, match="is a public key file") as info:
        load_private_key(tmp_path / "key.pub", passphrase=None)
    assert "without .pub" in info.value.hint


def test_private_key_given_as_public_key(tmp_path: Path) -> None:
    path, _ = keypair(tmp_path)
    with pytest.raises(KeyFileError, match="is a private key, not a public key") as info:
        load_public_key(path)
    assert f"{path}.pub" in info.value.hint


@pytest.mark.parametrize("content", [b"", b"not json", b"\xff\xfe", b"[1, 2]", b'{"type": "something-else"}'])
def test_not_a_key_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="is not an airgap private key file"):
        load_private_key(path, passphrase=None)
    with pytest.raises(KeyFileError, match="is not an airgap public key file"):
        load_public_key(path)


def test_huge_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b" " * (65 * 1024))
    with pytest.raises(KeyFileError, match="larger than 64 KiB"):
        load_private_key(path, passphrase=None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": "%%%"}, "'seed' is not base64"),
        ({"seed": base64.b64encode(b"x" * 31).decode()}, "'seed' has 31 bytes, not 32"),
        ({"seed": None}, "no 'seed' field"),
        ({"encrypted": "no"}, "'encrypted' must be true or false"),
        ({"key_id": "ed25519:0000000000000000"}, "does not match its key"),
        ({"version": 2}, "unsupported version 2"),
    ],
)
def test_corrupted_unencrypted_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path, _ = keypair(tmp_path)
    obj = read_json(path)
    obj.update(change)
    write_json(path, obj)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path, passphrase=None)
    assert message in info.value.message
    assert str(path) in info.value.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kdf": "scrypt"}, "unsupported kdf 'scrypt'"),
        ({"opslimit": "3"}, "'opslimit' is not a whole number"),
        ({"memlimit": 1 << 50}, "memlimit"),
        ({"salt": "AA=="}, "'salt' has 1 bytes, not 16"),
        ({"nonce": None}, "no 'nonce' field"),
        ({"ciphertext": base64.b64encode(b"x" * 48).decode()}, "wrong passphrase for the key"),
        ({"key_id": "ed25519:0000000000000000"}, "does not match its key"),
    ],
)
def test_corrupted_encrypted_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path, _ = keypair(tmp_path, passphrase=b"pw")
    obj = read_json(path)
    obj.update(change)
    write_json(path, obj)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path, passphrase=b"pw")
    assert message in info.value.message


def test_an_edited_kdf_limit_is_not_called_only_a_wrong_passphrase(tmp_path: Path) -> None:
    path, _ = keypair(tmp_path, passphrase=b"pw")
    obj = read_json(path)
    obj["opslimit"] += 1
    write_json(path, obj)
    with pytest.raises(KeyFileError, match="wrong passphrase for the key .*, or the key file is damaged"):
        load_private_key(path, passphrase=b"pw")


def test_corrupted_public_key(tmp_path: Path) -> None:
    _, pub = keypair(tmp_path)
    pub_path = tmp_path / "key.pub"
    obj = read_json(pub_path)
    obj["public_key"] = base64.b64encode(PrivateKey.generate().public.key).decode()
    write_json(pub_path, obj, 0o644)
    with pytest.raises(KeyFileError, match="does not match its key"):
        load_public_key(pub_path)


def test_warns_on_readable_unencrypted_key(tmp_path: Path) -> None:
    path, _ = keypair(tmp_path)
    path.chmod(0o644)
    with pytest.warns(KeyPermissionWarning, match=r"chmod 600") as record:
        load_private_key(path, passphrase=None)
    assert str(path) in str(record[0].message)
    assert issubclass(KeyPermissionWarning, UserWarning)


def test_no_warning_for_0600_or_encrypted_keys(tmp_path: Path) -> None:
    path, _ = keypair(tmp_path)
    enc, _ = keypair(tmp_path, "enc", passphrase=b"pw")
    enc.chmod(0o644)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_private_key(path, passphrase=None)
        load_private_key(enc, passphrase=b"pw")


def test_encode_decode_public_key() -> None:
    pub = PrivateKey.generate().public
    assert decode_public_key(encode_public_key(pub)) == pub
    with pytest.raises(KeyFileError, match="bundle.pub is not an airgap public key file"):
        decode_public_key(b"{}", source="bundle.pub")


# --- passphrases --------------------------------------------------------------------------------------------------


def test_read_passphrase_from_file_first_line(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_bytes(b"s3cret phrase \r\nsecond line\n")
    assert read_passphrase(f, {"AIRGAP_KEY_PASSPHRASE": "env"}) == b"s3cret phrase "
    f.write_bytes(b"no newline")
    assert read_passphrase(f, {}) == b"no newline"


def test_read_passphrase_from_env() -> None:
    assert read_passphrase(None, {"AIRGAP_KEY_PASSPHRASE": "pä ss"}) == "pä ss".encode()
    assert read_passphrase(None, {"AIRGAP_KEY_PASSPHRASE": "pass\r\n"}) == b"pass"  # as from the file
    assert read_passphrase(None, {"AIRGAP_KEY_PASSPHRASE": "\n"}) is None
    assert read_passphrase(None, {"AIRGAP_KEY_PASSPHRASE": ""}) is None
    assert read_passphrase(None, {}) is None


def test_read_passphrase_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read passphrase file") as info:
        read_passphrase(tmp_path / "missing", {})
    assert "--passphrase-file" in info.value.hint
    empty = tmp_path / "empty"
    empty.write_bytes(b"\nsecond")
    with pytest.raises(InvalidInput, match="is empty"):
        read_passphrase(empty, {})


def test_passphrase_file_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_text("hunter2\n")
    path, pub = keypair(tmp_path, passphrase=read_passphrase(f, {}))
    assert load_private_key(path, passphrase=read_passphrase(None, {"AIRGAP_KEY_PASSPHRASE": "hunter2"})).public == pub


# --- sign and verify ----------------------------------------------------------------------------------------------


@pytest.fixture
def signer() -> PrivateKey:
    return PrivateKey.generate()


def test_sign_format(signer: PrivateKey) -> None:
    sig = sign(signer, DATA)
    assert sig.endswith(b"\n")
    obj = json.loads(sig)
    assert list(obj) == ["type", "version", "algorithm", "key_id", "signature"]
    assert obj["type"] == "airgap-signature"
    assert obj["version"] == 1
    assert obj["algorithm"] == "ed25519"
    assert obj["key_id"] == signer.key_id
    assert len(base64.b64decode(obj["signature"])) == 64
    assert len(sig) < 4096


def test_verify_returns_the_key(signer: PrivateKey) -> None:
    other = PrivateKey.generate().public
    assert verify(DATA, sign(signer, DATA), [other, signer.public]) == signer.public


def test_sign_verify_with_key_files(tmp_path: Path) -> None:
    path, _ = keypair(tmp_path, passphrase=b"pw")
    sig = sign(load_private_key(path, passphrase=b"pw"), DATA)
    assert verify(DATA, sig, [load_public_key(tmp_path / "key.pub")]).key_id == read_json(path)["key_id"]


def test_every_one_byte_change_of_data_is_refused(signer: PrivateKey) -> None:
    sig = sign(signer, DATA)
    for i in range(len(DATA)):
        changed = bytearray(DATA)
        changed[i] ^= 0x01
        with pytest.raises(BadSignature):
            verify(bytes(changed), sig, [signer.public])
    with pytest.raises(BadSignature):
        verify(DATA + b" ", sig, [signer.public])
    with pytest.raises(BadSignature):
        verify(DATA[:-1], sig, [signer.public])


def test_bad_signature_message(signer: PrivateKey) -> None:
    with pytest.raises(BadSignature) as info:
        verify(DATA + b"x", sign(signer, DATA), [signer.public])
    assert str(info.value) == (
        "manifest.json does not match its signature: the bundle was altered or damaged; do not use it"
    )
    assert info.value.exit_code == 6
    assert isinstance(info.value, SignatureError)
    assert isinstance(info.value, AirgapError)


def test_subject_names_the_file(signer: PrivateKey) -> None:
    with pytest.raises(BadSignature, match="^index.json does not match"):
        verify(DATA + b"x", sign(signer, DATA), [signer.public], subject="index.json")


def test_one_byte_change_of_signature_is_refused(signer: PrivateKey) -> None:
    sig = sign(signer, DATA)
    raw = base64.b64decode(json.loads(sig)["signature"])
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x80
        obj = json.loads(sig)
        obj["signature"] = base64.b64encode(bytes(changed)).decode()
        with pytest.raises(BadSignature):
            verify(DATA, canonical(obj), [signer.public])


def test_every_byte_change_of_signature_file_is_refused(signer: PrivateKey) -> None:
    sig = sign(signer, DATA)
    for i in range(len(sig)):
        changed = bytearray(sig)
        changed[i] ^= 0x01
        with pytest.raises(SignatureError):
            verify(DATA, bytes(changed), [signer.public])


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace(b'  "key_id"', b'\t"key_id"'),  # whitespace JSON ignores
        lambda s: s.replace(b"\n}", b"}"),
        lambda s: s + b"\n",
        lambda s: s.replace(b'": ', b'":', 1),
        lambda s: json.dumps(json.loads(s)).encode(),  # the same content on one line
        lambda s: json.dumps(json.loads(s), indent=2, sort_keys=True).encode() + b"\n",  # reordered
    ],
)
def test_equivalent_but_edited_signature_file_is_refused(signer: PrivateKey, edit: Any) -> None:
    sig = sign(signer, DATA)
    edited = edit(sig)
    assert edited != sig and json.loads(edited) == json.loads(sig)
    with pytest.raises(MalformedSignature, match="has been edited"):
        verify(DATA, edited, [signer.public])


def test_non_canonical_base64_is_refused(signer: PrivateKey) -> None:
    """64 bytes encode to 86 characters and '=='; the last character carries 4 unused bits that decoders ignore."""
    sig = sign(signer, DATA)
    obj = json.loads(sig)
    text = obj["signature"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[85])
    obj["signature"] = text[:85] + alphabet[last ^ 0x01] + "=="
    assert base64.b64decode(obj["signature"]) == base64.b64decode(text)
    with pytest.raises(MalformedSignature, match="has been edited"):
        verify(DATA, canonical(obj), [signer.public])


def test_untrusted_key_claiming_a_trusted_key_id(signer: PrivateKey) -> None:
    attacker = PrivateKey.generate()
    obj = json.loads(sign(attacker, DATA))
    obj["key_id"] = signer.key_id
    forged = canonical(obj)
    with pytest.raises(BadSignature):
        verify(DATA, forged, [signer.public])


def test_unknown_signer(signer: PrivateKey) -> None:
    trusted = [PrivateKey.generate().public, PrivateKey.generate().public]
    with pytest.raises(UnknownSigner) as info:
        verify(DATA, sign(signer, DATA), trusted)
    assert signer.key_id in info.value.message
    assert all(k.key_id in info.value.message for k in trusted)
    assert "by a channel you trust" in info.value.hint and "may be forged" in info.value.hint
    assert info.value.exit_code == 6


def test_no_trusted_keys(signer: PrivateKey) -> None:
    with pytest.raises(UnknownSigner, match=r"trusted keys: none"):
        verify(DATA, sign(signer, DATA), [])


def test_signature_file_too_large(signer: PrivateKey) -> None:
    sig = sign(signer, DATA)
    with pytest.raises(MalformedSignature, match="more than 4096"):
        verify(DATA, sig.rstrip(b"\n") + b" " * 5000, [signer.public])


def signature_with(signer: PrivateKey, **change: Any) -> bytes:
    obj = json.loads(sign(signer, DATA))
    for key, value in change.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    return canonical(obj)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "airgap-ed25519-public-key"}, "not an airgap signature file"),
        ({"type": None}, "not an airgap signature file"),
        ({"version": 2}, "unsupported version 2"),
        ({"algorithm": "rsa"}, "unsupported algorithm 'rsa'"),
        ({"key_id": None}, "no key_id"),
        ({"key_id": 7}, "no key_id"),
        ({"signature": None}, "no 'signature' field"),
        ({"signature": "not base64!"}, "'signature' is not base64"),
        ({"signature": "AAAA"}, "'signature' has 3 bytes, not 64"),
    ],
)
def test_malformed_signature(signer: PrivateKey, change: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedSignature) as info:
        verify(DATA, signature_with(signer, **change), [signer.public])
    assert message in info.value.message
    assert "manifest.json" in info.value.message
    assert info.value.hint
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\xff", b"[]", b"null", b"[" * 3000])
def test_signature_not_json(signer: PrivateKey, content: bytes) -> None:
    with pytest.raises(MalformedSignature, match="not an airgap signature file"):
        verify(DATA, content, [signer.public])


def test_keygen_creates_missing_directories_and_reports_unwritable(tmp_path: Path) -> None:
    from airgap.signing import KeyFileError as _KeyFileError
    from airgap.signing import generate_keypair as _gen

    key = tmp_path / "new" / "dir" / "k"
    _gen(key, opslimit=OPSLIMIT_INTERACTIVE, memlimit=MEMLIMIT_INTERACTIVE)
    assert key.exists() and (tmp_path / "new" / "dir" / "k.pub").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(_KeyFileError, match="cannot create"):
        _gen(blocker / "k")


def test_keygen_onto_a_file_system_that_keeps_no_modes_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """exFAT or NTFS on a USB stick: the key file is 0777 whatever chmod asks, and keygen said "mode 0600".
    Here a chmod that the file system turns into 0777 stands in for one."""
    from airgap.cli.main import main

    real_fchmod = os.fchmod
    monkeypatch.setattr(os, "fchmod", lambda fd, mode: real_fchmod(fd, 0o777))
    assert main(["keygen", str(tmp_path / "stick.key")]) == 0
    out, err = capsys.readouterr()
    assert "NOT encrypted, mode 0777" in out and "mode 0600" not in out
    assert "airgap: warning: the file system of" in err and "does not keep file modes" in err
    assert "or encrypt it with a passphrase" in err
    assert main(["-q", "keygen", str(tmp_path / "quiet.key")]) == 0  # -q keeps the warning (stderr)
    out, err = capsys.readouterr()
    assert out.startswith("ed25519:") and "does not keep file modes" in err
    monkeypatch.setattr(os, "fchmod", real_fchmod)
    assert main(["keygen", str(tmp_path / "disk.key")]) == 0
    out, err = capsys.readouterr()
    assert "NOT encrypted, mode 0600" in out and "warning" not in err


@pytest.mark.parametrize(("err", "hint"), [
    (errno.ENOSYS, "on a file system that keeps file modes"),  # fusefat: no chmod at all
    (errno.ENOSPC, "free some space there"),
    (errno.EIO, "choose another directory"),
])
def test_a_key_that_cannot_be_written_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int,
                                                hint: str) -> None:
    from airgap.signing import KeyFileError, generate_keypair

    def fail(fd: int, mode: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fchmod", fail)
    with pytest.raises(KeyFileError, match=hint) as caught:
        generate_keypair(tmp_path / "k.key")
    assert err != errno.EIO or "free some space" not in str(caught.value)
    assert not list(tmp_path.iterdir())  # nothing half-written left
