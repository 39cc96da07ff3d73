"""docs/api.md keeps up with the API: every RPC and every error reason is documented."""

from __future__ import annotations

from pathlib import Path

from condpay.errors import REASON_PREFIX
from condpay.v1 import errors_pb2

from settlement.api.methods import METHODS
from settlement.errors import Reason

API_DOC = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()


def test_every_rpc_has_a_section_naming_its_roles() -> None:
    for method, spec in METHODS.items():
        name = method.rsplit("/", 1)[1]
        heading = next(
            (line for line in API_DOC.splitlines() if line.startswith(f"### {name} ")), None
        )
        assert heading is not None, f"docs/api.md has no section for {method}"
        if len(spec.roles) <= 2:
            for role in spec.roles:
                assert f"`{role.value}`" in heading, (method, role)


def test_every_reason_is_in_the_table() -> None:
    for reason in Reason:
        assert f"| `{reason.name}` | {reason.code.name} |" in API_DOC, reason.name


def reason_table(doc: str, heading: str) -> dict[str, str]:
    """The rows of the table under ``heading``: reason -> the second column."""
    section = doc.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| `")]
    return {cells[1].strip().strip("`"): cells[2].strip() for cells in rows}


def test_the_reason_table_lists_exactly_the_proto_enum() -> None:
    """Both ways: no reason missing from docs/api.md's table, and no row for a reason that
    condpay.v1.ErrorReason does not have; each with the status code the server sends."""
    table = reason_table(API_DOC, "## Error reasons")
    enum_reasons = {
        name.removeprefix(REASON_PREFIX)
        for name, number in errors_pb2.ErrorReason.items()
        if number != errors_pb2.ERROR_REASON_UNSPECIFIED
    }
    assert sorted(table) == sorted(enum_reasons)
    assert table == {reason.name: reason.code.name for reason in Reason}


def test_the_table_reader_reads_only_its_section() -> None:
    doc = (
        "intro\n## Error reasons\n\n| reason | status |\n|---|---|\n| `A` | NOT_FOUND |\n"
        "\n## Next\n| `B` | X |\n"
    )
    assert reason_table(doc, "## Error reasons") == {"A": "NOT_FOUND"}
