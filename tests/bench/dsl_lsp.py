"""How fast `condpay dsl lsp` answers diagnostics for a 64 KiB contract (the size limit).

``python -m tests.bench.dsl_lsp [--rounds N] [--output PATH]`` starts the server as an editor
does (``python -m contracts_dsl lsp`` on a stdio pipe, through pygls's client), opens a dense,
realistic contract of just under 64 KiB (63 clauses of three patterns with membership lists,
comments), then for each round changes the document (a new version: alternately clean and with
an unknown payee, so every round re-checks the whole text) and times

* ``pull``: a ``textDocument/diagnostic`` request sent right after the change, to its answer;
* ``push``: a second server session whose client does not pull: from the ``didChange``
  notification to the ``publishDiagnostics`` notification for that version.

Also ``in_process``: `check_source` on the same text, without the protocol. Writes
``var/bench/dsl_lsp.json`` (medians, p95, max in milliseconds; the target is a median under
100 ms) and prints a summary. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from lsprotocol import types as t
from pygls.lsp.client import LanguageClient

from contracts_dsl import check_source, limits

TARGET_MS: Final = 100.0
OUTPUT: Final = Path("var/bench/dsl_lsp.json")
URI: Final = "file:///bench/big.contract"

_HEAD: Final = """\
contract "bench-64k" version 1

param buyer  : wallet
param seller : wallet
param price  : money CNY
param ref    : text

oracle customs = "customs.cn.shenzhen"
oracle sensors = quorum 2 of ["iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid"]

escrow price from buyer
deadline 2027-12-31T00:00:00+08:00 -> refund remainder to buyer

"""


def _clause(index: int) -> str:
    sites = ", ".join(f'"SITE-{index}-{k}"' for k in range(12))
    return (
        f"# tranche {index}: paid when customs has cleared the goods, they reach one of the\n"
        "# listed sites and the cold chain held\n"
        f"clause tranche_{index}\n"
        'when customs.cleared(declaration == ref, port in ["CNSZX", "CNYTN", "CNSHK"], '
        "duty_paid == true) by customs\n"
        f'  and iot.arrived(site in [{sites}], container != "X-{index}") by sensors\n'
        "  and iot.condition(max_temp_c < 8, min_temp_c > -20, shock_g < 3.5, "
        "humidity_pct <= 80) by sensors\n"
        "  -> pay 1.5% to seller\n\n"
    )


def big_contract(size_bytes: int = limits.SOURCE_BYTES_MAX) -> str:
    """A clean contract of just under `size_bytes` UTF-8 bytes: as many dense clauses as the
    clause limit allows, then comment lines."""
    text = _HEAD
    for index in range(limits.CLAUSES_MAX - 1):
        clause = _clause(index)
        if len((text + clause).encode()) > size_bytes - 512:
            break
        text += clause
    line = "# " + "reviewed by the trade desk, the bank and the importer; " * 2 + "\n"
    while len((text + line).encode()) <= size_bytes - 64:
        text += line
    return text


def _version_text(base: str, version: int) -> str:
    """Every other version has an error, so what is published changes each round."""
    if version % 2:
        return base.replace("pay 1.5% to seller", "pay 1.5% to sellr", 1)
    return base.replace("tranche 0:", f"tranche 0 (v{version}):", 1)


def _capabilities(pull: bool) -> t.ClientCapabilities:
    return t.ClientCapabilities(
        text_document=t.TextDocumentClientCapabilities(
            diagnostic=t.DiagnosticClientCapabilities() if pull else None,
            publish_diagnostics=t.PublishDiagnosticsClientCapabilities(version_support=True),
        )
    )


async def _session(pull: bool, text: str, rounds: int) -> list[float]:
    client = LanguageClient("condpay-bench", "1")
    published: dict[int, asyncio.Future[float]] = {}

    @client.feature(t.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_publish(params: t.PublishDiagnosticsParams) -> None:
        now = time.perf_counter()
        for future in published.values():
            if not future.done():
                future.set_result(now)

    await client.start_io(sys.executable, "-m", "contracts_dsl", "lsp")
    try:
        await client.initialize_async(t.InitializeParams(capabilities=_capabilities(pull)))
        client.initialized(t.InitializedParams())
        loop = asyncio.get_running_loop()
        published[0] = loop.create_future()
        client.text_document_did_open(
            t.DidOpenTextDocumentParams(
                text_document=t.TextDocumentItem(
                    uri=URI, language_id="condpay-contract", version=0, text=text
                )
            )
        )
        document = t.TextDocumentIdentifier(uri=URI)
        if pull:
            await client.text_document_diagnostic_async(
                t.DocumentDiagnosticParams(text_document=document)
            )
        else:
            await published[0]
        timings = []
        for version in range(1, rounds + 1):
            changed = _version_text(text, version)
            if not pull:
                published.clear()
                published[version] = loop.create_future()
            sent = time.perf_counter()
            client.text_document_did_change(
                t.DidChangeTextDocumentParams(
                    text_document=t.VersionedTextDocumentIdentifier(uri=URI, version=version),
                    content_changes=[t.TextDocumentContentChangeWholeDocument(text=changed)],
                )
            )
            if pull:
                report = await client.text_document_diagnostic_async(
                    t.DocumentDiagnosticParams(text_document=document)
                )
                received = time.perf_counter()
                codes = {d.code for d in report.items}  # type: ignore[union-attr]
            else:
                received = await published[version]
                codes = set()
            if pull:
                assert codes == ({"CD020"} if version % 2 else set()), codes
            timings.append((received - sent) * 1000)
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
    return timings


def _summary(timings: Sequence[float]) -> dict[str, float]:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(p95, 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
        "rounds": len(ordered),
    }


def run(rounds: int) -> dict[str, Any]:
    text = big_contract()
    in_process = []
    for version in range(rounds):
        changed = _version_text(text, version)
        started = time.perf_counter()
        check_source(changed)
        in_process.append((time.perf_counter() - started) * 1000)
    pull = asyncio.run(_session(True, text, rounds))
    push = asyncio.run(_session(False, text, rounds))
    from tests.bench.machine import machine_info

    results = {
        "pull": _summary(pull),
        "push": _summary(push),
        "in_process": _summary(in_process),
    }
    return {
        "benchmark": "dsl_lsp",
        "contract_bytes": len(text.encode()),
        "contract_clauses": text.count("\nclause "),
        "target_ms": TARGET_MS,
        "target": "median time from a document change to its diagnostics, pulled and pushed",
        "passed": all(results[k]["median_ms"] < TARGET_MS for k in ("pull", "push")),
        "results": results,
        "machine": machine_info(postgres_version=None, postgres_source=None),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.dsl_lsp", description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    document = run(args.rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"dsl lsp: a {document['contract_bytes']}-byte contract, {args.rounds} changes")
    for name, row in document["results"].items():
        print(
            f"  {name:<10} median {row['median_ms']:6.1f} ms  p95 {row['p95_ms']:6.1f} ms  "
            f"max {row['max_ms']:6.1f} ms"
        )
    verdict = "met" if document["passed"] else "MISSED"
    print(f"  target: median < {TARGET_MS:.0f} ms: {verdict}; written to {args.output}")
    return 0 if document["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
