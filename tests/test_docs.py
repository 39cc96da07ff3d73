"""docs/api.md keeps up with the API: every RPC and every error reason is documented."""

from __future__ import annotations

from pathlib import Path

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
