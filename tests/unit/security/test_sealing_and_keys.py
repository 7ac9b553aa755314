"""File encryption (AES-GCM per chunk, the sealed manifest part) and the key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from p2pshare.config import load_settings
from p2pshare.core.errors import ConfigError, IntegrityError, InvalidInput
from p2pshare.core.ids import is_valid_node_id, node_id_of
from p2pshare.security import sealing
from p2pshare.security.keys import (
    KEY_FILE,
    load_or_create_file_key,
    load_or_create_identity,
)

KEY = bytes(range(32))
OTHER = bytes(32)


def encrypt(key: bytes, index: int, plain: bytes) -> bytes:
    out = memoryview(bytearray(len(plain) + sealing.OVERHEAD))
    return bytes(sealing.encrypt_chunk_into(key, index, plain, out))


def decrypt(key: bytes, index: int, cipher: bytes | bytearray) -> bytes:
    out = memoryview(bytearray(max(0, len(cipher) - sealing.OVERHEAD)))
    return bytes(sealing.decrypt_chunk_into(key, index, cipher, out))


def test_a_chunk_encrypts_the_same_every_time_and_opens_only_with_its_key() -> None:
    plain = b"hello chunk" * 100
    c1 = encrypt(KEY, 3, plain)
    assert c1 == encrypt(KEY, 3, plain)  # resume pushes the same bytes
    assert len(c1) == len(plain) + sealing.OVERHEAD
    assert plain not in c1
    assert c1 != encrypt(KEY, 4, plain)  # a nonce per chunk index
    assert decrypt(KEY, 3, c1) == plain
    with pytest.raises(IntegrityError, match="does not decrypt"):
        decrypt(OTHER, 3, c1)
    with pytest.raises(IntegrityError):
        decrypt(KEY, 4, c1)  # moved to another place in the file
    tampered = bytearray(c1)
    tampered[5] ^= 1
    with pytest.raises(IntegrityError):
        decrypt(KEY, 3, tampered)
    with pytest.raises(InvalidInput):
        encrypt(b"short", 0, plain)


def test_a_chunk_encrypted_and_decrypted_into_reused_buffers_is_the_same_chunk() -> None:
    out = memoryview(bytearray(4096))
    clear = memoryview(bytearray(4096))
    for index, plain in enumerate([b"a" * 1000, b"b" * 4000, b"", b"c" * 7]):
        sealed = sealing.encrypt_chunk_into(KEY, index, memoryview(plain), out)
        assert bytes(sealed) == encrypt(KEY, index, plain)  # as into a fresh buffer
        opened = sealing.decrypt_chunk_into(KEY, index, sealed, clear)
        assert bytes(opened) == plain
    sealed = sealing.encrypt_chunk_into(KEY, 0, b"secret" * 10, out)
    tampered = bytearray(sealed)
    tampered[0] ^= 1
    with pytest.raises(IntegrityError, match="does not decrypt"):
        sealing.decrypt_chunk_into(KEY, 0, tampered, clear)
    with pytest.raises(IntegrityError, match="does not decrypt"):
        sealing.decrypt_chunk_into(OTHER, 0, sealed, clear)
    with pytest.raises(IntegrityError, match="shorter than its tag"):
        sealing.decrypt_chunk_into(KEY, 0, b"tiny", clear)


def test_the_sealed_part_round_trips_and_refuses_the_wrong_key() -> None:
    part = sealing.SealedPart("report.pdf", 1234, "ab" * 32)
    text = sealing.seal(KEY, part)
    assert "report" not in text
    assert sealing.unseal(KEY, text) == part
    with pytest.raises(IntegrityError, match="wrong key"):
        sealing.unseal(OTHER, text)
    with pytest.raises(InvalidInput):
        sealing.unseal(KEY, "!!not base64!!")
    with pytest.raises(InvalidInput):
        sealing.unseal(KEY, "")


def test_sizes_of_an_encrypted_file() -> None:
    chunk = 64 * 1024
    assert sealing.plain_chunk_size(chunk) == chunk - 16
    plain = 3 * (chunk - 16) + 10
    cipher = plain + 4 * 16
    assert sealing.plain_size(cipher, chunk) == plain


def test_the_identity_is_made_once_private_and_checked(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path)
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert is_valid_node_id(first.node_id) and node_id_of(first.public_key) == first.node_id
    again = load_or_create_identity(tmp_path)
    assert (again.node_id, again.fingerprint) == (first.node_id, first.fingerprint)
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="readable"):
        load_or_create_identity(tmp_path)


def test_a_file_key_is_kept_per_plaintext_and_chunk_size(tmp_path: Path) -> None:
    sha = "cd" * 32
    k1 = load_or_create_file_key(tmp_path, sha, 65536)
    assert len(k1) == 32
    assert load_or_create_file_key(tmp_path, sha, 65536) == k1
    assert load_or_create_file_key(tmp_path, sha, 131072) != k1
    assert load_or_create_file_key(tmp_path, "ef" * 32, 65536) != k1
    for f in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    with pytest.raises(InvalidInput):
        load_or_create_file_key(tmp_path, "../../etc/passwd", 65536)


def test_production_refuses_tls_off(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="requires TLS"):
        load_settings(profile="production", flags={"tls": False, "data_dir": tmp_path})
    settings = load_settings(profile="production", flags={"data_dir": tmp_path})
    assert settings.tls and settings.encrypt
    assert not load_settings(profile="development", flags={"data_dir": tmp_path}).encrypt
