"""Diagnostics: the stable codes, the `Diagnostic` record, and rendering with a caret underline.

Every problem the parser or checker finds is a `Diagnostic` with a stable code (`CD020`), a
severity fixed per code, a message, and a span. `render` prints it the way a compiler does::

    error[CD020]: unknown name `sellr`
      --> trade.contract:12:17
       |
    12 |   -> pay 30% to sellr
       |                 ^^^^^ not declared
       = help: did you mean `seller`?

The table `CODES` is the reference list; docs/dsl.md shows one example per code and
tests/dsl/golden pins the rendered output of each.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from contracts_dsl import limits
from contracts_dsl.source import SourceFile, Span


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: str
    severity: Severity
    title: str


_E = Severity.ERROR
_W = Severity.WARNING

CODES: Final[Mapping[str, CodeInfo]] = MappingProxyType(
    {
        info.code: info
        for info in (
            # Lexical and syntax.
            CodeInfo("CD001", _E, "unexpected character"),
            CodeInfo("CD002", _E, "unexpected token"),
            CodeInfo("CD003", _E, "unexpected end of input"),
            CodeInfo("CD004", _E, "invalid timestamp literal"),
            CodeInfo("CD005", _E, "invalid number literal"),
            CodeInfo("CD006", _E, "source too large"),
            CodeInfo("CD007", _E, "nesting too deep"),
            CodeInfo("CD008", _E, "too many items"),
            CodeInfo("CD009", _E, "invalid text literal"),
            CodeInfo("CD010", _E, "reserved word used as a name"),
            # The contract header.
            CodeInfo("CD011", _E, "missing contract header"),
            CodeInfo("CD012", _E, "misplaced or repeated contract header"),
            CodeInfo("CD013", _E, "unsupported language version"),
            CodeInfo("CD014", _E, "source is not valid UTF-8"),
            CodeInfo("CD015", _E, "name too long"),
            # Names.
            CodeInfo("CD020", _E, "unknown name"),
            CodeInfo("CD021", _E, "duplicate name"),
            CodeInfo("CD022", _E, "unknown event type"),
            CodeInfo("CD023", _E, "unknown attribute"),
            CodeInfo("CD024", _E, "event type declared twice"),
            CodeInfo("CD025", _E, "duplicate attribute"),
            CodeInfo("CD026", _W, "declared but never used"),
            CodeInfo("CD027", _E, "duplicate clause label"),
            # Types.
            CodeInfo("CD030", _E, "wrong kind of parameter"),
            CodeInfo("CD031", _E, "constraint value has the wrong type"),
            CodeInfo("CD032", _E, "operator not valid for this attribute type"),
            CodeInfo("CD033", _E, "attester is not an oracle or a wallet"),
            CodeInfo("CD034", _E, "empty list"),
            # Money.
            CodeInfo("CD040", _E, "unsupported currency"),
            CodeInfo("CD041", _E, "amount finer than the currency's minor unit"),
            CodeInfo("CD042", _E, "currency mismatch"),
            CodeInfo("CD043", _E, "percentage out of range"),
            CodeInfo("CD044", _E, "amount out of range"),
            CodeInfo("CD045", _E, "percentages can exceed 100% on one path"),
            CodeInfo("CD046", _E, "fixed amounts can exceed the escrow on one path"),
            CodeInfo("CD047", _W, "payout currency is the escrow currency"),
            CodeInfo("CD048", _E, "missing escrow"),
            CodeInfo("CD049", _E, "escrow declared twice"),
            # Money flow and timing.
            CodeInfo("CD050", _E, "remainder paid twice on one path"),
            CodeInfo("CD051", _E, "action after the escrow is necessarily empty"),
            CodeInfo("CD052", _E, "condition can never be met"),
            CodeInfo("CD053", _E, "window cannot open in time"),
            CodeInfo("CD054", _E, "window waits for an event no clause accepts"),
            CodeInfo("CD055", _E, "refund to someone other than the funder"),
            CodeInfo("CD056", _W, "no deadline"),
            CodeInfo("CD057", _E, "deadline declared twice"),
            CodeInfo("CD058", _E, "title delivered without payment"),
            CodeInfo("CD059", _E, "title delivered twice on one path"),
            # Oracles and blocks.
            CodeInfo("CD060", _E, "quorum threshold out of range"),
            CodeInfo("CD061", _E, "duplicate quorum member"),
            CodeInfo("CD062", _E, "empty oracle source"),
            CodeInfo("CD063", _W, "`one of` block with fewer than two clauses"),
            # Delivery versus payment.
            CodeInfo("CD064", _E, "title delivered against a payment that can fall short"),
            CodeInfo("CD065", _W, "payment can be starved to zero by a `remainder`"),
            # Time.
            CodeInfo("CD066", _W, "window anchored on an event other patterns accept differently"),
        )
    }
)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a source: stable code, severity, message and where it is.

    `label` is the short text printed under the caret; `notes` and `help` are printed after the
    snippet. `severity` always equals `CODES[code].severity`.
    """

    code: str
    message: str
    span: Span
    path: str = "<input>"
    label: str = ""
    notes: tuple[str, ...] = ()
    help: str | None = None

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def location(self) -> str:
        return f"{self.path}:{self.span.line}:{self.span.column}"

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (used by `check --json`)."""
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "path": self.path,
            **self.span.to_json(),
            "label": self.label,
            "notes": list(self.notes),
            "help": self.help,
        }


def make(
    code: str,
    message: str,
    span: Span,
    source: SourceFile,
    *,
    label: str = "",
    notes: Iterable[str] = (),
    help: str | None = None,
) -> Diagnostic:
    """Build a diagnostic for `source` (asserts that the code is in the table)."""
    assert code in CODES, code
    return Diagnostic(code, message, span, source.path, label, tuple(notes), help)


def sort_key(diagnostic: Diagnostic) -> tuple[int, int, str, str]:
    return (diagnostic.span.start, diagnostic.span.end, diagnostic.code, diagnostic.message)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _printable(char: str) -> str:
    if char == "\t":
        return " "
    if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return "\ufffd"
    return char


def render(diagnostic: Diagnostic, source: SourceFile) -> str:
    """Render one diagnostic with the source line and a caret underline (plain text)."""
    span = diagnostic.span
    line_no = str(span.line)
    gutter = " " * len(line_no)
    raw_line = source.line_text(span.line)
    shown = "".join(_printable(c) for c in raw_line)
    first = span.column - 1
    last = span.end_column - 1 if span.end_line == span.line else len(shown)
    if len(shown) > limits.SNIPPET_CHARS_MAX:
        # Show a window of a very long line around the start of the span.
        window_start = max(0, first - limits.SNIPPET_CHARS_MAX // 3)
        window_end = window_start + limits.SNIPPET_CHARS_MAX
        lead = "…" if window_start > 0 else ""
        tail = "…" if window_end < len(shown) else ""
        shown = lead + shown[window_start:window_end] + tail
        offset = window_start - len(lead)
        first, last = first - offset, min(last - offset, len(shown) - len(tail))
    prefix_width = sum(_char_width(c) for c in shown[:first])
    underlined = shown[first:last]
    carets = max(1, sum(_char_width(c) for c in underlined))
    marker = " " * prefix_width + "^" * carets
    if diagnostic.label:
        marker += " " + diagnostic.label
    lines = [
        f"{diagnostic.severity.value}[{diagnostic.code}]: {diagnostic.message}",
        f"{gutter}--> {diagnostic.location()}",
        f"{gutter} |",
        f"{line_no} | {shown}".rstrip(),
        f"{gutter} | {marker}".rstrip(),
    ]
    lines.extend(f"{gutter} = note: {note}" for note in diagnostic.notes)
    if diagnostic.help:
        lines.append(f"{gutter} = help: {diagnostic.help}")
    return "\n".join(lines)


def render_all(
    diagnostics: Iterable[Diagnostic], source: SourceFile, omitted: Sequence[Diagnostic] = ()
) -> str:
    """Render every diagnostic, blank-line separated, followed by a one-line summary. `omitted`
    are the diagnostics past `limits.DIAGNOSTICS_MAX`: counted in the summary, not shown."""
    items = list(diagnostics)
    blocks = [render(d, source) for d in items]
    if omitted:
        blocks.append(
            f"... and {len(omitted)} more diagnostic(s) not shown: at most "
            f"{limits.DIAGNOSTICS_MAX} are reported for one file (the first not shown is "
            f"{omitted[0].code} at {omitted[0].location()})"
        )
    everything = [*items, *omitted]
    errors = sum(1 for d in everything if d.is_error)
    warnings = len(everything) - errors
    blocks.append(f"{source.path}: {errors} error(s), {warnings} warning(s)")
    return "\n\n".join(blocks)
