"""`condpay dsl lsp` driven as an editor drives it: a pytest-lsp client talks JSON-RPC to the
server in a subprocess over its stdin/stdout pipe."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as t
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from ._support import BASE, EXAMPLES, ROOT

SERVER = [sys.executable, "-m", "contracts_dsl", "lsp"]
OVERSEAS = EXAMPLES / "overseas-warehouse-delivery.contract"
DVP = EXAMPLES / "dvp-ebl.contract"


def _pulling() -> t.ClientCapabilities:
    capabilities = client_capabilities("visual-studio-code")
    assert capabilities.workspace is not None
    capabilities.workspace.inlay_hint = t.InlayHintWorkspaceClientCapabilities(refresh_support=True)
    return capabilities


def _pushing() -> t.ClientCapabilities:
    """VS Code's capabilities without pull diagnostics: the server must push them."""
    capabilities = client_capabilities("visual-studio-code")
    assert capabilities.text_document is not None
    capabilities.text_document.diagnostic = None
    return capabilities


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(
        t.InitializeParams(capabilities=_pulling(), root_uri=ROOT.as_uri())
    )
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def pushed(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(
        t.InitializeParams(capabilities=_pushing(), root_uri=ROOT.as_uri())
    )
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=[str(Path(sys.executable).parent / "condpay"), "dsl", "lsp"]
    )
)
async def launched(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(t.InitializeParams(capabilities=_pushing()))
    yield
    await lsp_client.shutdown_session()


def _open(client: LanguageClient, path: Path, text: str | None = None, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        t.DidOpenTextDocumentParams(
            text_document=t.TextDocumentItem(
                uri=uri,
                language_id="condpay-contract",
                version=version,
                text=path.read_text(encoding="utf-8") if text is None else text,
            )
        )
    )
    return uri


def _change(client: LanguageClient, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(
        t.DidChangeTextDocumentParams(
            text_document=t.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[t.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


async def _pull(client: LanguageClient, uri: str) -> list[t.Diagnostic]:
    report = await client.text_document_diagnostic_async(
        t.DocumentDiagnosticParams(text_document=t.TextDocumentIdentifier(uri=uri))
    )
    assert report.kind == "full"
    assert isinstance(
        report, t.FullDocumentDiagnosticReport | t.RelatedFullDocumentDiagnosticReport
    )
    return list(report.items)


def _position(text: str, needle: str, occurrence: int = 0, shift: int = 0) -> t.Position:
    """The position of the `occurrence`-th `needle` in `text` (ASCII text) outside comments,
    plus `shift`."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
        while text[text.rfind("\n", 0, index) + 1 :].lstrip().startswith("#"):
            index = text.index(needle, index + 1)
    index += shift
    line = text.count("\n", 0, index)
    return t.Position(line=line, character=index - (text.rfind("\n", 0, index) + 1))


BROKEN = BASE + "when receipt.signed() by buyer\n  -> pay remainder to sellr\n"


# -- diagnostics ---------------------------------------------------------------------------------


async def test_pushed_diagnostics_appear_and_clear(pushed: LanguageClient, tmp_path: Path) -> None:
    path = tmp_path / "broken.contract"
    uri = _open(pushed, path, BROKEN)
    await pushed.wait_for_notification(t.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    [diagnostic] = pushed.diagnostics[uri]
    assert diagnostic.code == "CD020"
    assert diagnostic.severity == t.DiagnosticSeverity.Error
    assert diagnostic.range == t.Range(
        start=t.Position(line=9, character=22), end=t.Position(line=9, character=27)
    )
    assert "help: did you mean `seller`?" in diagnostic.message
    assert diagnostic.code_description is not None
    assert diagnostic.code_description.href.endswith("dsl.md#cd020--unknown-name-error")
    _change(pushed, uri, BROKEN.replace("sellr", "seller"), version=2)
    await pushed.wait_for_notification(t.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert list(pushed.diagnostics[uri]) == []


async def test_pulled_diagnostics_with_related_information(
    client: LanguageClient, tmp_path: Path
) -> None:
    text = BASE.replace("param seller : wallet\n", "param seller : wallet\nparam seller : text\n")
    uri = _open(
        client,
        tmp_path / "twice.contract",
        text + "when receipt.signed() by buyer -> pay remainder to seller\n",
    )
    items = await _pull(client, uri)
    assert [(d.code, d.range.start.line) for d in items] == [("CD021", 4)]
    [related] = items[0].related_information or []
    assert related.location.range.start.line == 3
    assert related.message == "first declared on line 4"
    assert await _pull(client, _open(client, DVP)) == []


async def test_warnings_are_warnings(client: LanguageClient) -> None:
    golden = ROOT / "tests" / "dsl" / "golden" / "CD026.contract"
    items = await _pull(client, _open(client, golden))
    assert {(d.code, d.severity) for d in items} == {("CD026", t.DiagnosticSeverity.Warning)}
    assert list(items[0].tags or []) == [t.DiagnosticTag.Unnecessary]


async def test_the_condpay_command_serves_it(launched: LanguageClient, tmp_path: Path) -> None:
    uri = _open(launched, tmp_path / "broken.contract", BROKEN)
    await launched.wait_for_notification(t.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert [d.code for d in launched.diagnostics[uri]] == ["CD020"]


async def test_spec_files_are_checked_against_the_schema(
    client: LanguageClient, tmp_path: Path
) -> None:
    spec = (EXAMPLES / "prepayment.spec.json").read_text(encoding="utf-8")
    assert await _pull(client, _open(client, EXAMPLES / "prepayment.spec.json")) == []
    broken = spec.replace('"observed_at"', '"observed"', 1)
    uri = _open(client, tmp_path / "prepayment.spec.json", broken)
    items = await _pull(client, uri)
    messages = [d.message for d in items]
    assert any(m.startswith("$.cases[0].events[0]:") and "observed_at" in m for m in messages)
    line_of_first_event = broken[: broken.index('"observed"')].count("\n")
    assert items[0].range.start.line == line_of_first_event


# -- hover, definition, references ---------------------------------------------------------------


async def test_hover_on_a_parameter_an_event_and_a_clause(client: LanguageClient) -> None:
    text = OVERSEAS.read_text(encoding="utf-8")
    uri = _open(client, OVERSEAS)

    async def hover(needle: str, occurrence: int = 0, shift: int = 1) -> str:
        result = await client.text_document_hover_async(
            t.HoverParams(
                text_document=t.TextDocumentIdentifier(uri=uri),
                position=_position(text, needle, occurrence, shift),
            )
        )
        assert result is not None
        assert isinstance(result.contents, t.MarkupContent)
        return result.contents.value

    price = await hover("price", occurrence=1)
    assert "param price : money CNY" in price
    assert "125000.00 CNY" in price  # the spec file's example value
    arrived = await hover("iot.arrived")
    assert "site: text" in arrived
    assert "Attested by: `sensors`" in arrived
    clause = await hover("arrival")
    assert "pay 30% of the escrow to seller" in clause
    assert "37500.00 CNY to `seller`" in clause  # 30% of the example price
    escrow = await hover("escrow")
    assert "buyer locks price (CNY) in escrow" in escrow
    deadline = await hover("deadline")
    assert "2026-12-31T00:00:00+08:00" in deadline


async def test_definition_and_references(client: LanguageClient) -> None:
    text = OVERSEAS.read_text(encoding="utf-8")
    uri = _open(client, OVERSEAS)
    doc = t.TextDocumentIdentifier(uri=uri)
    at_use = _position(text, "sensors", occurrence=1, shift=2)
    [definition] = await client.text_document_definition_async(
        t.DefinitionParams(text_document=doc, position=at_use)
    )
    assert definition.range.start == _position(text, "sensors")
    references = await client.text_document_references_async(
        t.ReferenceParams(
            text_document=doc,
            position=at_use,
            context=t.ReferenceContext(include_declaration=True),
        )
    )
    code = "\n".join(line for line in text.split("\n") if not line.startswith("#"))
    assert [r.range.start for r in references] == [
        _position(text, "sensors", n) for n in range(code.count("sensors"))
    ]
    event_refs = await client.text_document_references_async(
        t.ReferenceParams(
            text_document=doc,
            position=_position(text, "iot.arrived", shift=4),
            context=t.ReferenceContext(include_declaration=False),
        )
    )
    assert len(event_refs) == 2  # the pattern and the `within ... after` anchor


async def test_definition_of_a_declared_event_and_its_attribute(client: LanguageClient) -> None:
    text = DVP.read_text(encoding="utf-8")
    uri = _open(client, DVP)
    doc = t.TextDocumentIdentifier(uri=uri)
    use = text.index("ebl.presented", text.index("when"))
    [definition] = await client.text_document_definition_async(
        t.DefinitionParams(text_document=doc, position=_position(text, "ebl.presented", 1, 2))
    )
    assert definition.range.start == _position(text, "ebl.presented")
    assert use > 0
    attribute = text.index("bill_no", text.index("when"))
    [attr_definition] = await client.text_document_definition_async(
        t.DefinitionParams(
            text_document=doc,
            position=_position(text, "bill_no", text[:attribute].count("bill_no"), 1),
        )
    )
    assert attr_definition.range.start == _position(text, "bill_no")


# -- completion, formatting, code actions, inlay hints -------------------------------------------


async def _complete(client: LanguageClient, uri: str, position: t.Position) -> list[str]:
    result = await client.text_document_completion_async(
        t.CompletionParams(text_document=t.TextDocumentIdentifier(uri=uri), position=position)
    )
    assert isinstance(result, t.CompletionList)
    return [item.label for item in result.items]


async def test_completion_knows_the_context(client: LanguageClient, tmp_path: Path) -> None:
    text = OVERSEAS.read_text(encoding="utf-8")
    uri = _open(client, OVERSEAS)
    attesters = await _complete(client, uri, _position(text, "by customs", shift=3))
    assert set(attesters) == {"customs", "sensors", "buyer", "seller"}
    attributes = await _complete(
        client, uri, _position(text, "iot.condition(", shift=len("iot.condition("))
    )
    assert "max_temp_c" in attributes
    assert "site" not in attributes
    payees = await _complete(client, uri, _position(text, "to seller", shift=3))
    assert set(payees) == {"buyer", "seller"}
    typing = BASE + "when "
    new_uri = _open(client, tmp_path / "typing.contract", typing)
    events = await _complete(client, new_uri, _position(typing + "$", "$"))
    assert "customs.cleared" in events
    currencies_text = BASE + "param fee : money "
    currency_uri = _open(client, tmp_path / "money.contract", currencies_text)
    assert "HKD" in await _complete(client, currency_uri, _position(currencies_text + "$", "$"))


async def test_formatting_is_fmt(client: LanguageClient, tmp_path: Path) -> None:
    messy = BASE.replace("param buyer  : wallet", "param   buyer : wallet") + (
        "when receipt.signed() by buyer -> pay remainder to seller\n"
    )
    uri = _open(client, tmp_path / "messy.contract", messy)
    [edit] = await client.text_document_formatting_async(
        t.DocumentFormattingParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            options=t.FormattingOptions(tab_size=2, insert_spaces=True),
        )
    )
    assert "param buyer  : wallet\n" in edit.new_text
    assert "\n  -> pay remainder to seller\n" in edit.new_text
    assert edit.range.start == t.Position(line=0, character=0)
    clean = _open(client, OVERSEAS)
    unchanged = await client.text_document_formatting_async(
        t.DocumentFormattingParams(
            text_document=t.TextDocumentIdentifier(uri=clean),
            options=t.FormattingOptions(tab_size=2, insert_spaces=True),
        )
    )
    assert not unchanged


async def test_code_action_applies_did_you_mean(client: LanguageClient, tmp_path: Path) -> None:
    uri = _open(client, tmp_path / "broken.contract", BROKEN)
    [diagnostic] = await _pull(client, uri)
    actions = await client.text_document_code_action_async(
        t.CodeActionParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            range=diagnostic.range,
            context=t.CodeActionContext(diagnostics=[diagnostic]),
        )
    )
    assert actions is not None
    [action] = actions
    assert isinstance(action, t.CodeAction)
    assert action.kind == t.CodeActionKind.QuickFix
    assert action.title == "Replace with `seller`"
    assert action.edit is not None
    assert action.edit.changes is not None
    [edit] = action.edit.changes[uri]
    assert (edit.range, edit.new_text) == (diagnostic.range, "seller")


async def test_inlay_hints_show_what_amounts_pay(client: LanguageClient) -> None:
    text = OVERSEAS.read_text(encoding="utf-8")
    uri = _open(client, OVERSEAS)
    hints = await client.text_document_inlay_hint_async(
        t.InlayHintParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            range=t.Range(
                start=t.Position(line=0, character=0),
                end=t.Position(line=text.count("\n") + 1, character=0),
            ),
        )
    )
    assert hints is not None
    shown = {(h.position.line, h.label) for h in hints}
    # price is 125000.00 CNY in the spec file: 30% and 5% of it.
    assert shown == {
        (_position(text, "pay 30%").line, " = 37500.00 CNY"),
        (_position(text, "5% of price").line, " = 6250.00 CNY"),
    }


@pytest.mark.parametrize("name", ["overseas-warehouse-delivery", "dvp-ebl", "prepayment"])
async def test_every_example_is_clean_in_the_editor(client: LanguageClient, name: str) -> None:
    expected = {"overseas-warehouse-delivery": {"CD065"}}.get(name, set())
    items = await _pull(client, _open(client, EXAMPLES / f"{name}.contract"))
    assert {d.code for d in items} == expected


def test_contracts_dsl_imports_without_the_servers_libraries() -> None:
    """contracts_dsl ships in the client distribution, which has no pygls, lsprotocol or
    jsonschema (docs/packaging.md): every module must import without them."""
    import subprocess

    script = (
        "import importlib, pkgutil, sys\n"
        "for name in ('pygls', 'lsprotocol', 'jsonschema'):\n"
        "    sys.modules[name] = None\n"
        "import contracts_dsl\n"
        "for info in pkgutil.walk_packages(contracts_dsl.__path__, 'contracts_dsl.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)


def test_the_benchmark_contract_is_64_kib_and_clean() -> None:
    from contracts_dsl import check_source, limits
    from tests.bench.dsl_lsp import big_contract

    text = big_contract()
    assert limits.SOURCE_BYTES_MAX - 1024 < len(text.encode()) <= limits.SOURCE_BYTES_MAX
    assert check_source(text).diagnostics == ()


async def test_positions_count_utf16_code_units(client: LanguageClient, tmp_path: Path) -> None:
    # U+1F600 is two UTF-16 code units, 中 one: the range after them must count units, not
    # code points, and a position sent back must land on the same name.
    line = 'when receipt.signed(order == "中😀") by buyr -> pay remainder to seller'
    uri = _open(client, tmp_path / "utf16.contract", BASE + line + "\n")
    [diagnostic] = await _pull(client, uri)
    assert diagnostic.code == "CD020"
    column_units = len(line[: line.index("buyr")].encode("utf-16-le")) // 2
    assert diagnostic.range.start == t.Position(line=8, character=column_units)
    assert diagnostic.range.end == t.Position(line=8, character=column_units + 4)
    seller_units = len(line[: line.rindex("seller") + 2].encode("utf-16-le")) // 2
    [definition] = await client.text_document_definition_async(
        t.DefinitionParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            position=t.Position(line=8, character=seller_units),
        )
    )
    assert definition.range.start == t.Position(line=3, character=len("param "))


async def test_a_file_over_the_size_limit_is_one_diagnostic(
    client: LanguageClient, tmp_path: Path
) -> None:
    big = BASE + "# " + "x" * (64 * 1024) + "\n"
    [diagnostic] = await _pull(client, _open(client, tmp_path / "big.contract", big))
    assert diagnostic.code == "CD006"
    assert diagnostic.range.start == t.Position(line=0, character=0)


async def test_inlay_hints_follow_the_open_spec_file(
    client: LanguageClient, tmp_path: Path
) -> None:
    refreshed = asyncio.Event()

    @client.feature(t.WORKSPACE_INLAY_HINT_REFRESH)
    def on_refresh(_client: LanguageClient, params: None) -> None:
        refreshed.set()

    contract = tmp_path / "delivery.contract"
    text = OVERSEAS.read_text(encoding="utf-8")
    spec_text = (EXAMPLES / "overseas-warehouse-delivery.spec.json").read_text(encoding="utf-8")
    assert '"125000.00 CNY"' in spec_text
    uri = _open(client, contract, text)
    spec_uri = _open(
        client, tmp_path / "delivery.spec.json", spec_text.replace("125000.00", "200000.00")
    )
    everything = t.Range(
        start=t.Position(line=0, character=0),
        end=t.Position(line=text.count("\n") + 1, character=0),
    )

    async def labels() -> set[str]:
        hints = await client.text_document_inlay_hint_async(
            t.InlayHintParams(text_document=t.TextDocumentIdentifier(uri=uri), range=everything)
        )
        return {str(h.label) for h in hints or []}

    assert " = 60000.00 CNY" in await labels()
    _change(client, spec_uri, spec_text.replace("125000.00", "100000.00"), version=2)
    assert " = 30000.00 CNY" in await labels()
    # The server asks the editor to refresh the contract's hints.
    await asyncio.wait_for(refreshed.wait(), timeout=10)


async def test_outline_lists_declarations_and_clauses(client: LanguageClient) -> None:
    uri = _open(client, EXAMPLES / "inspection-outcome.contract")
    symbols = await client.text_document_document_symbol_async(
        t.DocumentSymbolParams(text_document=t.TextDocumentIdentifier(uri=uri))
    )
    assert symbols is not None
    top = [(s.name, s.kind) for s in symbols if isinstance(s, t.DocumentSymbol)]
    assert ("escrow", t.SymbolKind.Object) in top
    assert ("one of", t.SymbolKind.Namespace) in top
    block = next(s for s in symbols if isinstance(s, t.DocumentSymbol) and s.name == "one of")
    assert [c.name for c in block.children or []] == ["passed", "failed"]


async def test_every_request_answers_on_broken_text(client: LanguageClient, tmp_path: Path) -> None:
    """No request fails on text that is being typed: cut the examples at random places, splice
    in odd characters, and ask for everything at several positions."""
    import random

    chooser = random.Random(14)
    texts = [p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.contract"))]
    for number in range(12):
        text = chooser.choice(texts)
        cut = chooser.randrange(len(text))
        text = (
            text[:cut]
            + chooser.choice(["", "(", '"', "\u00a0", "😀", "->", "\r"])
            + text[cut + chooser.randrange(0, 40) :]
        )
        uri = _open(client, tmp_path / f"broken{number}.contract", text)
        doc = t.TextDocumentIdentifier(uri=uri)
        await _pull(client, uri)
        lines = text.split("\n")
        for _ in range(4):
            line = chooser.randrange(len(lines))
            position = t.Position(line=line, character=chooser.randrange(len(lines[line]) + 1))
            await client.text_document_hover_async(
                t.HoverParams(text_document=doc, position=position)
            )
            await client.text_document_completion_async(
                t.CompletionParams(text_document=doc, position=position)
            )
            await client.text_document_definition_async(
                t.DefinitionParams(text_document=doc, position=position)
            )
        await client.text_document_formatting_async(
            t.DocumentFormattingParams(
                text_document=doc, options=t.FormattingOptions(tab_size=2, insert_spaces=True)
            )
        )
        await client.text_document_document_symbol_async(t.DocumentSymbolParams(text_document=doc))
        await client.text_document_inlay_hint_async(
            t.InlayHintParams(
                text_document=doc,
                range=t.Range(
                    start=t.Position(line=0, character=0),
                    end=t.Position(line=len(lines), character=0),
                ),
            )
        )
