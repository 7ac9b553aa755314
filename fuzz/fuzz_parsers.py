"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers that read untrusted input.

Targets, picked by the first byte of each input: the manifest parser (raw bytes, and a valid
manifest with one field replaced by fuzzed JSON), the share-link parser and key decoder, the
id and node-id validators, the size parser, and the signature header parser with
:func:`~p2pshare.security.signing.verify`.

Only the errors each parser documents are fine (``InvalidManifest``, ``InvalidLink``,
``InvalidId``, ``InvalidSize``, ``Unauthenticated``); any other exception, or a value that does
not read back from its own canonical form, crashes the run and libFuzzer writes the input
that did it (``crash-<sha1>``; replay it with ``python fuzz/fuzz_parsers.py crash-<sha1>``).

Run it bounded, with libFuzzer flags::

    python fuzz/fuzz_parsers.py -max_total_time=60            # what ``make fuzz`` does
    python fuzz/fuzz_parsers.py -runs=20000 -seed=1 CORPUS_DIR  # reproducible
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports(include=["p2pshare"]):
    from p2pshare.core.errors import (
        InvalidId,
        InvalidManifest,
        InvalidSize,
        Unauthenticated,
    )
    from p2pshare.core.ids import (
        is_valid_id,
        is_valid_node_id,
        node_id_of,
        validate_id,
        validate_node_id,
    )
    from p2pshare.core.links import (
        SCHEME,
        InvalidLink,
        decode_key,
        encode_key,
        format_link,
        parse_link,
    )
    from p2pshare.core.manifest import Manifest, manifest_of_bytes
    from p2pshare.core.sizes import MAX_SIZE, parse_size
    from p2pshare.security.signing import SCHEME as SIG_SCHEME
    from p2pshare.security.signing import SignedHeader, body_sha256, parse_header, verify

_TEMPLATE = manifest_of_bytes(
    bytes(i * 7 % 251 for i in range(2 * 65536 + 100)),
    "template.bin",
    datetime(2030, 1, 1, tzinfo=UTC),
    65536,
)
_TEMPLATE_DOC: dict[str, object] = json.loads(_TEMPLATE.canonical_json())
_FIELDS = sorted(_TEMPLATE_DOC)
_FILE_ID = _TEMPLATE.file_id
_MAX_TEXT = 600


def _text(fdp: atheris.FuzzedDataProvider) -> str:
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, _MAX_TEXT))


def _check_manifest(data: str | bytes | dict[str, object]) -> None:
    try:
        m = Manifest.parse(data)
    except InvalidManifest:
        return
    again = Manifest.parse(m.canonical_json())
    if again != m:
        raise AssertionError(f"manifest does not read back from its canonical JSON: {m!r}")


def fuzz_manifest(fdp: atheris.FuzzedDataProvider) -> None:
    """Manifest.parse: raw bytes, or the template with one field's JSON replaced."""
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        _check_manifest(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4 * _MAX_TEXT)))
        return
    field = fdp.PickValueInList(_FIELDS)
    if mode == 1:  # the field's value is fuzzed JSON text
        doc = json.dumps({**_TEMPLATE_DOC, field: None}, sort_keys=True)
        raw = doc.replace(f'"{field}": null', f'"{field}": {_text(fdp)}', 1)
        _check_manifest(raw)
    elif mode == 2:  # the field's value is a fuzzed string
        _check_manifest({**_TEMPLATE_DOC, field: _text(fdp)})
    else:  # the field's value is a fuzzed integer
        _check_manifest({**_TEMPLATE_DOC, field: fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 12))})


def fuzz_link(fdp: atheris.FuzzedDataProvider) -> None:
    """parse_link and decode_key: a link reads back from its own text."""
    mode = fdp.ConsumeIntInRange(0, 3)
    text = _text(fdp)
    if mode == 1:
        text = SCHEME + text
    elif mode == 2:
        text = f"{SCHEME}{_FILE_ID}#{text}"
    elif mode == 3:
        text = f"{SCHEME}{text}#{encode_key(bytes(32))}"
    try:
        link = parse_link(text)
    except InvalidLink:
        pass
    else:
        if parse_link(str(link)) != link or format_link(link.file_id, link.key) != str(link):
            raise AssertionError(f"link does not read back: {text!r} -> {link!r}")
    try:
        key = decode_key(text)
    except InvalidLink:
        return
    if encode_key(key) != text:
        raise AssertionError(f"key text is not canonical: {text!r}")


def fuzz_ids(fdp: atheris.FuzzedDataProvider) -> None:
    """validate_id and validate_node_id agree with their is_valid_* predicates."""
    text = _text(fdp)
    for is_valid, validate in ((is_valid_id, validate_id), (is_valid_node_id, validate_node_id)):
        ok = is_valid(text)
        try:
            validate(text)
        except InvalidId:
            if ok:
                raise AssertionError(f"{validate.__name__} refused a valid id {text!r}") from None
        else:
            if not ok:
                raise AssertionError(f"{validate.__name__} accepted {text!r}")


def fuzz_size(fdp: atheris.FuzzedDataProvider) -> None:
    """parse_size: a size in range, or InvalidSize."""
    text = _text(fdp)
    try:
        n = parse_size(text)
    except InvalidSize:
        return
    if not 0 <= n <= MAX_SIZE:
        raise AssertionError(f"parse_size({text!r}) = {n}, out of range")


def fuzz_header(fdp: atheris.FuzzedDataProvider) -> None:
    """parse_header and verify: Unauthenticated or a header that renders back."""
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        value = _text(fdp)
    elif mode == 1:
        value = f"{SIG_SCHEME} {_text(fdp)}"
    else:  # well-formed, with the node id of whatever key: only the signature can be wrong
        key = fdp.ConsumeBytes(32).ljust(32, b"\0")
        header = SignedHeader(
            node_id=node_id_of(key),
            public_key=key,
            time_ms=fdp.ConsumeIntInRange(0, 10**15 - 1),
            nonce=fdp.ConsumeBytes(16).ljust(16, b"\0").hex(),
            signature=fdp.ConsumeBytes(64).ljust(64, b"\0"),
        )
        value = header.render()
    try:
        parsed = parse_header(value)
    except Unauthenticated:
        return
    if parse_header(parsed.render()) != parsed:
        raise AssertionError(f"header does not read back: {value!r}")
    with contextlib.suppress(Unauthenticated):
        verify(value, "POST", "/v1/files", body_sha256(b""), now=parsed.time_ms / 1000)


_TARGETS: list[Callable[[atheris.FuzzedDataProvider], None]] = [
    fuzz_manifest,
    fuzz_link,
    fuzz_ids,
    fuzz_size,
    fuzz_header,
]


def fuzz_one_input(data: bytes) -> None:
    """libFuzzer's entry point: run one input through the target its first byte picks."""
    fdp = atheris.FuzzedDataProvider(data)
    target = _TARGETS[fdp.ConsumeIntInRange(0, len(_TARGETS) - 1)]
    target(fdp)


def main() -> None:
    """Hand the command line (libFuzzer flags, corpus dirs) to atheris and run."""
    atheris.Setup(sys.argv, fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
