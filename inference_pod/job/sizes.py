"""The one size parser: '2Gi', '512Mi', '2GiB', '1G', '1048576' -> bytes.

Kubernetes quantity suffixes mean what they mean there (Ki, Mi, Gi, Ti, Pi binary; k, M, G, T, P decimal), so
an OcrJob's `targetShardSize` and `ocrjob run --target-shard-size` read the same text the same way; the
byte-unit spellings KiB..PiB (binary) and kB/KB..PB (decimal) are accepted too.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KkMGTP]i?B?|kB|B)?\s*$")
_BINARY = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_DECIMAL = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
HINT = "write e.g. 512MiB, 2Gi or a number of bytes"


class SizeError(ValueError):
    """Not a size; the message says how to write one."""


def parse_size(text: str) -> int:
    match = _SIZE.match(text) if isinstance(text, str) else None
    if not match:
        raise SizeError(f"size {text!r} is not understood: {HINT}")
    number, unit = match.group(1), match.group(2) or "B"
    if unit == "B":
        factor = 1
    else:
        table = _BINARY if "i" in unit else _DECIMAL
        factor = table[unit[0].upper()]
    try:
        return int(Decimal(number) * factor)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already guards this
        raise SizeError(f"size {text!r} is not understood: {HINT}") from exc
