"""The readers' sessions (settlement/ledger/read_sessions.py) on both backends: one snapshot per
session, however long it stays open and whatever commits meanwhile through the real server."""

from __future__ import annotations

import pytest
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from settlement.db import models
from settlement.ledger.read_sessions import LOOP_ROWS_MAX
from tests.support.harness import Harness
from wallets import OwnerKey, WalletKind


def _available(wallet_id: str) -> SelectOfScalar[int]:
    # Columns, not entities: an entity already in the session's identity map would be answered
    # from it, whatever the snapshot.
    return select(models.Balance.available).where(
        col(models.Balance.wallet_id) == wallet_id, col(models.Balance.currency) == "CNY"
    )


_HEAD: SelectOfScalar[int] = select(models.LedgerHead.seq)


@pytest.mark.parametrize("rows", [1, LOOP_ROWS_MAX + 1], ids=["point", "page"])
async def test_a_read_session_sees_one_snapshot_while_a_transfer_commits(
    harness: Harness, rows: int
) -> None:
    """On SQLite a point read's session runs on the event loop, a page's through aiosqlite:
    both keep one snapshot."""
    bank_key = await harness.institution("bank-snap")
    cb, bank = harness.client(), harness.client("institution/bank-snap")
    await cb.issue("bank-snap", "CNY", 500_00)
    key = OwnerKey.generate()
    opened = await bank.open_wallet(
        "bank-snap", key.public_key, kind=WalletKind.ENTERPRISE.value, tier=0
    )
    wallet = opened.wallet.wallet_id
    await bank.transfer(bank_key, "w_reserve.bank-snap", wallet, "CNY", 1_00)
    sessions = harness.runtime.read_sessions

    async with sessions.session(rows) as session:
        before = (await session.exec(_available(wallet))).one()
        head = (await session.exec(_HEAD)).one()
        # A transfer commits through the server while this session is open.
        await bank.transfer(bank_key, "w_reserve.bank-snap", wallet, "CNY", 123_45)
        assert (await session.exec(_available(wallet))).one() == before == 1_00
        assert (await session.exec(_HEAD)).one() == head
    async with sessions.session() as session:
        assert (await session.exec(_available(wallet))).one() == before + 123_45
        assert (await session.exec(_HEAD)).one() > head
