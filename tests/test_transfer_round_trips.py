"""A transfer's batch on PostgreSQL is three round trips: one statement looks up the stored
outcomes and locks the balances and the ledger head (the wallets are known to the process: their
rows never change), one writes, and the COMMIT (which carries the next batch's BEGIN). A retry
of the same request is answered from its stored outcome, found by that same first statement, and
writes nothing."""

from __future__ import annotations

import pytest

from tests.settlement.audit import open_trade
from tests.settlement.world import BANK, key
from tests.support.writer_plans import writer_statements

pytestmark = pytest.mark.postgres


def _kinds(statements: list[str]) -> list[str]:
    kinds = {"SELECT ARRAY": "lock", "WITH balance_rows": "write", "COMMIT;": "commit"}
    flat = [" ".join(s.split()) for s in statements]
    return [next((k for prefix, k in kinds.items() if s.startswith(prefix)), s) for s in flat]


async def test_a_transfer_locks_with_one_statement_writes_with_one_and_commits(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with writer_statements(monkeypatch) as sent:
        async with open_trade(pg_url) as trade:
            bank = trade.client(f"institution/{BANK}")
            request = bank.transfer_request(
                key(BANK), f"w_reserve.{BANK}", trade.wallets["buyer"], "HKD", 12_34
            )
            sent.clear()
            first = await bank.send(request)
            transfer = list(sent)
            sent.clear()
            again = await bank.send(request)
            retry = list(sent)
            assert await trade.balance("buyer", "HKD") == (12_34, 0)
    assert _kinds(transfer) == ["lock", "write", "commit"], transfer
    assert _kinds(retry) == ["lock", "commit"], retry
    # The same reply, marked as a replay.
    assert again.operation.replayed
    again.operation.replayed = False
    assert again == first
