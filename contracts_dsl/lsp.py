"""`condpay dsl lsp`: a Language Server Protocol server for contracts, over stdin/stdout.

Built on pygls 2 and lsprotocol. For `*.contract` files it publishes the checker's diagnostics
as you type (codes linking to docs/dsl.md, related information from the notes, help in the
message) and answers hover, go to definition, find references, completion, formatting (`fmt`),
quick fixes (the "did you mean" suggestions, odd characters, non-NFC text) and inlay hints with
what each amount pays for the example parameters of the spec file beside the contract. For
`*.spec.json` files it reports JSON errors and violations of the spec JSON Schema with the path
of the offending value.

Diagnostics are pushed (`textDocument/publishDiagnostics`) to clients that do not pull them;
clients that advertise `textDocument/diagnostic` pull them instead, so nothing is shown twice.
Documents are synchronised in full: every change re-checks the whole text (a dense 64 KiB
contract, the size limit, in about 70 ms median on a quiet 2-core machine; tests/bench/dsl_lsp.py).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from contracts_dsl import diagnostics as d
from contracts_dsl.formatter import format_source
from contracts_dsl.ide import (
    KIND_ATTRIBUTE,
    KIND_EVENT,
    KIND_NAME,
    Analysis,
    Completion,
    Symbol,
    quick_fix,
)
from contracts_dsl.params import BoundParams
from contracts_dsl.source import SourceFile
from contracts_dsl.spec import validate_spec

if TYPE_CHECKING:  # at run time, imported by make_server only (docs/packaging.md)
    from pygls.lsp.server import LanguageServer

NAME: Final = "condpay-dsl"
VERSION: Final = "1"
SOURCE: Final = "condpay"
"""`Diagnostic.source`: what editors show next to the code."""

_DOCS_ENV: Final = "CONDPAY_DSL_DOCS_URL"
_LINE_NOTE: Final = re.compile(r"\bline (\d+)\b")


def docs_url() -> str | None:
    """Where diagnostic codes link to: $CONDPAY_DSL_DOCS_URL, else docs/dsl.md of this checkout
    (as a file URI) when it exists."""
    configured = os.environ.get(_DOCS_ENV)
    if configured:
        return configured
    local = Path(__file__).resolve().parents[1] / "docs" / "dsl.md"
    return local.as_uri() if local.is_file() else None


def docs_anchor(code: str) -> str:
    """The anchor of a code's heading in docs/dsl.md, as GitHub and most renderers make it:
    `### CD020 — unknown name (error)` -> `cd020--unknown-name-error`."""
    info = d.CODES[code]
    heading = f"{code} — {info.title} ({info.severity.value})".lower()
    kept = "".join(c for c in heading if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _display_path(uri: str) -> str:
    """A file URI as a path for messages (other URIs as they are)."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def json_places(text: str) -> dict[tuple[str | int, ...], tuple[int, int]]:
    """Offsets `[start, end)` of every value of a JSON text by its path (keys and indices);
    for object members the span covers the key too. Best effort: {} when the text is not JSON."""
    places: dict[tuple[str | int, ...], tuple[int, int]] = {}
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")

    def skip(index: int) -> int:
        match = space.match(text, index)
        return match.end() if match else index

    def value(index: int, path: tuple[str | int, ...], key_start: int | None) -> int:
        index = skip(index)
        start = index if key_start is None else key_start
        char = text[index : index + 1]
        if char == "{":
            index = skip(index + 1)
            if text[index : index + 1] == "}":
                end = index + 1
            else:
                while True:
                    key_at = index
                    key, index = decoder.raw_decode(text, index)
                    index = skip(index)
                    assert text[index] == ":"
                    index = skip(value(index + 1, (*path, str(key)), key_at))
                    if text[index] == "}":
                        end = index + 1
                        break
                    index = skip(index + 1)  # ","
        elif char == "[":
            index = skip(index + 1)
            position = 0
            if text[index : index + 1] == "]":
                end = index + 1
            else:
                while True:
                    index = skip(value(index, (*path, position), None))
                    position += 1
                    if text[index] == "]":
                        end = index + 1
                        break
                    index = skip(index + 1)
        else:
            _, end = decoder.raw_decode(text, index)
        places[path] = (start, end)
        return end

    try:
        value(0, (), None)
    except (ValueError, AssertionError, IndexError):
        return places
    return places


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Checking a contract allocates many short-lived objects without reference cycles (parse
    tree, AST); the cyclic garbage collector would walk the server's whole heap several times
    per check (measured: a 64 KiB contract took about 120 ms with it, 80 ms without). Reference
    counting frees them either way; the collector runs again right after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def make_server() -> LanguageServer:
    """The server with every feature registered (pygls and lsprotocol are imported here: the
    client distribution, which carries this package, does not install them)."""
    from lsprotocol import types as t
    from pygls.lsp.server import LanguageServer
    from pygls.uris import to_fs_path

    _COMPLETION_KINDS = {
        KIND_NAME: t.CompletionItemKind.Variable,
        KIND_EVENT: t.CompletionItemKind.Event,
        KIND_ATTRIBUTE: t.CompletionItemKind.Field,
        "keyword": t.CompletionItemKind.Keyword,
        "currency": t.CompletionItemKind.Constant,
        "type": t.CompletionItemKind.TypeParameter,
        "value": t.CompletionItemKind.Value,
    }

    class Positions:
        """LSP positions (0-based line, character in the negotiated encoding's code units) to and
        from `SourceFile` offsets and 1-based line/column (code points)."""

        def __init__(self, source: SourceFile, encoding: str | None) -> None:
            self.source = source
            self.encoding = encoding or t.PositionEncodingKind.Utf16

        def units(self, text: str) -> int:
            if text.isascii() or self.encoding == t.PositionEncodingKind.Utf32:
                return len(text)
            if self.encoding == t.PositionEncodingKind.Utf8:
                return len(text.encode("utf-8", errors="surrogatepass"))
            return len(text.encode("utf-16-le", errors="surrogatepass")) // 2

        def position(self, line: int, column: int) -> t.Position:
            """From 1-based line and column (code points)."""
            prefix = self.source.line_text(line)[: column - 1]
            return t.Position(line=max(0, line - 1), character=self.units(prefix))

        def range(self, start: tuple[int, int], end: tuple[int, int]) -> t.Range:
            return t.Range(start=self.position(*start), end=self.position(*end))

        def offset_range(self, start: int, end: int) -> t.Range:
            return self.range(self.source.position(start), self.source.position(end))

        def offset(self, position: t.Position) -> int:
            """The character offset of an LSP position (clamped to the text)."""
            line = position.line + 1
            if line > self.source.line_count:
                return len(self.source.text)
            start = self.source.line_start(line)
            text = self.source.line_text(line)
            if text.isascii() or self.encoding == t.PositionEncodingKind.Utf32:
                return start + min(position.character, len(text))
            counted = 0
            for index, char in enumerate(text):
                if counted >= position.character:
                    return start + index
                counted += self.units(char)
            return start + len(text)

    class ContractServer(LanguageServer):
        """The language server: one `Analysis` per open document version."""

        def __init__(self) -> None:
            super().__init__(NAME, VERSION, text_document_sync_kind=t.TextDocumentSyncKind.Full)
            self.analyses: dict[str, tuple[int | None, Analysis]] = {}
            self.docs = docs_url()

        # -- documents --------------------------------------------------------------------------

        @property
        def encoding(self) -> str | None:
            encoding = self.workspace.position_encoding
            return str(encoding) if encoding is not None else None

        def analysis(self, uri: str) -> Analysis:
            document = self.workspace.get_text_document(uri)
            cached = self.analyses.get(uri)
            if (
                cached is not None
                and cached[0] == document.version
                and document.version is not None
            ):
                return cached[1]
            with _collector_paused():
                analysis = Analysis(document.source, _display_path(uri))
            self.analyses[uri] = (document.version, analysis)
            return analysis

        def positions(self, analysis: Analysis) -> Positions:
            return Positions(analysis.source, self.encoding)

        def contract(self, uri: str) -> tuple[Analysis, Positions] | None:
            """A contract document's analysis and positions; None for any other file."""
            if not uri.endswith(".contract"):
                return None
            analysis = self.analysis(uri)
            return analysis, self.positions(analysis)

        def pushes_diagnostics(self) -> bool:
            """Push unless the client pulls (`textDocument/diagnostic`)."""
            capabilities = self.client_capabilities.text_document
            return capabilities is None or capabilities.diagnostic is None

        def lsp_diagnostics(self, uri: str) -> list[t.Diagnostic]:
            if uri.endswith(".spec.json"):
                return self.spec_diagnostics(uri)
            opened = self.contract(uri)
            if opened is None:
                return []
            analysis, positions = opened
            found = [self.convert(x, positions, uri) for x in analysis.diagnostics]
            omitted = analysis.checked.omitted
            if omitted:
                first = analysis.diagnostics[-1]
                found.append(
                    t.Diagnostic(
                        range=positions.range(
                            (first.span.line, first.span.column),
                            (first.span.end_line, first.span.end_column),
                        ),
                        message=f"... and {len(omitted)} more diagnostic(s) not shown: at most "
                        f"{len(analysis.diagnostics)} are reported for one file",
                        severity=t.DiagnosticSeverity.Information,
                        source=SOURCE,
                    )
                )
            return found

        def convert(self, diagnostic: d.Diagnostic, positions: Positions, uri: str) -> t.Diagnostic:
            span = diagnostic.span
            lines = [diagnostic.message]
            if diagnostic.label:
                lines.append(diagnostic.label)
            lines.extend(f"note: {note}" for note in diagnostic.notes)
            if diagnostic.help:
                lines.append(f"help: {diagnostic.help}")
            related = []
            for note in diagnostic.notes:
                match = _LINE_NOTE.search(note)
                if match is None:
                    continue
                line = int(match.group(1))
                if 1 <= line <= positions.source.line_count:
                    text = positions.source.line_text(line)
                    indent = len(text) - len(text.lstrip())
                    related.append(
                        t.DiagnosticRelatedInformation(
                            location=t.Location(
                                uri=uri,
                                range=positions.range((line, indent + 1), (line, len(text) + 1)),
                            ),
                            message=note,
                        )
                    )
            description = None
            if self.docs is not None:
                description = t.CodeDescription(href=f"{self.docs}#{docs_anchor(diagnostic.code)}")
            return t.Diagnostic(
                range=positions.range((span.line, span.column), (span.end_line, span.end_column)),
                message="\n".join(lines),
                severity=t.DiagnosticSeverity.Error
                if diagnostic.is_error
                else t.DiagnosticSeverity.Warning,
                code=diagnostic.code,
                code_description=description,
                source=SOURCE,
                related_information=related or None,
                tags=[t.DiagnosticTag.Unnecessary] if diagnostic.code == "CD026" else None,
            )

        def spec_diagnostics(self, uri: str) -> list[t.Diagnostic]:
            text = self.workspace.get_text_document(uri).source
            source = SourceFile(text, _display_path(uri))
            positions = Positions(source, self.encoding)
            try:
                document = json.loads(text)
            except json.JSONDecodeError as bad:
                return [
                    t.Diagnostic(
                        range=positions.offset_range(bad.pos, bad.pos + 1),
                        message=f"not JSON: {bad.msg}",
                        severity=t.DiagnosticSeverity.Error,
                        source=SOURCE,
                    )
                ]
            places = json_places(text)
            found = []
            for error in validate_spec(document):
                start, end = places.get(error.keys, (0, 0))
                found.append(
                    t.Diagnostic(
                        range=positions.offset_range(start, end),
                        message=f"{error.path}: {error.message}",
                        severity=t.DiagnosticSeverity.Error,
                        source=SOURCE,
                        code="spec-schema",
                    )
                )
            return found

        def publish(self, uri: str) -> None:
            if self.pushes_diagnostics():
                self.text_document_publish_diagnostics(
                    t.PublishDiagnosticsParams(uri=uri, diagnostics=self.lsp_diagnostics(uri))
                )

        def example_params(self, uri: str, analysis: Analysis) -> BoundParams | None:
            """The `params` of the spec file beside a contract (open in the editor or on disk)."""
            if not uri.endswith(".contract"):
                return None
            spec_uri = uri.removesuffix(".contract") + ".spec.json"
            text: str | None = None
            document = self.workspace.text_documents.get(spec_uri)
            if document is not None:
                text = document.source
            else:
                path = to_fs_path(spec_uri)
                if path is not None and Path(path).is_file():
                    try:
                        text = Path(path).read_text(encoding="utf-8")
                    except (OSError, UnicodeDecodeError):
                        return None
            if text is None:
                return None
            try:
                spec = json.loads(text)
            except ValueError:
                return None
            values = spec.get("params") if isinstance(spec, dict) else None
            return analysis.bind_example(values if isinstance(values, Mapping) else None)

    def _completion_item(completion: Completion) -> t.CompletionItem:
        return t.CompletionItem(
            label=completion.label,
            kind=_COMPLETION_KINDS.get(completion.kind, t.CompletionItemKind.Text),
            detail=completion.detail or None,
        )

    server = ContractServer()

    @server.feature(t.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: ContractServer, params: t.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: ContractServer, params: t.DidChangeTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)
        workspace = ls.client_capabilities.workspace
        refresh = workspace is not None and workspace.inlay_hint is not None
        if params.text_document.uri.endswith(".spec.json") and refresh:
            assert workspace is not None
            assert workspace.inlay_hint is not None
            if workspace.inlay_hint.refresh_support:
                # The example parameters changed: the contract's inlay hints may too.
                ls.workspace_inlay_hint_refresh(None)

    @server.feature(t.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: ContractServer, params: t.DidCloseTextDocumentParams) -> None:
        ls.analyses.pop(params.text_document.uri, None)
        if ls.pushes_diagnostics():
            ls.text_document_publish_diagnostics(
                t.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
            )

    @server.feature(
        t.TEXT_DOCUMENT_DIAGNOSTIC,
        t.DiagnosticOptions(
            identifier=NAME, inter_file_dependencies=False, workspace_diagnostics=False
        ),
    )
    def diagnostic(
        ls: ContractServer, params: t.DocumentDiagnosticParams
    ) -> t.FullDocumentDiagnosticReport:
        return t.FullDocumentDiagnosticReport(items=ls.lsp_diagnostics(params.text_document.uri))

    @server.feature(t.TEXT_DOCUMENT_HOVER)
    def hover(ls: ContractServer, params: t.HoverParams) -> t.Hover | None:
        uri = params.text_document.uri
        opened = ls.contract(uri)
        if opened is None:
            return None
        analysis, positions = opened
        found = analysis.hover(positions.offset(params.position), ls.example_params(uri, analysis))
        if found is None:
            return None
        text, span = found
        return t.Hover(
            contents=t.MarkupContent(kind=t.MarkupKind.Markdown, value=text),
            range=positions.offset_range(span.start, span.end),
        )

    symbol_kinds = {
        "param": t.SymbolKind.Variable,
        "oracle": t.SymbolKind.Interface,
        "event": t.SymbolKind.Event,
        "escrow": t.SymbolKind.Object,
        "deadline": t.SymbolKind.Constant,
        "clause": t.SymbolKind.Function,
        "one_of": t.SymbolKind.Namespace,
    }

    def document_symbol_of(symbol: Symbol, positions: Positions) -> t.DocumentSymbol:
        return t.DocumentSymbol(
            name=symbol.name,
            detail=symbol.detail or None,
            kind=symbol_kinds[symbol.kind],
            range=positions.offset_range(symbol.span.start, symbol.span.end),
            selection_range=positions.offset_range(symbol.name_span.start, symbol.name_span.end),
            children=[document_symbol_of(c, positions) for c in symbol.children] or None,
        )

    @server.feature(t.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def document_symbol(
        ls: ContractServer, params: t.DocumentSymbolParams
    ) -> list[t.DocumentSymbol]:
        uri = params.text_document.uri
        opened = ls.contract(uri)
        if opened is None:
            return []
        analysis, positions = opened
        return [document_symbol_of(s, positions) for s in analysis.outline()]

    @server.feature(t.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: ContractServer, params: t.DefinitionParams) -> list[t.Location]:
        uri = params.text_document.uri
        opened = ls.contract(uri)
        if opened is None:
            return []
        analysis, positions = opened
        occurrence = analysis.at(positions.offset(params.position))
        if occurrence is None:
            return []
        return [
            t.Location(uri=uri, range=positions.offset_range(s.start, s.end))
            for s in analysis.definitions(occurrence)
        ]

    @server.feature(t.TEXT_DOCUMENT_REFERENCES)
    def references(ls: ContractServer, params: t.ReferenceParams) -> list[t.Location]:
        uri = params.text_document.uri
        opened = ls.contract(uri)
        if opened is None:
            return []
        analysis, positions = opened
        occurrence = analysis.at(positions.offset(params.position))
        if occurrence is None:
            return []
        spans = analysis.references(occurrence, params.context.include_declaration)
        return [t.Location(uri=uri, range=positions.offset_range(s.start, s.end)) for s in spans]

    @server.feature(
        t.TEXT_DOCUMENT_COMPLETION,
        t.CompletionOptions(trigger_characters=[".", "(", ",", ":", " "]),
    )
    def completion(ls: ContractServer, params: t.CompletionParams) -> t.CompletionList:
        uri = params.text_document.uri
        if not uri.endswith(".contract"):
            return t.CompletionList(is_incomplete=False, items=[])
        analysis = ls.analysis(uri)
        offset = ls.positions(analysis).offset(params.position)
        items = [_completion_item(c) for c in analysis.completions(offset)]
        return t.CompletionList(is_incomplete=False, items=items)

    @server.feature(t.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: ContractServer, params: t.DocumentFormattingParams) -> list[t.TextEdit]:
        uri = params.text_document.uri
        if not uri.endswith(".contract"):
            return []
        document = ls.workspace.get_text_document(uri)
        result = format_source(document.source, _display_path(uri))
        if result.text is None or result.text == document.source:
            return []  # syntax errors, too large once formatted, or already formatted
        source = SourceFile(document.source)
        positions = Positions(source, ls.encoding)
        whole = positions.offset_range(0, len(source.text))
        return [t.TextEdit(range=whole, new_text=result.text)]

    @server.feature(
        t.TEXT_DOCUMENT_CODE_ACTION,
        t.CodeActionOptions(code_action_kinds=[t.CodeActionKind.QuickFix]),
    )
    def code_action(ls: ContractServer, params: t.CodeActionParams) -> list[t.CodeAction]:
        uri = params.text_document.uri
        opened = ls.contract(uri)
        if opened is None:
            return []
        analysis, positions = opened
        start = positions.offset(params.range.start)
        end = positions.offset(params.range.end)
        actions = []
        for found in analysis.diagnostics:
            if found.span.end < start or found.span.start > end:
                continue
            fix = quick_fix(found)
            if fix is None:
                continue
            replacement, title = fix
            converted = ls.convert(found, positions, uri)
            actions.append(
                t.CodeAction(
                    title=title,
                    kind=t.CodeActionKind.QuickFix,
                    diagnostics=[converted],
                    is_preferred=True,
                    edit=t.WorkspaceEdit(
                        changes={uri: [t.TextEdit(range=converted.range, new_text=replacement)]}
                    ),
                )
            )
        return actions

    @server.feature(t.TEXT_DOCUMENT_INLAY_HINT)
    def inlay_hint(ls: ContractServer, params: t.InlayHintParams) -> list[t.InlayHint]:
        uri = params.text_document.uri
        opened = ls.contract(uri)
        if opened is None:
            return []
        analysis, positions = opened
        first = positions.offset(params.range.start)
        last = positions.offset(params.range.end)
        hints = []
        for hint in analysis.inlay_hints(ls.example_params(uri, analysis)):
            if first <= hint.offset <= last:
                line, column = analysis.source.position(hint.offset)
                hints.append(
                    t.InlayHint(
                        position=positions.position(line, column),
                        label=hint.label,
                        kind=t.InlayHintKind.Type,
                        tooltip=f"with the spec file's example parameters: {hint.tooltip}",
                    )
                )
        return hints

    return server


def serve() -> None:
    """Run the server on stdin/stdout until the client says exit."""
    server = make_server()
    gc.freeze()  # what was imported and built at start-up lives as long as the server
    server.start_io()
