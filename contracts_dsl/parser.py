"""Source text to the typed AST (`ast_nodes`), with syntax diagnostics and error recovery.

The grammar is `contract.lark` (LALR, contextual lexer). `parse` never raises: it reports

* CD006 when the source is larger than `limits.SOURCE_BYTES_MAX` (nothing else is parsed),
* CD007 when brackets nest deeper than `limits.NESTING_DEPTH_MAX` (nothing else is parsed),
* CD001/CD002/CD003 for syntax errors, after which it recovers at the next statement so that
  every broken statement of a file is reported in one run,
* CD004/CD005/CD009/CD010/CD008 for malformed literals, reserved words and count limits.

Recovery blanks the broken statement (keeping every offset, so later spans stay exact) and parses
again; names declared in blanked statements are remembered in `ParseResult.recovered_names` so the
checker does not report them as unknown.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, Final

import lark
from lark.exceptions import UnexpectedInput, UnexpectedToken

from contracts_dsl import _literals, limits
from contracts_dsl import ast_nodes as a
from contracts_dsl.diagnostics import Diagnostic, make, sort_key
from contracts_dsl.source import SourceFile, Span

_STATEMENT_START: Final = re.compile(
    r"^[ \t]*(?:(contract|param|oracle|event|escrow|deadline|when|clause|one)\b|(\}))", re.M
)
_LABEL_ONLY: Final = re.compile(r"\s*clause\s+[a-z_][a-z0-9_]*\s*(?:#[^\n]*\s*)*")
_DECLARED_NAME: Final = re.compile(
    r"^[ \t]*(?:(?:param|oracle|clause)[ \t]+([a-z_][a-z0-9_]*)|event[ \t]+([a-z][a-z0-9_.]*))",
    re.M,
)

_PLAIN_TEXT: Final = re.compile(r'"[^\\\x00-\x1f\x7f"]*"')
"""A text literal without escapes or control characters: its value is what is between the quotes."""

_SINGLETON: Final = re.compile(r"^[ \t]*(contract|escrow|deadline)\b", re.M)
"""Statements that may appear once; recorded by keyword when recovery blanks them."""

_TERMINAL_LABELS: Final = {
    "NAME": "a name",
    "TEXT": "a text literal",
    "NUMBER": "a number",
    "CURRENCY": "a currency code",
    "EVENT_TYPE": "an event type like `customs.cleared`",
    "TIMESTAMP": "a timestamp",
    "DURATION_UNIT": "a time unit (`minutes`, `hours`, `days`, `weeks`)",
    "COMPARE": "a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
    "$END": "the end of the file",
}


@functools.cache
def _lark() -> lark.Lark:
    grammar = importlib.resources.files("contracts_dsl").joinpath("contract.lark").read_text()
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        lexer_callbacks={"COMMENT": _CommentSink.collect},
    )


class _CommentSink:
    """Collects comment tokens during one parse (lark calls back into it from the lexer).

    The shared parser calls one callback, so the tokens go to a per-thread list."""

    _local: ClassVar[threading.local] = threading.local()

    @classmethod
    def reset(cls) -> None:
        cls._local.tokens = []

    @classmethod
    def take(cls) -> list[lark.Token]:
        tokens: list[lark.Token] = getattr(cls._local, "tokens", [])
        cls._local.tokens = []
        return tokens

    @classmethod
    def collect(cls, token: lark.Token) -> lark.Token:
        if not hasattr(cls._local, "tokens"):
            cls._local.tokens = []
        cls._local.tokens.append(token)
        return token


@functools.cache
def keywords() -> frozenset[str]:
    """The reserved words: every keyword of the grammar that is spelled like a name."""
    name = re.compile(r"[a-z_][a-z0-9_]*")
    found: set[str] = set()
    for terminal in _lark().terminals:
        pattern = terminal.pattern
        if isinstance(pattern, lark.lexer.PatternStr) and name.fullmatch(pattern.value):
            found.add(pattern.value)
    return frozenset(found)


@functools.cache
def _terminal_display() -> dict[str, str]:
    shown = dict(_TERMINAL_LABELS)
    for terminal in _lark().terminals:
        pattern = terminal.pattern
        if isinstance(pattern, lark.lexer.PatternStr):
            shown[terminal.name] = f"`{pattern.value}`"
    return shown


@dataclass(frozen=True, slots=True)
class ParseResult:
    """The outcome of `parse`: the tree (None when nothing could be parsed) and diagnostics."""

    source: SourceFile
    tree: a.ContractAst | None
    diagnostics: tuple[Diagnostic, ...]
    recovered_names: frozenset[str] = field(default=frozenset())
    """Names declared in statements blanked by error recovery, plus the keywords `contract`,
    `escrow` and `deadline` when such a statement was blanked."""

    @property
    def syntax_ok(self) -> bool:
        return self.tree is not None and not any(d.is_error for d in self.diagnostics)


def normalise_line_ends(text: str) -> str:
    """Lone carriage returns (classic Mac line ends) become line feeds; `\r\n` stays. The text
    keeps its length, so every offset and span stays valid for the original text."""
    if "\r" not in text:
        return text
    return _LONE_CR.sub("\n", text)


_LONE_CR: Final = re.compile(r"\r(?!\n)")


def parse(text: str, path: str = "<input>") -> ParseResult:
    """Parse contract source text. Never raises; see the module docstring for what is reported."""
    text = normalise_line_ends(text)
    source = SourceFile(text, path)
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limits.SOURCE_BYTES_MAX:
        diagnostic = make(
            "CD006",
            f"the source is {size} bytes; the limit is {limits.SOURCE_BYTES_MAX} bytes",
            source.span(0, 0),
            source,
            label="file too large",
        )
        return ParseResult(source, None, (diagnostic,))
    working, odd = _odd_characters(source)
    brackets = _scan_brackets(working)
    if brackets.too_deep is not None:
        too_deep = brackets.too_deep
        diagnostic = make(
            "CD007",
            f"brackets nest deeper than {limits.NESTING_DEPTH_MAX} levels",
            source.span(too_deep, too_deep + 1),
            source,
            label="too deep",
            help="split the condition into simpler clauses",
        )
        return ParseResult(source, None, (*odd, diagnostic))
    return _parse_with_recovery(source, working, odd, brackets.unclosed)


# -- characters that look like something they are not -----------------------------------------

_BIDI_CONTROLS: Final = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Bidirectional controls: they reorder how text is displayed (Trojan Source, CVE-2021-42574)."""
_INVISIBLE: Final = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")
"""Zero-width and invisible characters: two names or texts that look equal would differ."""
_PLAIN_WHITESPACE: Final = frozenset(" \t\n\r\f")


def char_name(char: str) -> str:
    """`U+00A0 NO-BREAK SPACE` (for messages)."""
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')}"


def suspicious_in_text(value: str) -> tuple[int, str] | None:
    """The first bidirectional control or invisible character in a text value, with why."""
    for index, char in enumerate(value):
        if char in _BIDI_CONTROLS:
            return index, (
                f"text contains {char_name(char)}, a bidirectional control that can make the "
                "contract display differently from what it does"
            )
        if char in _INVISIBLE:
            return index, (
                f"text contains {char_name(char)}, an invisible character: two texts that look "
                "equal would not be"
            )
    return None


def _odd_characters(source: SourceFile) -> tuple[str, list[Diagnostic]]:
    """The text to parse (odd spaces outside text literals and comments, and a leading byte
    order mark, replaced by plain spaces so nothing else is reported because of them), and a
    diagnostic for each odd character. Bidirectional controls are refused everywhere, comments
    included; invisible characters and spaces other than space and tab outside text literals and
    comments; inside text literals the parser checks them (CD009)."""
    text = source.text
    if text.isascii():
        return text, []
    chars = list(text)
    found: list[Diagnostic] = []
    if chars and chars[0] == "\ufeff":
        chars[0] = " "  # a UTF-8 byte order mark: accepted
    index = 1 if text.startswith("\ufeff") else 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            index += 1
            while index < length and text[index] not in '"\n':
                index += 2 if text[index] == "\\" else 1
        elif char == "#":
            while index < length and text[index] != "\n":
                if text[index] in _BIDI_CONTROLS:
                    found.append(_odd(source, index, "in a comment"))
                    chars[index] = " "
                index += 1
            continue
        elif (
            char in _BIDI_CONTROLS
            or char in _INVISIBLE
            or (char.isspace() and char not in _PLAIN_WHITESPACE)
        ):
            found.append(_odd(source, index, ""))
            chars[index] = " "
        index += 1
    return "".join(chars), found


def _odd(source: SourceFile, offset: int, where: str) -> Diagnostic:
    char = source.text[offset]
    if char in _BIDI_CONTROLS:
        kind, label = "a bidirectional control character", "reorders how the text is displayed"
        help_text = "remove it: it can make the contract read differently from what it does"
    elif char in _INVISIBLE:
        kind, label = "an invisible character", "invisible"
        help_text = "remove it"
    else:
        kind, label = "a space character other than space or tab", "looks like a space"
        help_text = "replace it with a plain space"
    suffix = f" {where}" if where else ""
    return make(
        "CD001",
        f"unexpected character {char_name(char)}{suffix}: {kind}",
        source.span(offset, offset + 1),
        source,
        label=label,
        help=help_text,
    )


@dataclass(frozen=True, slots=True)
class _Brackets:
    too_deep: int | None
    """Offset of the first bracket nested deeper than the limit."""
    unclosed: tuple[int, ...]
    """Offsets of `(` and `[` still open when the next statement starts (or the file ends)."""


_STATEMENT_KEYWORD: Final = re.compile(
    r"(?:contract|param|oracle|event|escrow|deadline|when|clause|one)(?![\w.])"
)


_BRACKET_TOKENS: Final = re.compile(r'"(?:[^"\\\n]|\\[\s\S])*"?|#[^\n]*|[()\[\]{}]|\n[ \t]*')


def _scan_brackets(text: str) -> _Brackets:
    """Bracket nesting, skipping strings and comments. `(` and `[` never span statements: one
    still open when a new statement starts at the beginning of a line is unclosed, and is not
    counted towards the nesting of what follows (only `{` of `one of` holds statements)."""
    stack: list[int] = []
    unclosed: list[int] = []
    for match in _BRACKET_TOKENS.finditer(text):
        token = match.group()
        first = token[0]
        if first == "\n":
            index = match.end()
            if (
                index < len(text)
                and text[index].islower()
                and any(text[i] in "([" for i in stack)
                and _STATEMENT_KEYWORD.match(text, index)
            ):
                unclosed.extend(i for i in stack if text[i] in "([")
                stack = [i for i in stack if text[i] == "{"]
        elif first in "([{":
            stack.append(match.start())
            if len(stack) > limits.NESTING_DEPTH_MAX:
                return _Brackets(match.start(), tuple(unclosed))
        elif first in ")]}" and stack:
            stack.pop()
    unclosed.extend(i for i in stack if text[i] in "([")
    return _Brackets(None, tuple(sorted(unclosed)))


def _statement_starts(text: str) -> tuple[list[int], list[int]]:
    """Offsets where statements start, and offsets of closing braces (recovery boundaries)."""
    starts: list[int] = []
    braces: list[int] = []
    for match in _STATEMENT_START.finditer(text):
        if match.group(2) is not None:
            braces.append(match.start(2))
            continue
        offset = match.start(1)
        if match.group(1) == "when" and starts:
            between = text[starts[-1] : offset]
            if _LABEL_ONLY.fullmatch(between):
                continue  # `clause x` directly followed by its `when`: one statement
        starts.append(offset)
    return starts, braces


def _error_offset(error: UnexpectedInput, text: str) -> tuple[int, int]:
    """The span `[start, end)` an error points at."""
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            end = len(text.rstrip())
            return end, end
        start = token.start_pos if token.start_pos is not None else 0
        end = token.end_pos if token.end_pos is not None else start + 1
        return start, max(end, start + 1)
    start = error.pos_in_stream if error.pos_in_stream is not None else 0
    return start, start + 1


def _syntax_diagnostic(
    error: UnexpectedInput, working: SourceFile, source: SourceFile
) -> Diagnostic:
    """The diagnostic for a lark error raised while parsing `working` (`source` with blanks)."""
    text = working.text
    start, end = _error_offset(error, text)
    span = source.span(start, end)
    if isinstance(error, UnexpectedToken):
        expected = _describe_expected(error.expected)
        if error.token.type == "$END":
            return make(
                "CD003",
                "the file ends in the middle of a statement",
                span,
                source,
                label=f"expected {expected}",
            )
        shown = str(error.token.value)
        return make(
            "CD002",
            f"unexpected `{_clip(shown)}`",
            span,
            source,
            label=f"expected {expected}",
        )
    char = text[start] if start < len(text) else ""
    if char == '"':
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        return make(
            "CD009",
            "unterminated text literal",
            source.span(start, line_end),
            source,
            label="this text has no closing quote",
            help='text literals end on the same line: "like this"',
        )
    allowed = getattr(error, "allowed", None) or set()
    label = f"expected {_describe_expected(allowed)}" if allowed else "not part of the language"
    printable = char if char.isprintable() else f"U+{ord(char):04X}" if char else "end of input"
    return make("CD001", f"unexpected character `{printable}`", span, source, label=label)


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


_STATEMENT_TERMINALS: Final = frozenset(
    {"CONTRACT", "PARAM", "ORACLE", "EVENT", "ESCROW", "DEADLINE", "WHEN", "CLAUSE", "ONE"}
)


def _describe_expected(names: Sequence[str] | set[str] | frozenset[str]) -> str:
    display = _terminal_display()
    wanted = {name for name in names if name not in ("WS", "COMMENT")}
    statement = wanted & _STATEMENT_TERMINALS
    rest = wanted - _STATEMENT_TERMINALS - {"RBRACE"}
    shown = sorted({display.get(name, name) for name in rest})
    if statement and len(statement) >= 3:
        if not shown:
            return "a statement (`param`, `oracle`, `event`, `escrow`, `deadline`, `when`, ...)"
        return ", ".join(shown) + " or a new statement"
    shown = sorted({display.get(name, name) for name in wanted})
    if not shown:
        return "something else"
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " or " + shown[-1]


def _blank(text: str, start: int, end: int) -> str:
    middle = "".join(c if c == "\n" else " " for c in text[start:end])
    return text[:start] + middle + text[end:]


def _parse_with_recovery(
    source: SourceFile, working: str, odd: list[Diagnostic], unclosed: tuple[int, ...]
) -> ParseResult:
    text = working
    starts, braces = _statement_starts(text)
    boundaries = sorted(set(starts) | set(braces))
    diagnostics: list[Diagnostic] = []
    recovered: set[str] = set()
    while True:
        _CommentSink.reset()
        try:
            tree = _lark().parse(working)
        except UnexpectedInput as error:
            if len(diagnostics) >= limits.SYNTAX_ERRORS_MAX:
                return _unparsed(source, diagnostics, odd, recovered)
            diagnostic = _syntax_diagnostic(error, SourceFile(working, source.path), source)
            diagnostic = _blame_unclosed(diagnostic, unclosed, starts, source)
            repeated_end = diagnostic.code == "CD003" and any(
                d.code == "CD003" for d in diagnostics
            )
            if diagnostic not in diagnostics and not repeated_end:
                diagnostics.append(diagnostic)
            region = _recovery_region(working, diagnostic.span.start, starts, boundaries)
            if region is None:
                return _unparsed(source, diagnostics, odd, recovered)
            for match in _DECLARED_NAME.finditer(text[region[0] : region[1]]):
                recovered.add(match.group(1) or match.group(2))
            for match in _SINGLETON.finditer(text[region[0] : region[1]]):
                recovered.add(match.group(1))
            working = _blank(working, *region)
            continue
        break
    comments = tuple(
        a.Comment(str(token.value), source.span(token.start_pos or 0, token.end_pos or 0))
        for token in _CommentSink.take()
    )
    builder = _Builder(source)
    ast = builder.build(tree, comments)
    diagnostics.extend(builder.diagnostics)
    diagnostics.extend(odd)
    diagnostics.sort(key=sort_key)
    return ParseResult(source, ast, tuple(diagnostics), frozenset(recovered))


def _unparsed(
    source: SourceFile, diagnostics: list[Diagnostic], odd: list[Diagnostic], recovered: set[str]
) -> ParseResult:
    found = sorted([*diagnostics, *odd], key=sort_key)
    return ParseResult(source, None, tuple(found), frozenset(recovered))


def _blame_unclosed(
    diagnostic: Diagnostic, unclosed: tuple[int, ...], starts: list[int], source: SourceFile
) -> Diagnostic:
    """A syntax error in a statement with a `(` or `[` that is never closed is reported where
    that bracket opened (the parser only notices later, often on the next line)."""
    if not unclosed or diagnostic.code not in ("CD002", "CD003"):
        return diagnostic
    at = diagnostic.span.start
    statement = max((s for s in starts if s <= at), default=0)
    # The error is in the statement holding the bracket, or at the start of the next one.
    opened = [o for o in unclosed if o < at and (o >= statement or at in starts)]
    if at in starts:
        previous = max((s for s in starts if s < at), default=0)
        opened = [o for o in opened if o >= previous]
    if not opened:
        return diagnostic
    bracket = opened[-1]
    char = source.text[bracket]
    closer = ")" if char == "(" else "]"
    where = f"{diagnostic.span.line}:{diagnostic.span.column}"
    if diagnostic.code == "CD003":
        note = "the file ends before it is closed"
    else:
        note = f"the parser stopped at {where}: {diagnostic.message}, {diagnostic.label}"
    return make(
        "CD002",
        f"`{char}` is never closed",
        source.span(bracket, bracket + 1),
        source,
        label=f"this `{char}` has no matching `{closer}`",
        notes=[note],
        help=f"add the missing `{closer}`",
    )


def _recovery_region(
    working: str, error_at: int, starts: list[int], boundaries: list[int]
) -> tuple[int, int] | None:
    """The text to blank so that parsing can go on after an error, or None when stuck."""
    before = [s for s in starts if s <= error_at]
    after = [b for b in boundaries if b > error_at]
    next_start = after[0] if after else len(working)
    if error_at in boundaries:
        # The token at a statement start was unexpected: the previous statement is incomplete.
        earlier = [s for s in starts if s < error_at]
        region_start = earlier[-1] if earlier else _line_start(working, error_at)
        candidates = [(region_start, error_at), (error_at, next_start)]
    else:
        region_start = before[-1] if before else _line_start(working, error_at)
        candidates = [(region_start, next_start)]
    line_end = working.find("\n", error_at)
    candidates.append((error_at, len(working) if line_end < 0 else line_end))
    for start, end in candidates:
        if working[start:end].strip():
            return start, end
    return None


def _line_start(text: str, offset: int) -> int:
    return text.rfind("\n", 0, offset) + 1


class _Builder:
    """Turns a lark parse tree into AST nodes, validating literals and limits."""

    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self._limit_reported: set[str] = set()
        self._clause_count = 0

    # -- helpers --------------------------------------------------------------------------------

    def _span(self, node: lark.Tree[lark.Token] | lark.Token) -> Span:
        # lark already counted lines and columns the way `SourceFile` does (code points, lines
        # end at `\n`, the text it parsed has the same offsets): take them instead of searching.
        if isinstance(node, lark.Token):
            where: lark.Token | lark.tree.Meta = node
        else:
            where = node.meta
            if getattr(where, "empty", True):
                return self.source.span(0, 0)
        start, end = where.start_pos, where.end_pos
        line, column = where.line, where.column
        end_line, end_column = where.end_line, where.end_column
        if None in (start, end, line, column, end_line, end_column):
            return self.source.span(start or 0, end or 0)
        assert start is not None
        assert end is not None
        assert line is not None
        assert column is not None
        assert end_line is not None
        assert end_column is not None
        return Span(start, end, line, column, end_line, end_column)

    def _report(self, code: str, message: str, span: Span, **kwargs: str) -> None:
        label = kwargs.get("label", "")
        help_text = kwargs.get("help")
        self.diagnostics.append(make(code, message, span, self.source, label=label, help=help_text))

    def _limit(self, what: str, items: Sequence[object], spans: Sequence[Span], limit: int) -> None:
        if len(items) > limit and what not in self._limit_reported:
            self._limit_reported.add(what)
            self._report(
                "CD008",
                f"too many {what}: {len(items)}; the limit is {limit}",
                spans[limit],
                label="over the limit",
            )

    def _ident(self, token: lark.Token) -> a.Ident:
        ident = a.Ident(str(token.value), self._span(token))
        self._check_length(ident)
        if token.type == "NAME" and ident.name in keywords():
            self._report(
                "CD010",
                f"`{ident.name}` is a reserved word and cannot be used as a name",
                ident.span,
                label="reserved word",
                help=f"pick another name, e.g. `{ident.name}_`",
            )
        return ident

    def _event_type(self, token: lark.Token) -> a.Ident:
        ident = a.Ident(str(token.value), self._span(token))
        self._check_length(ident)
        return ident

    def _check_length(self, ident: a.Ident) -> None:
        if len(ident.name) > limits.NAME_CHARS_MAX:
            self._report(
                "CD015",
                f"the name is {len(ident.name)} characters long; the limit is "
                f"{limits.NAME_CHARS_MAX}",
                ident.span,
                label="too long",
                help="use a shorter name",
            )

    def _text(self, token: lark.Token) -> a.TextLit:
        raw = str(token.value)
        span = self._span(token)
        plain = _PLAIN_TEXT.fullmatch(raw)  # most literals: nothing to unescape or refuse
        value = raw[1:-1] if plain else _literals.unescape_text(raw)
        if isinstance(value, tuple):
            message, offset = value
            at = span.start + offset
            self._report("CD009", message, self.source.span(at, at + 1), label="here")
            return a.TextLit(raw[1:-1], raw, span)
        if len(value) > limits.TEXT_LITERAL_CHARS_MAX:
            self._report(
                "CD009",
                f"text is {len(value)} characters long; the limit is "
                f"{limits.TEXT_LITERAL_CHARS_MAX}",
                span,
                label="too long",
            )
        elif not value.isascii():
            suspicious = suspicious_in_text(raw)
            if suspicious is not None:
                offset, message = suspicious
                at = span.start + offset
                self._report("CD009", message, self.source.span(at, at + 1), label="here")
            elif not unicodedata.is_normalized("NFC", value):
                self._report(
                    "CD009",
                    "text is not in Unicode normal form C: it would not equal text that looks "
                    "the same",
                    span,
                    label="not NFC",
                    help=f"write it as {_literals.quote_text(unicodedata.normalize('NFC', value))}",
                )
        return a.TextLit(value, raw, span)

    def _number(
        self, token: lark.Token, *, whole: bool = False, negative: bool = False
    ) -> Decimal | None:
        raw = str(token.value)
        span = self._span(token)
        value = _literals.decimal(raw)
        if isinstance(value, str):
            self._report("CD005", value, span, label="invalid number")
            return None
        if whole and value != value.to_integral_value():
            self._report(
                "CD005", f"expected a whole number, found `{raw}`", span, label="not whole"
            )
            return None
        return -value if negative else value

    def _timestamp(self, token: lark.Token) -> a.TimestampLit:
        raw = str(token.value)
        span = self._span(token)
        value = _literals.timestamp_us(raw)
        if isinstance(value, str):
            self._report("CD004", f"invalid timestamp `{_clip(raw)}`: {value}", span, label="here")
            return a.TimestampLit(None, raw, span)
        return a.TimestampLit(value, raw, span)

    # -- items ----------------------------------------------------------------------------------

    def build(self, tree: lark.Tree[lark.Token], comments: tuple[a.Comment, ...]) -> a.ContractAst:
        items: list[a.Item] = []
        builders: dict[str, Callable[[lark.Tree[lark.Token]], a.Item]] = {
            "header": self._header,
            "param_decl": self._param,
            "oracle_decl": self._oracle,
            "event_decl": self._event,
            "escrow_decl": self._escrow,
            "deadline_decl": self._deadline,
            "clause": self._clause,
            "one_of": self._one_of,
        }
        for child in tree.children:
            if isinstance(child, lark.Tree):
                items.append(builders[str(child.data)](child))
        for kind, cls, limit in (
            ("parameters", a.ParamDecl, limits.PARAMS_MAX),
            ("oracles", a.OracleDecl, limits.ORACLES_MAX),
            ("event declarations", a.EventDecl, limits.EVENT_DECLS_MAX),
        ):
            chosen = [item for item in items if isinstance(item, cls)]
            self._limit(kind, chosen, [item.span for item in chosen], limit)
        clauses = a.all_clauses(a.ContractAst(tuple(items), ()))
        self._limit("clauses", clauses, [c.span for c, _ in clauses], limits.CLAUSES_MAX)
        return a.ContractAst(tuple(items), comments)

    def _header(self, tree: lark.Tree[lark.Token]) -> a.Header:
        name_token, version_token = tree.children
        assert isinstance(name_token, lark.Token)
        assert isinstance(version_token, lark.Token)
        version = self._number(version_token, whole=True)
        return a.Header(
            self._text(name_token),
            a.NumberLit(version, str(version_token.value), self._span(version_token)),
            self._span(tree),
        )

    def _param(self, tree: lark.Tree[lark.Token]) -> a.ParamDecl:
        name_token, type_tree = tree.children
        assert isinstance(name_token, lark.Token)
        assert isinstance(type_tree, lark.Tree)
        kind = str(type_tree.data).removeprefix("type_")
        currency = None
        if type_tree.children:
            token = type_tree.children[0]
            assert isinstance(token, lark.Token)
            currency = a.Ident(str(token.value), self._span(token))
        return a.ParamDecl(
            self._ident(name_token),
            a.ParamType(kind, currency, self._span(type_tree)),
            self._span(tree),
        )

    def _oracle(self, tree: lark.Tree[lark.Token]) -> a.OracleDecl:
        name_token, source_tree = tree.children
        assert isinstance(name_token, lark.Token)
        assert isinstance(source_tree, lark.Tree)
        tokens = [c for c in source_tree.children if isinstance(c, lark.Token)]
        source: a.SingleSource | a.QuorumSource
        if source_tree.data == "single_source":
            source = a.SingleSource(self._text(tokens[0]), self._span(source_tree))
        else:
            threshold_token, members = tokens[0], [self._text(t) for t in tokens[1:]]
            threshold = a.NumberLit(
                self._number(threshold_token, whole=True),
                str(threshold_token.value),
                self._span(threshold_token),
            )
            self._limit("quorum members", members, [m.span for m in members], limits.LIST_ITEMS_MAX)
            source = a.QuorumSource(threshold, tuple(members), self._span(source_tree))
        return a.OracleDecl(self._ident(name_token), source, self._span(tree))

    def _event(self, tree: lark.Tree[lark.Token]) -> a.EventDecl:
        type_token = tree.children[0]
        assert isinstance(type_token, lark.Token)
        attrs: list[a.AttrDecl] = []
        for child in tree.children[1:]:
            if isinstance(child, lark.Tree):
                name_token, type_tree = child.children
                assert isinstance(name_token, lark.Token)
                assert isinstance(type_tree, lark.Tree)
                attrs.append(
                    a.AttrDecl(
                        self._ident(name_token),
                        str(type_tree.data).removeprefix("attr_"),
                        self._span(type_tree),
                        self._span(child),
                    )
                )
        self._limit("attributes", attrs, [x.span for x in attrs], limits.ATTRIBUTES_MAX)
        return a.EventDecl(self._event_type(type_token), tuple(attrs), self._span(tree))

    def _escrow(self, tree: lark.Tree[lark.Token]) -> a.EscrowDecl:
        money_tree, funder_token = tree.children
        assert isinstance(money_tree, lark.Tree)
        assert isinstance(funder_token, lark.Token)
        return a.EscrowDecl(self._money(money_tree), self._ident(funder_token), self._span(tree))

    def _deadline(self, tree: lark.Tree[lark.Token]) -> a.DeadlineDecl:
        time_tree, actions_tree = tree.children
        assert isinstance(time_tree, lark.Tree)
        assert isinstance(actions_tree, lark.Tree)
        return a.DeadlineDecl(self._time(time_tree), self._actions(actions_tree), self._span(tree))

    def _clause(self, tree: lark.Tree[lark.Token]) -> a.Clause:
        label_tree, condition_tree, actions_tree = tree.children
        assert isinstance(condition_tree, lark.Tree)
        assert isinstance(actions_tree, lark.Tree)
        label = None
        if isinstance(label_tree, lark.Tree):
            token = label_tree.children[0]
            assert isinstance(token, lark.Token)
            label = self._ident(token)
        condition = self._condition(condition_tree)
        patterns = a.iter_patterns(condition)
        self._limit(
            "event patterns in one clause",
            patterns,
            [p.span for p in patterns],
            limits.PATTERNS_PER_CLAUSE_MAX,
        )
        return a.Clause(label, condition, self._actions(actions_tree), self._span(tree))

    def _one_of(self, tree: lark.Tree[lark.Token]) -> a.OneOf:
        clauses = [self._clause(c) for c in tree.children if isinstance(c, lark.Tree)]
        return a.OneOf(tuple(clauses), self._span(tree))

    # -- conditions -----------------------------------------------------------------------------

    def _condition(self, tree: lark.Tree[lark.Token]) -> a.Condition:
        if tree.data == "pattern":
            return self._pattern(tree)
        items: list[a.Condition] = []
        joined: type[a.AllOf] | type[a.AnyOf] = a.AnyOf if tree.data == "condition" else a.AllOf
        for child in tree.children:
            assert isinstance(child, lark.Tree)
            item = self._condition(child)
            if isinstance(item, joined):
                items.extend(item.items)  # `(a and b) and c` is `a and b and c`
            else:
                items.append(item)
        if len(items) == 1:
            return items[0]
        return joined(tuple(items), self._span(tree))

    def _pattern(self, tree: lark.Tree[lark.Token]) -> a.Pattern:
        event_token = tree.children[0]
        assert isinstance(event_token, lark.Token)
        constraints: list[a.Constraint] = []
        timings: list[a.Timing] = []
        attester: a.Ident | None = None
        for child in tree.children[1:]:
            if isinstance(child, lark.Token):
                attester = self._ident(child)
            elif isinstance(child, lark.Tree):
                if child.data in ("compare", "member", "not_member"):
                    constraints.append(self._constraint(child))
                else:
                    timings.append(self._timing(child))
        assert attester is not None
        self._limit(
            "constraints in one pattern",
            constraints,
            [c.span for c in constraints],
            limits.CONSTRAINTS_PER_PATTERN_MAX,
        )
        return a.Pattern(
            self._event_type(event_token),
            tuple(constraints),
            attester,
            tuple(timings),
            self._span(tree),
        )

    def _constraint(self, tree: lark.Tree[lark.Token]) -> a.Constraint:
        attr_token = tree.children[0]
        assert isinstance(attr_token, lark.Token)
        attr = self._ident(attr_token)
        if tree.data == "compare":
            op_token, value_tree = tree.children[1], tree.children[2]
            assert isinstance(op_token, lark.Token)
            assert isinstance(value_tree, lark.Tree)
            return a.Constraint(
                attr, str(op_token.value), self._value(value_tree), (), self._span(tree)
            )
        values = [self._value(c) for c in tree.children[1:] if isinstance(c, lark.Tree)]
        self._limit("list items", values, [v.span for v in values], limits.LIST_ITEMS_MAX)
        op = "in" if tree.data == "member" else "not in"
        return a.Constraint(attr, op, None, tuple(values), self._span(tree))

    def _value(self, tree: lark.Tree[lark.Token]) -> a.Value:
        span = self._span(tree)
        kind = str(tree.data)
        if kind == "true_value":
            return a.BoolLit(True, span)
        if kind == "false_value":
            return a.BoolLit(False, span)
        token = tree.children[0]
        assert isinstance(token, lark.Token)
        if kind == "text_value":
            return self._text(token)
        if kind == "timestamp_value":
            return self._timestamp(token)
        if kind == "param_value":
            return self._ident(token)
        negative = kind == "negative_value"
        value = self._number(token, negative=negative)
        raw = ("-" if negative else "") + str(token.value)
        return a.NumberLit(value, raw, span)

    def _timing(self, tree: lark.Tree[lark.Token]) -> a.Timing:
        span = self._span(tree)
        if tree.data == "within":
            duration_tree, anchor_token = tree.children
            assert isinstance(duration_tree, lark.Tree)
            assert isinstance(anchor_token, lark.Token)
            anchor = self._event_type(anchor_token)
            return a.Within(self._duration(duration_tree), anchor, span)
        time_tree = tree.children[0]
        assert isinstance(time_tree, lark.Tree)
        if tree.data == "before":
            return a.Before(self._time(time_tree), span)
        return a.After(self._time(time_tree), span)

    # -- actions and amounts --------------------------------------------------------------------

    def _actions(self, tree: lark.Tree[lark.Token]) -> tuple[a.Action, ...]:
        actions = [self._action(c) for c in tree.children if isinstance(c, lark.Tree)]
        self._limit(
            "actions in one clause",
            actions,
            [x.span for x in actions],
            limits.ACTIONS_PER_CLAUSE_MAX,
        )
        return tuple(actions)

    def _action(self, tree: lark.Tree[lark.Token]) -> a.Action:
        span = self._span(tree)
        children = tree.children
        if tree.data == "pay":
            amount_tree, party_token, in_tree, penalty_tree = children
            assert isinstance(amount_tree, lark.Tree)
            assert isinstance(party_token, lark.Token)
            target = None
            if isinstance(in_tree, lark.Tree):
                token = in_tree.children[0]
                assert isinstance(token, lark.Token)
                target = a.Ident(str(token.value), self._span(token))
            return a.PayAction(
                self._amount(amount_tree),
                self._ident(party_token),
                target,
                isinstance(penalty_tree, lark.Tree),
                span,
            )
        if tree.data == "refund":
            amount_tree, party_token = children
            assert isinstance(amount_tree, lark.Tree)
            party = self._ident(party_token) if isinstance(party_token, lark.Token) else None
            return a.RefundAction(self._amount(amount_tree), party, span)
        title_token, party_token = children
        assert isinstance(title_token, lark.Token)
        assert isinstance(party_token, lark.Token)
        return a.DeliverAction(self._ident(title_token), self._ident(party_token), span)

    def _amount(self, tree: lark.Tree[lark.Token]) -> a.Amount:
        span = self._span(tree)
        if tree.data == "remainder_amount":
            return a.RemainderAmount(span)
        if tree.data == "money_amount":
            inner = tree.children[0]
            assert isinstance(inner, lark.Tree)
            return self._money(inner)
        number_token, of_tree = tree.children
        assert isinstance(number_token, lark.Token)
        of = self._money(of_tree) if isinstance(of_tree, lark.Tree) else None
        percent = self._number(number_token)
        return a.PercentAmount(percent, str(number_token.value), of, span)

    def _money(self, tree: lark.Tree[lark.Token]) -> a.MoneyExpr:
        if tree.data == "money_param":
            token = tree.children[0]
            assert isinstance(token, lark.Token)
            return self._ident(token)
        number_token, currency_token = tree.children
        assert isinstance(number_token, lark.Token)
        assert isinstance(currency_token, lark.Token)
        return a.MoneyLit(
            self._number(number_token),
            str(number_token.value),
            a.Ident(str(currency_token.value), self._span(currency_token)),
            self._span(tree),
        )

    def _time(self, tree: lark.Tree[lark.Token]) -> a.TimeExpr:
        token = tree.children[0]
        assert isinstance(token, lark.Token)
        if tree.data == "time_param":
            return self._ident(token)
        return self._timestamp(token)

    def _duration(self, tree: lark.Tree[lark.Token]) -> a.DurationExpr:
        if tree.data == "duration_param":
            token = tree.children[0]
            assert isinstance(token, lark.Token)
            return self._ident(token)
        count_token, unit_token = tree.children
        assert isinstance(count_token, lark.Token)
        assert isinstance(unit_token, lark.Token)
        span = self._span(tree)
        count_value = self._number(count_token, whole=True)
        unit = str(unit_token.value)
        count: int | None = None
        seconds: int | None = None
        if count_value is not None:
            count = int(count_value)
            seconds = count * _literals.DSL_DURATION_UNIT_SECONDS[unit]
            if count < 1:
                self._report("CD005", "a duration must be at least 1", span, label="zero")
                count = seconds = None
            elif seconds > limits.DURATION_SECONDS_MAX:
                self._report(
                    "CD005",
                    f"the duration is longer than the limit of "
                    f"{limits.DURATION_SECONDS_MAX // 86400} days",
                    span,
                    label="too long",
                )
                count = seconds = None
        return a.DurationLit(count, str(count_token.value), unit, seconds, span)
