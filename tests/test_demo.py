"""`make run`'s story runs end to end against a real server and leaves a clean ledger (the
harness audits it after the test)."""

from __future__ import annotations

import pytest

from sim_central_bank.demo import story
from tests.support.harness import Harness


async def test_the_demo_story(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    await story(harness.address)
    out = capsys.readouterr().out
    assert "SETTLED" in out
    assert "replay: True" in out
    assert "INSUFFICIENT_FUNDS" in out
    assert "PASS" in out
