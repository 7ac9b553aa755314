"""Human sizes, parsed and printed in one place.

``parse_size("4MiB") == 4 * 1024**2`` and ``parse_size("10GB") == 10 * 1000**3``: binary
suffixes (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (kB, MB, GB, TB) powers of 1000,
a bare number or ``B`` is bytes. Case and a space before the unit are ignored ("4 mib"). The
single letters K, M, G, T are read as binary, as ``dd`` and most users mean them.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

from p2pshare.core.errors import InvalidSize

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
    "p": 1024**5,
    "pib": 1024**5,
    "pb": 1000**5,
}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")
MAX_SIZE = 2**62


def parse_size(value: str | int) -> int:
    """Return the number of bytes ``value`` names; raise :class:`InvalidSize` if it does not parse.

    Ints pass through (after a range check). Fractions are allowed when they come to whole
    bytes ("1.5KiB" is 1536); "1.3B" is refused.
    """
    if isinstance(value, bool):
        raise InvalidSize(f"not a size: {value!r}")
    if isinstance(value, int):
        if not 0 <= value <= MAX_SIZE:
            raise InvalidSize(f"size out of range: {value}")
        return value
    if not isinstance(value, str):
        raise InvalidSize(f"not a size: {value!r}")
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise InvalidSize(f"not a size: {value!r} (try 4MiB, 10GB or 1048576)")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise InvalidSize(
            f"unknown size unit {unit!r} in {value!r} "
            "(use B, KiB, MiB, GiB, TiB, PiB, kB, MB, GB, TB, PB)"
        )
    try:
        # exact: enough digits for every digit given and the unit (the default context has 28)
        with localcontext() as ctx:
            ctx.prec = len(number) + 20
            exact = Decimal(number) * factor
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise InvalidSize(f"not a size: {value!r}") from exc
    if exact != exact.to_integral_value():
        raise InvalidSize(f"size {value!r} is not a whole number of bytes")
    result = int(exact)
    if result > MAX_SIZE:
        raise InvalidSize(f"size out of range: {value!r}")
    return result


def format_size(n: int) -> str:
    """Return ``n`` bytes as a short binary-unit string: 0 B, 1023 B, 4.0 MiB, 1.5 GiB."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover
