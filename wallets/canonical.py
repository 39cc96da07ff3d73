"""A strict, versioned, human-readable byte encoding for signed documents.

A document is a header line naming its kind and version, then one ``name: value`` line per field in
a fixed order, each line ending in ``\\n``::

    condpay.transfer.v1
    source: w_3m2k...
    target: w_7q1c...

Exactly one byte string encodes a given document: the decoder rejects unknown, missing, repeated or
reordered fields, non-canonical integers (leading zeros, ``+``), characters outside a field's
alphabet, and anything after the last line. The header gives domain separation: bytes signed as
one kind can never decode as another.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from wallets.currencies import INT64_MAX
from wallets.errors import MalformedInstruction

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_CANONICAL_UINT: Final = re.compile(r"0|[1-9][0-9]{0,18}")
_TEXT_FORBIDDEN: Final = re.compile(r"[\x00-\x1f\x7f]")
TEXT_CHARS_MAX: Final = 140


def encode(header: str, fields: Sequence[tuple[str, str]]) -> bytes:
    lines = [header, *(f"{name}: {value}" for name, value in fields)]
    for line in lines:
        if "\n" in line:
            raise MalformedInstruction(f"a field may not contain a newline: {line!r}")
    return ("\n".join(lines) + "\n").encode()


def decode(data: bytes, header: str, names: Sequence[str]) -> dict[str, str]:
    """The field values of a document of kind ``header`` with exactly the fields ``names``."""
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedInstruction("the instruction is not UTF-8") from None
    if not text.endswith("\n"):
        raise MalformedInstruction("the instruction must end with a newline")
    lines = text[:-1].split("\n")
    if lines[0] != header:
        raise MalformedInstruction(f"expected a {header!r} instruction, got {lines[0][:64]!r}")
    if len(lines) - 1 != len(names):
        raise MalformedInstruction(f"{header} has {len(names)} fields, got {len(lines) - 1}")
    values: dict[str, str] = {}
    for expected, line in zip(names, lines[1:], strict=True):
        name, sep, value = line.partition(": ")
        if not sep or name != expected:
            raise MalformedInstruction(f"expected field {expected!r}, got {line[:64]!r}")
        values[name] = value
    return values


def parse_id(value: str, field: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise MalformedInstruction(f"{field} is not a valid identifier", field=field)
    return value


def parse_uint(value: str, field: str) -> int:
    """A canonical non-negative integer that fits int64; anything else is malformed."""
    if not _CANONICAL_UINT.fullmatch(value) or int(value) > INT64_MAX:
        raise MalformedInstruction(
            f"{field} is not a canonical integer in int64 range", field=field
        )
    return int(value)


def parse_text(value: str, field: str) -> str:
    if len(value) > TEXT_CHARS_MAX or _TEXT_FORBIDDEN.search(value):
        raise MalformedInstruction(
            f"{field} must be at most {TEXT_CHARS_MAX} printable characters", field=field
        )
    return value
