"""Command line: `python -m contracts_dsl <command>` (wired as `condpay dsl <command>`).

Commands::

    check FILE... [--json]                 diagnostics; exit 1 when any file has an error
    fmt [--check] FILE...                  rewrite files in canonical layout; --check: exit 1
                                           when a file would change
    explain FILE [--lang en|zh]            the contract in plain English or Chinese
    simulate FILE --params P.json --events E.jsonl [--now T] [--json]
                                           step through events with the real evaluator
    test [PATH...]                         run spec files (x.contract beside x.spec.json),
                                           checked against the spec JSON Schema first
    schema                                 print the JSON Schema of spec files
    lsp                                    the language server, over stdin/stdout

Exit codes: 0 success, 1 errors found or tests failed, 2 bad usage or unreadable input.
Output is plain text (no colour, no terminal control codes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from contracts_dsl import _literals, limits
from contracts_dsl.compiler import compile_source
from contracts_dsl.diagnostics import Diagnostic, make, render_all
from contracts_dsl.evaluator import Event, parse_event
from contracts_dsl.explain import LANGUAGES, explain_source
from contracts_dsl.formatter import format_source
from contracts_dsl.params import bind_params
from contracts_dsl.simulate import render_steps, simulate
from contracts_dsl.source import SourceFile
from contracts_dsl.spec import discover, run_spec, spec_schema

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="The condpay contract language tools.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    check = commands.add_parser("check", help="check contracts and print diagnostics")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    fmt = commands.add_parser("fmt", help="format contracts in place")
    fmt.add_argument("files", nargs="+", type=Path)
    fmt.add_argument("--check", action="store_true", help="only report files that would change")
    explain = commands.add_parser("explain", help="explain a contract in plain language")
    explain.add_argument("file", type=Path)
    explain.add_argument("--lang", choices=LANGUAGES, default="en")
    sim = commands.add_parser("simulate", help="step a contract through events")
    sim.add_argument("file", type=Path)
    sim.add_argument("--params", type=Path, required=True, help="JSON object of parameters")
    sim.add_argument("--events", type=Path, required=True, help="JSON Lines, one event a line")
    sim.add_argument("--now", help="RFC 3339 time to move to after the last event")
    sim.add_argument("--json", action="store_true", help="print JSON instead of text")
    test = commands.add_parser("test", help="run spec files")
    test.add_argument("paths", nargs="*", type=Path)
    commands.add_parser("schema", help="print the JSON Schema of spec files")
    commands.add_parser(
        "lsp", help="run the language server on stdin/stdout (for editors; see docs/dsl.md)"
    )
    return parser


@dataclass(frozen=True, slots=True)
class _Read:
    """A contract file read for a command: its text, or why not (an OS error, or a diagnostic
    CD006/CD014 with the source it points into)."""

    text: str | None
    error: str | None = None
    diagnostic: Diagnostic | None = None
    source: SourceFile | None = None


def read_contract(path: Path) -> _Read:
    """Read a contract file as UTF-8 within the size limit; never raises."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return _Read(None, error=f"cannot read: {error.strerror or error}")
    if len(data) > limits.SOURCE_BYTES_MAX:
        source = SourceFile("", str(path))
        diagnostic = make(
            "CD006",
            f"the source is {len(data)} bytes; the limit is {limits.SOURCE_BYTES_MAX} bytes",
            source.span(0, 0),
            source,
            label="file too large",
        )
        return _Read(None, diagnostic=diagnostic, source=source)
    try:
        return _Read(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        prefix = data[: error.start].decode("utf-8", errors="replace")
        source = SourceFile(prefix, str(path))
        diagnostic = make(
            "CD014",
            f"byte 0x{data[error.start]:02x} at offset {error.start} is not valid UTF-8",
            source.span(len(prefix), len(prefix)),
            source,
            label="invalid byte",
        )
        return _Read(None, diagnostic=diagnostic, source=source)


def _read_source(path: Path, out: TextIO) -> str | None:
    """The text of a contract file, or None after printing why it cannot be read."""
    read = read_contract(path)
    if read.diagnostic is not None and read.source is not None:
        print(render_all([read.diagnostic], read.source), file=out)
    elif read.error is not None:
        print(f"{path}: {read.error}", file=out)
    return read.text


def main(argv: list[str] | None = None, prog: str = "python -m contracts_dsl") -> int:
    """Run a command; returns the exit code (never calls sys.exit). ``prog`` is the command as
    the user typed it, for --help (``condpay dsl`` when mounted there)."""
    out = sys.stdout
    try:
        args = _build_parser(prog).parse_args(argv)
    except _UsageError as error:
        print(f"usage error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    command: str = args.command
    if command == "check":
        return _check(args.files, args.json, out)
    if command == "fmt":
        return _fmt(args.files, args.check, out)
    if command == "explain":
        return _explain(args.file, args.lang, out)
    if command == "simulate":
        return _simulate(args, out)
    if command == "schema":
        print(json.dumps(spec_schema(), indent=2, ensure_ascii=False), file=out)
        return EXIT_OK
    if command == "lsp":
        from contracts_dsl.lsp import serve  # pygls is loaded only for the language server

        serve()
        return EXIT_OK
    return _test(args.paths or [Path(".")], out)


_UNREADABLE: Final = {"CD006": "too_large", "CD014": "not_utf8"}


def _check(files: Sequence[Path], as_json: bool, out: TextIO) -> int:
    failed = False
    reports: list[dict[str, object]] = []
    for path in files:
        read = read_contract(path) if as_json else None
        text = read.text if read is not None else _read_source(path, out)
        if text is None:
            failed = True
            if read is not None:
                report: dict[str, object] = {"path": str(path), "ok": False}
                if read.diagnostic is not None:
                    # The file is too large (CD006) or not UTF-8 (CD014): say so as a diagnostic.
                    report["error"] = _UNREADABLE[read.diagnostic.code]
                    report["diagnostics"] = [read.diagnostic.to_json()]
                else:
                    report["error"] = "unreadable"
                    report["message"] = read.error
                    report["diagnostics"] = []
                reports.append(report)
            continue
        result = compile_source(text, str(path))
        omitted = result.checked.omitted
        failed = failed or not result.ok
        if as_json:
            reports.append(
                {
                    "path": str(path),
                    "ok": result.ok,
                    "hash": result.contract.hash if result.contract else None,
                    "diagnostics": [d.to_json() for d in result.diagnostics],
                    "omitted": len(omitted),
                    "omitted_errors": sum(1 for d in omitted if d.is_error),
                }
            )
        elif result.diagnostics:
            print(render_all(result.diagnostics, result.source, omitted), file=out)
        else:
            assert result.contract is not None
            print(f"{path}: ok ({result.contract.hash})", file=out)
    if as_json:
        print(json.dumps(reports, indent=2, ensure_ascii=False), file=out)
    return EXIT_FAILED if failed else EXIT_OK


def _fmt(files: Sequence[Path], check_only: bool, out: TextIO) -> int:
    failed = False
    for path in files:
        text = _read_source(path, out)
        if text is None:
            failed = True
            continue
        result = format_source(text, str(path))
        if result.text is None:
            print(render_all(result.diagnostics, SourceFile(text, str(path))), file=out)
            failed = True
            continue
        if not result.changed:
            continue
        if check_only:
            print(f"{path}: would be reformatted", file=out)
            failed = True
        else:
            path.write_text(result.text, encoding="utf-8")
            print(f"{path}: reformatted", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def _explain(path: Path, lang: str, out: TextIO) -> int:
    text = _read_source(path, out)
    if text is None:
        return EXIT_USAGE
    result = explain_source(text, lang, str(path))
    if result.text is None:
        print(render_all(result.diagnostics, SourceFile(text, str(path))), file=out)
        return EXIT_FAILED
    out.write(result.text)
    return EXIT_OK


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _UsageError(f"{path}: {error}") from None


def _load_events(path: Path) -> list[Event]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise _UsageError(f"{path}: {error}") from None
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as error:
            raise _UsageError(f"{path}:{number}: not JSON: {error}") from None
        event, errors = parse_event(data)
        if event is None:
            shown = "; ".join(str(e) for e in errors)
            raise _UsageError(f"{path}:{number}: {shown}")
        events.append(event)
    return events


def _simulate(args: argparse.Namespace, out: TextIO) -> int:
    text = _read_source(args.file, out)
    if text is None:
        return EXIT_USAGE
    result = compile_source(text, str(args.file))
    if result.contract is None:
        print(render_all(result.diagnostics, result.source), file=out)
        return EXIT_FAILED
    try:
        raw_params = _load_json(args.params)
        events = _load_events(args.events)
        final_now = None
        if args.now is not None:
            parsed = _literals.timestamp_us(args.now)
            if isinstance(parsed, str):
                raise _UsageError(f"--now: {parsed}")
            final_now = parsed
    except _UsageError as error:
        print(f"error: {error}", file=out)
        return EXIT_USAGE
    if not isinstance(raw_params, dict):
        print(f"error: {args.params}: parameters must be a JSON object", file=out)
        return EXIT_USAGE
    binding = bind_params(result.contract, raw_params)
    if binding.params is None:
        for problem in binding.errors:
            print(f"parameter error {problem}", file=out)
        return EXIT_FAILED
    steps = simulate(result.contract, binding.params, events, final_now)
    if args.json:
        payload = [
            {
                "event_id": step.event.event_id if step.event else None,
                "now": _literals.format_us(step.now_us),
                "legs": [leg.to_json() for leg in step.evaluation.legs],
                "remaining_minor": step.evaluation.escrow.remaining_minor,
                "state": step.evaluation.state.to_json(),
            }
            for step in steps
        ]
        print(json.dumps(payload, indent=2, ensure_ascii=False), file=out)
    else:
        out.write(render_steps(steps, result.contract))
    return EXIT_OK


def _test(paths: Sequence[Path], out: TextIO) -> int:
    with_spec, without = discover(paths)
    failed = 0
    cases = 0
    for contract in with_spec:
        outcome = run_spec(contract)
        cases += outcome.cases
        if outcome.passed:
            print(f"PASS {contract} ({outcome.cases} case(s))", file=out)
        else:
            failed += 1
            print(f"FAIL {contract}", file=out)
            for failure in outcome.failures:
                print(f"  - {failure}", file=out)
    for contract in without:
        print(f"SKIP {contract} (no {contract.stem}.spec.json)", file=out)
    print(
        f"{len(with_spec) - failed} passed, {failed} failed, {len(without)} without a spec; "
        f"{cases} case(s)",
        file=out,
    )
    if not with_spec:
        print("no spec files found", file=out)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK
