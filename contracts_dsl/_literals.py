"""Exact parsing of literal spellings shared by the parser and parameter binding.

Each function returns the value or an error message (a `str`); none raises.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Final

from contracts_dsl import limits

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_DECIMAL: Final = re.compile(r"-?\d+(?:\.\d+)?")
_COMPACT_DURATION: Final = re.compile(r"(\d{1,12})([wdhms])")
_ISO_DURATION: Final = re.compile(
    r"P(?:(\d{1,12})W|(?:(\d{1,12})D)?(?:T(?:(\d{1,12})H)?(?:(\d{1,12})M)?(?:(\d{1,12})S)?)?)"
)
_UNIT_SECONDS: Final = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

DSL_DURATION_UNIT_SECONDS: Final = {
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
}


def timestamp_us(text: str) -> int | str:
    """RFC 3339 with an explicit offset (`Z` or `+08:00`) to Unix microseconds."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return "expected an RFC 3339 timestamp with an offset, like 2026-12-31T00:00:00+08:00"
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    if not limits.TIMESTAMP_YEAR_MIN <= year <= limits.TIMESTAMP_YEAR_MAX:
        return (
            f"the year must be between {limits.TIMESTAMP_YEAR_MIN} and {limits.TIMESTAMP_YEAR_MAX}"
        )
    offset = dt.timedelta(0)
    if match.group(9) is not None:
        offset_hours, offset_minutes = int(match.group(10)), int(match.group(11))
        if offset_hours > 23 or offset_minutes > 59:
            return "the UTC offset is out of range"
        offset = dt.timedelta(hours=offset_hours, minutes=offset_minutes)
        if match.group(9) == "-":
            offset = -offset
    try:
        moment = dt.datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=dt.timezone(offset),
        )
    except ValueError as error:
        return f"not a valid date or time ({error})"
    micros = (moment - _EPOCH) // dt.timedelta(microseconds=1)
    if micros < 0:
        return "the timestamp is before 1970-01-01T00:00:00Z"
    return micros


def datetime_us(moment: dt.datetime) -> int | str:
    """An aware datetime to Unix microseconds."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return "the datetime has no time zone; pass an aware datetime"
    micros = (moment - _EPOCH) // dt.timedelta(microseconds=1)
    if micros < 0:
        return "the timestamp is before 1970-01-01T00:00:00Z"
    return micros


def format_us(micros: int) -> str:
    """Unix microseconds as an RFC 3339 UTC string (display only; never raises)."""
    try:
        moment = _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        return f"{micros} µs after 1970-01-01T00:00:00Z"
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def decimal(text: str) -> Decimal | str:
    """A plain decimal (`-12.50`); no exponents, no underscores, bounded digits."""
    if _DECIMAL.fullmatch(text) is None:
        return "expected a decimal number like 12.50"
    if sum(c.isdigit() for c in text) > limits.NUMBER_DIGITS_MAX:
        return f"a number may have at most {limits.NUMBER_DIGITS_MAX} digits"
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return "expected a decimal number like 12.50"


def duration_seconds(text: str) -> int | str:
    """A duration parameter value: compact `14d`/`36h`/`90m`/`2w`/`30s` or ISO 8601 `P14D`,
    `PT36H`, `P1DT12H`, `P2W` (no years or months: they have no fixed length)."""
    seconds: int
    compact = _COMPACT_DURATION.fullmatch(text)
    if compact is not None:
        seconds = int(compact.group(1)) * _UNIT_SECONDS[compact.group(2)]
    else:
        iso = _ISO_DURATION.fullmatch(text)
        if iso is None or text in ("P", "PT") or text.endswith("T"):
            return 'expected a duration like "14d", "36h", "90m" or ISO 8601 "P14D", "PT36H"'
        weeks, days, hours, minutes, secs = (int(g) if g else 0 for g in iso.groups())
        seconds = weeks * 7 * 86400 + days * 86400 + hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        return "a duration must be longer than zero"
    if seconds > limits.DURATION_SECONDS_MAX:
        return f"a duration may be at most {limits.DURATION_SECONDS_MAX} seconds"
    return seconds


def format_seconds(seconds: int) -> str:
    """Display a duration in the largest whole unit: 1209600 -> `14 days`."""
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


_ESCAPES: Final = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def unescape_text(raw: str) -> str | tuple[str, int]:
    """The value of a text literal (`raw` includes the quotes), or (message, offset in raw)."""
    body = raw[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            escaped = body[index + 1] if index + 1 < len(body) else ""
            if escaped not in _ESCAPES:
                return (f'unknown escape `\\{escaped}`; use \\", \\\\, \\n or \\t', index + 1)
            out.append(_ESCAPES[escaped])
            index += 2
            continue
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return ("control characters are not allowed in text; use \\n or \\t", index + 1)
        out.append(char)
        index += 1
    return "".join(out)


def quote_text(value: str) -> str:
    """The canonical spelling of a text value (inverse of `unescape_text`)."""
    body = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{body}"'
