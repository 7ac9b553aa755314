"""Identity keys: an Ed25519 key and a self-signed certificate for it, kept in the data dir.

Each node and the tracker make their key on first start (``identity.key``, PKCS#8 PEM, mode
0600) and a self-signed X.509 certificate for it (``identity.crt``), and load both on every
later start. The node id is the hash of the public key (:func:`p2pshare.core.ids.node_id_of`);
the certificate's fingerprint (SHA-256 of its DER bytes, hex) is what TLS clients pin.

Files are written atomically (temp file, fsync, rename): a crash leaves either no key or a
whole one. These functions block (file I/O); async callers run them in a thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from p2pshare.core.errors import ConfigError
from p2pshare.core.ids import node_id_of, validate_id
from p2pshare.core.links import KEY_BYTES, decode_key, encode_key

KEY_FILE = "identity.key"
CERT_FILE = "identity.crt"
_NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_NOT_AFTER = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Identity:
    """A key pair, its node id and its certificate, as loaded from a data dir."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    """the raw 32-byte Ed25519 public key"""
    node_id: str
    cert_path: Path
    key_path: Path
    fingerprint: str
    """SHA-256 of the certificate's DER bytes, lowercase hex: what TLS clients pin"""

    def sign(self, data: bytes) -> bytes:
        """Return the Ed25519 signature of ``data`` (64 bytes)."""
        return self.private_key.sign(data)


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key with its node id, not tied to files (a signer for tests and tools)."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    node_id: str

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey) -> KeyPair:
        """Return the key pair of ``private_key``."""
        pub = public_bytes(private_key)
        return cls(private_key, pub, node_id_of(pub))

    def sign(self, data: bytes) -> bytes:
        """Return the Ed25519 signature of ``data`` (64 bytes)."""
        return self.private_key.sign(data)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    """Return the raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint_of(cert_der: bytes) -> str:
    """Return the SHA-256 (lowercase hex) of a certificate's DER bytes."""
    return hashlib.sha256(cert_der).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _certificate(key: Ed25519PrivateKey, node_id: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    serial = int.from_bytes(hashlib.sha256(public_bytes(key)).digest()[:16], "big") >> 1
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial or 1)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .sign(key, None)
    )


def load_or_create_identity(data_dir: Path) -> Identity:
    """Return the identity kept in ``data_dir``, making the key and certificate on first start.

    Raises :class:`ConfigError` when the key file exists but is not an Ed25519 key, or is
    readable by others (it must be mode 0600, as an SSH key).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / KEY_FILE
    cert_path = data_dir / CERT_FILE
    try:
        pem = key_path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_path, pem)
    else:
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"{key_path} is readable by others (mode {mode:o}); run: chmod 600 {key_path}"
            )
        try:
            loaded = serialization.load_pem_private_key(pem, password=None)
        except TypeError:  # a passphrase-protected key
            raise ConfigError(f"{key_path} is encrypted with a passphrase; give it none") from None
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(f"{key_path} is not a PEM private key") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ConfigError(f"{key_path} is not an Ed25519 key")
        key = loaded
    pub = public_bytes(key)
    node_id = node_id_of(pub)
    cert = _load_cert(cert_path, pub)
    if cert is None:
        cert = _certificate(key, node_id)
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return Identity(
        private_key=key,
        public_key=pub,
        node_id=node_id,
        cert_path=cert_path,
        key_path=key_path,
        fingerprint=fingerprint_of(cert.public_bytes(serialization.Encoding.DER)),
    )


def _load_cert(path: Path, pub: bytes) -> x509.Certificate | None:
    """Return the certificate in ``path`` when it is for ``pub``; None to make a new one."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    key = cert.public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return cert if raw == pub else None


def server_context(identity: Identity) -> ssl.SSLContext:
    """Return a TLS server context that presents ``identity``'s certificate (TLS 1.2+)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(identity.cert_path, identity.key_path)
    return ctx


KEYRING_DIR = "keys"
"""Where an owner keeps the keys of its encrypted uploads (``DATA/keys``, mode 0700)."""


def load_or_create_file_key(data_dir: Path, sha256: str, chunk_size: int) -> bytes:
    """Return the key of the encrypted upload of the plaintext ``sha256`` cut into
    ``chunk_size`` chunks, making and saving a random one on first use (blocking).

    Kept per plaintext and chunk size, so a resumed or repeated upload encrypts to the same
    chunks, and a key never encrypts two different plaintexts. The key file is mode 0600.
    """
    folder = data_dir / KEYRING_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{validate_id(sha256, 'sha256')}-{int(chunk_size)}.key"
    try:
        return decode_key(path.read_text().strip())
    except FileNotFoundError:
        pass
    # written aside, then linked in: of two uploads racing, the first key wins for both
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _write_private(tmp, (encode_key(secrets.token_bytes(KEY_BYTES)) + "\n").encode())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return decode_key(path.read_text().strip())
