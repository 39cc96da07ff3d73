"""Replies are built after the whole batch ran; each must show the state its own request left,
not what a later command of the same batch did to the same record."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from typing import Any

from settlement.ledger import records, titles
from settlement.ledger.engine import LedgerEngine, _Submission
from settlement.ledger.records import FLAT_RECORDS, TitleRecord, TitleState, WalletRecord
from settlement.ledger.working_set import WorkingSet, World
from wallets import WalletKind


def _command(cls: Any, request_id: str, **fields: Any) -> Any:
    return cls(method="m", caller="platform/x", request_id=request_id, request_hash=b"h", **fields)


async def test_a_split_reply_does_not_show_a_later_pledge_of_the_same_batch() -> None:
    title = TitleRecord(
        "t_a", "bill_of_lading", "carrier", "w_seller", 40, "d", "00", "", "",
        TitleState.ACTIVE, 1, 0, 0,
    )  # fmt: skip
    financier = WalletRecord("w_fin", WalletKind.ENTERPRISE, 0, "i", b"", "", "", 0)
    ws = WorkingSet(10, {"w_fin": financier}, {}, {}, {}, World(titles={"t_a": title}))
    split = _command(
        titles.SplitTitle, "r1", title_id="t_a", holder="w_seller", units_first=25, expires_at_us=99
    )
    pledge = _command(
        titles.PledgeTitle,
        "r2",
        title_id="t_a.1",
        holder="w_seller",
        pledgee="w_fin",
        expires_at_us=99,
    )
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    applied = LedgerEngine._apply(
        ws,
        [_Submission(split, None, future), _Submission(pledge, None, future)],  # type: ignore[arg-type]
    )
    result: tuple[TitleRecord, TitleRecord] = applied[0].result  # type: ignore[assignment]
    sold = result[0]
    assert sold.title_id == "t_a.1"
    assert sold.pledged_to == ""  # as SplitTitle left it
    assert applied[1].result.pledged_to == "w_fin"  # type: ignore[attr-defined]
    assert ws.title("t_a.1").pledged_to == "w_fin"  # type: ignore[union-attr]


def test_records_snapshotted_by_a_shallow_copy_hold_only_immutable_values() -> None:
    """reply_snapshot copies a quote or settlement shallowly: that is a snapshot only while every
    field is an immutable value. A list, dict or other mutable field added to one of them must
    move it to the deep-copied records."""
    immutable = {"str", "int", "bool", "bytes", "int | None", "str | None"}
    for record in FLAT_RECORDS:
        for f in dataclasses.fields(record):
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            named = vars(records).get(kind)
            is_enum = isinstance(named, type) and issubclass(named, enum.Enum)
            assert kind in immutable or is_enum, f"{record.__name__}.{f.name}: {kind}"
    assert {r.__name__ for r in FLAT_RECORDS} == {"QuoteRecord", "SettlementRecord"}
