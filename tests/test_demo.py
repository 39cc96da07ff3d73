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
    # Act 4: a loan margin-called, cured and repaid; another defaulted by the deadline sweep
    # and its receipt sold through the bridge (the console wraps lines: compare words).
    words = " ".join(out.split())
    assert "MARGIN_CALL, cure within the hour" in words
    assert "REPAID, both receipts free" in words
    assert "DEFAULTED (CURE_PERIOD_EXPIRED)" in words
    assert "the loan is DISPOSED" in words
