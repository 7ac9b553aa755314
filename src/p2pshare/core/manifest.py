"""The manifest: the description of a file, and the pure builder that makes one from chunks.

A manifest names a file's bytes, not where they live: name, size, chunk size, SHA-256 of the
whole file, the ordered chunk ids, and the file id (the Merkle root over the chunk ids, see
:mod:`p2pshare.core.merkle`). Its canonical JSON (:meth:`Manifest.canonical_json`) has sorted
keys, no whitespace, UTF-8 text and ``created`` as ``YYYY-MM-DDTHH:MM:SSZ``, so equal manifests
encode to equal bytes.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from p2pshare.core.chunking import MAX_CHUNKS, chunk_count, validate_chunk_size
from p2pshare.core.errors import InvalidId, InvalidManifest, InvalidName, InvalidSize
from p2pshare.core.ids import chunk_id as hash_chunk
from p2pshare.core.ids import validate_id
from p2pshare.core.merkle import MerkleProof, merkle_proof, merkle_root

FORMAT_VERSION = 1
MAX_NAME_BYTES = 255
MAX_MANIFEST_BYTES = 80 * MAX_CHUNKS
"""Largest canonical JSON a manifest may have: 66 bytes per chunk id plus room for the rest."""


def validate_name(name: object) -> str:
    """Return ``name`` when it is a usable file name; raise :class:`InvalidName` otherwise.

    A name is 1 to 255 bytes of UTF-8, is not ``.`` or ``..``, and holds no ``/``, ``\\``,
    NUL or other control characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidName("file name must be a non-empty string")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidName(f"file name is longer than {MAX_NAME_BYTES} bytes")
    if name in {".", ".."}:
        raise InvalidName(f"file name may not be {name!r}")
    for ch in name:
        if ch in "/\\":
            raise InvalidName(f"file name may not contain a path separator: {name!r}")
        if unicodedata.category(ch) in {"Cc", "Cs"}:
            raise InvalidName(f"file name may not contain control characters: {name!r}")
    return name


def _check_id(value: str) -> str:
    try:
        return validate_id(value)
    except InvalidId as exc:
        raise ValueError(exc.detail) from None


HexId = Annotated[str, AfterValidator(_check_id)]


class Manifest(BaseModel):
    """A file's description. Build one with :class:`ManifestBuilder` or :meth:`parse`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    format_version: Literal[1] = Field(
        default=FORMAT_VERSION, description="manifest format; 1 is the only one"
    )
    name: str = Field(description="file name, no path (see validate_name)")
    size: int = Field(ge=0, description="file size in bytes")
    chunk_size: int = Field(description="bytes per chunk, a power of two, 64 KiB to 64 MiB")
    sha256: HexId = Field(description="SHA-256 of the whole file, lowercase hex")
    chunk_ids: list[HexId] = Field(
        max_length=MAX_CHUNKS, description="SHA-256 of each chunk's bytes, in file order"
    )
    file_id: HexId = Field(description="Merkle root over chunk_ids (the file's handle)")
    created: datetime = Field(description="when the manifest was made, UTC, whole seconds")
    sealed: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="an encrypted file's name, size and plaintext SHA-256, sealed with its key "
        "(base64url); absent for a plain file, whose chunks are the file's bytes",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return validate_name(value)
        except InvalidName as exc:
            raise ValueError(exc.detail) from None

    @field_validator("chunk_size")
    @classmethod
    def _chunk_size(cls, value: int) -> int:
        try:
            return validate_chunk_size(value)
        except InvalidSize as exc:
            raise ValueError(exc.detail) from None

    @field_validator("created")
    @classmethod
    def _created(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created must carry a time zone")
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("created is outside the range of dates") from None
        if not 1970 <= value.year <= 9999:
            raise ValueError("created must be a date from 1970 to 9999")
        return value.replace(microsecond=0)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        expected = chunk_count(self.size, self.chunk_size)
        if len(self.chunk_ids) != expected:
            raise ValueError(
                f"a file of {self.size} bytes in chunks of {self.chunk_size} has {expected} "
                f"chunks, but {len(self.chunk_ids)} chunk ids are listed"
            )
        return self

    @field_serializer("created")
    def _ser_created(self, value: datetime) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")

    @classmethod
    def parse(cls, data: str | bytes | dict[str, object]) -> Manifest:
        """Return the manifest in ``data`` (JSON text or a dict) after validating every field.

        Raises :class:`InvalidManifest` naming the first bad field. Does not check the file id;
        call :meth:`verify` for that.
        """
        try:
            if isinstance(data, str | bytes):
                if len(data) > MAX_MANIFEST_BYTES:
                    raise InvalidManifest(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidManifest(_first_error(exc)) from None

    def canonical_json(self) -> bytes:
        """Return the canonical encoding: sorted keys, no spaces, UTF-8."""
        return json.dumps(
            self.model_dump(mode="json", exclude_none=True),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")

    def verify(self) -> None:
        """Recompute the file id from the chunk ids; raise :class:`InvalidManifest` on mismatch."""
        actual = merkle_root(self.chunk_ids)
        if actual != self.file_id:
            raise InvalidManifest(
                f"manifest file id {self.file_id} does not match its chunks (root {actual})"
            )

    def proof(self, index: int) -> MerkleProof:
        """Return the Merkle proof that chunk ``index`` belongs to this file id."""
        return merkle_proof(self.chunk_ids, index)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "manifest"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"invalid manifest field {where!r}: {msg}"


class ManifestBuilder:
    """Feeds a file's chunks, in order, into a :class:`Manifest` (pure: no I/O).

    Every chunk but the last must be exactly ``chunk_size`` bytes. Hashing is done here, so a
    caller that reads from disk or a socket only hands over the bytes.
    """

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = validate_chunk_size(chunk_size)
        self._sha = hashlib.sha256()
        self._ids: list[str] = []
        self._size = 0
        self._taken = 0
        self._short_seen = False

    @property
    def size(self) -> int:
        """Return the bytes fed so far."""
        return self._size

    def add_chunk(self, data: bytes | bytearray | memoryview) -> str:
        """Add the next chunk and return its chunk id.

        Raises :class:`InvalidManifest` for an empty chunk, a chunk longer than ``chunk_size``,
        or a chunk after a short one.
        """
        self.take(data)
        cid = hash_chunk(data)
        self.name_chunk(cid)
        return cid

    def take(self, data: bytes | bytearray | memoryview) -> None:
        """The first half of :meth:`add_chunk`: check the next chunk and feed it to the
        whole-file hash. Its id is hashed meanwhile (e.g. in another thread) and given to
        :meth:`name_chunk` before the next chunk is taken. Raises like :meth:`add_chunk`."""
        n = len(data)
        if n == 0 or n > self.chunk_size:
            raise InvalidManifest(f"chunk of {n} bytes with a chunk size of {self.chunk_size}")
        if self._short_seen:
            raise InvalidManifest("only the last chunk may be shorter than the chunk size")
        if self._taken != len(self._ids):
            raise InvalidManifest("a chunk was taken before the previous one was named")
        self._short_seen = n < self.chunk_size
        self._sha.update(data)
        self._size += n
        self._taken += 1

    def name_chunk(self, chunk_id: str) -> None:
        """The second half of :meth:`add_chunk`: the id of the chunk just taken."""
        if self._taken != len(self._ids) + 1:
            raise InvalidManifest("a chunk id without a chunk taken for it")
        self._ids.append(chunk_id)

    def finish(self, name: str, created: datetime, sealed: str | None = None) -> Manifest:
        """Return the manifest of everything fed so far under ``name`` (with the ``sealed``
        part of an encrypted file)."""
        if self._taken != len(self._ids):
            raise InvalidManifest("the last chunk taken was not named")
        ids = list(self._ids)
        return Manifest.parse(
            {
                "name": name,
                "size": self._size,
                "chunk_size": self.chunk_size,
                "sha256": self._sha.hexdigest(),
                "chunk_ids": ids,
                "file_id": merkle_root(ids),
                "created": created,
                "sealed": sealed,
            }
        )


def manifest_of_bytes(data: bytes, name: str, created: datetime, chunk_size: int) -> Manifest:
    """Return the manifest of ``data`` held in memory (for tests and small inputs)."""
    builder = ManifestBuilder(chunk_size)
    for start in range(0, len(data), chunk_size):
        builder.add_chunk(data[start : start + chunk_size])
    return builder.finish(name, created)
