"""A strict, versioned, human-readable byte encoding for signed documents.

A document is a header line naming its kind and version, then one ``name: value`` line per field in
a fixed order, each line ending in ``\\n``::

    condpay.transfer.v2
    source: w_3m2k...
    target: w_7q1c...

Exactly one byte string encodes a given document: the decoder rejects unknown, missing, repeated or
reordered fields, non-canonical integers (leading zeros, ``+``), characters outside a field's
alphabet, and anything after the last line. The header gives domain separation: bytes signed as
one kind can never decode as another, and a format's earlier versions (``retired`` headers) are
refused with a message that says to sign the current one.

A :class:`DocumentFormat` compiles its whole grammar into one regular expression, so decoding a
valid document is a single match (it is on the hot path of every transfer); only a document that
fails to match is walked line by line, to say exactly what is wrong.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from wallets.currencies import INT64_MAX
from wallets.errors import MalformedInstruction

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
TEXT_CHARS_MAX: Final = 140


class Field(enum.Enum):
    """What a field may hold, as a pattern over the raw bytes."""

    ID = rb"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
    OPTIONAL_ID = rb"(?:[A-Za-z0-9][A-Za-z0-9._:@-]{0,127})?"  # an ID, or empty
    UINT = rb"0|[1-9][0-9]{0,18}"  # canonical, and within int64 once checked
    TEXT = rb"[^\x00-\x1f\x7f]*"  # printable UTF-8, at most TEXT_CHARS_MAX characters
    CURRENCY = rb"[A-Z]{3}"
    HEX256 = rb"[0-9a-f]{64}"  # a SHA-256 digest in lowercase hex
    # Up to 16 IDs separated by commas (an ID never holds one), or empty.
    ID_LIST = (
        rb"(?:[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}(?:,[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}){0,15})?"
    )
    # An authenticated caller, ``<role>/<id>``: the one identity that may submit a document.
    CALLER = (
        rb"(?:central_bank|institution|platform|financier|oracle|auditor)"
        rb"/[a-z0-9][a-z0-9._-]{0,63}"
    )


Value = str | int


@dataclass(frozen=True)
class DocumentFormat:
    header: str
    fields: tuple[tuple[str, Field], ...]
    # Headers of earlier versions of this document, refused with a message that says so.
    retired: tuple[str, ...] = ()
    _regex: re.Pattern[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = b"".join(b"%s: (%s)\n" % (name.encode(), kind.value) for name, kind in self.fields)
        pattern = re.escape(self.header.encode()) + b"\n" + body
        object.__setattr__(self, "_regex", re.compile(pattern))

    def encode(self, values: Mapping[str, Value]) -> bytes:
        lines = [self.header]
        for name, _ in self.fields:
            text = str(values[name])
            if "\n" in text:
                raise MalformedInstruction(f"{name} may not contain a newline", field=name)
            try:
                text.encode()
            except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it, no document
                raise MalformedInstruction(
                    f"{name} is not Unicode text (a lone surrogate)", field=name
                ) from None
            lines.append(f"{name}: {text}")
        return ("\n".join(lines) + "\n").encode()

    def decode(self, data: bytes) -> dict[str, Value]:
        """The field values (ints for UINT fields); MalformedInstruction, naming the field where
        it can, for anything but the one canonical encoding of a document of this format."""
        match = self._regex.fullmatch(data)
        if match is None:
            self._explain(data)  # raises with the precise reason
            raise MalformedInstruction(f"not a canonical {self.header} document")
        values: dict[str, Value] = {}
        for (name, kind), raw in zip(self.fields, match.groups(), strict=True):
            if kind is Field.UINT:
                number = int(raw)
                if number > INT64_MAX:
                    raise MalformedInstruction(f"{name} is beyond int64", field=name)
                values[name] = number
            elif kind is Field.TEXT:
                values[name] = _text(raw, name)
            else:
                values[name] = raw.decode("ascii")
        return values

    def _explain(self, data: bytes) -> None:
        try:
            text = data.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise MalformedInstruction("the document is not UTF-8") from None
        if not text.endswith("\n"):
            raise MalformedInstruction("the document must end with a newline")
        lines = text[:-1].split("\n")
        if lines[0] in self.retired:
            raise MalformedInstruction(
                f"the {lines[0]} format is retired: sign a {self.header} document"
            )
        if lines[0] != self.header:
            raise MalformedInstruction(
                f"expected a {self.header!r} document, got {lines[0][:64]!r}"
            )
        if len(lines) - 1 != len(self.fields):
            raise MalformedInstruction(
                f"{self.header} has {len(self.fields)} fields, got {len(lines) - 1}"
            )
        for (name, kind), line in zip(self.fields, lines[1:], strict=True):
            got, sep, value = line.partition(": ")
            if not sep or got != name:
                raise MalformedInstruction(f"expected field {name!r}, got {line[:64]!r}")
            if not re.fullmatch(kind.value, value.encode()):
                raise MalformedInstruction(f"{name} is not a valid {kind.name.lower()}", field=name)


def _text(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedInstruction(f"{name} is not UTF-8", field=name) from None
    if len(text) > TEXT_CHARS_MAX:
        raise MalformedInstruction(
            f"{name} must be at most {TEXT_CHARS_MAX} printable characters", field=name
        )
    return text
