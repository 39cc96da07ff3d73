"""Races over one title on PostgreSQL, through two server replicas on one database: two sales of
the same title to two buyers, two pledges of it to two financiers, a sale against a pledge, all
fired at once, half at each replica, many titles per round and many rounds.

Each race has exactly one winner; the loser gets the typed reason the winner's effect implies
(the title now someone else's: NOT_TITLE_HOLDER; split by a partial sale: TITLE_RETIRED;
pledged: TITLE_PLEDGED), never an internal error; money moves only for winning sales; and the
title ends exactly as its winner left it. Afterwards the cross-system and ledger audits run."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from condpay.client import SettlementsClient
from condpay.errors import ApiError
from google.protobuf.message import Message

from settlement.api.server import start_server
from settlement.config import Settings
from settlement.runtime import Runtime
from tests.settlement.audit import open_trade
from tests.settlement.world import (
    BANK,
    PLATFORM,
    TradeWorld,
    document,
    dvp_request,
    key,
    pledge_request,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SEED = 20_261_127
ROUNDS = 25
TITLES_PER_ROUND = 6
UNITS = 40
PRICE_MINOR = 1_000_00


@contextlib.asynccontextmanager
async def replica(database_url: str) -> AsyncIterator[str]:
    """A second server on the same database: its own engine, writer connections and caches
    (no bridge: these races are in one currency)."""
    runtime = Runtime(
        Settings(
            database_url=database_url, insecure=True, log_calls=False, writers=2, bridge="none"
        )
    )
    await runtime.start()
    try:
        server = await start_server(runtime, "127.0.0.1:0")
    except BaseException:
        await runtime.close()
        raise
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(grace_seconds=0)


@dataclass
class Contender:
    """One side of a race: a sale to a buyer or a pledge to a financier."""

    kind: str  # "sale" | "pledge"
    party: str  # the buyer or the pledgee
    units: int
    request: Message
    replica: int
    outcome: str = ""


@dataclass
class Race:
    title_id: str
    contenders: tuple[Contender, Contender]


def contender(
    trade: TradeWorld, kind: str, party: str, title_id: str, units: int, request_id: str
) -> Contender:
    seller = trade.party("seller")
    if kind == "sale":
        request: Message = dvp_request(
            seller,
            trade.party(party),
            title_id,
            units,
            ("CNY", PRICE_MINOR),
            request_id=request_id,
        )
    else:
        request = pledge_request(*seller, title_id, trade.wallets[party], request_id=request_id)
    return Contender(kind, party, units, request, replica=0)


async def test_one_title_is_never_sold_or_pledged_twice(pg_url: str) -> None:
    rng = random.Random(SEED)
    async with open_trade(pg_url) as trade, replica(pg_url) as second_address:
        bank = trade.client(f"institution/{BANK}")
        for name in ("financier_b",):
            trade.keys[name] = key(name)
            opened = await bank.open_wallet(BANK, key(name).public_key, kind="ENTERPRISE", tier=0)
            trade.wallets[name] = opened.wallet.wallet_id
        funding = ROUNDS * TITLES_PER_ROUND * PRICE_MINOR
        for buyer in ("buyer", "second_buyer"):
            await trade.fund(buyer, "CNY", funding)
        second = SettlementsClient(second_address, caller=PLATFORM)
        trade.harness.clients.append(second)
        clients = (trade.platform, second)
        expected = {"seller": 0, "buyer": funding, "second_buyer": funding}
        winners: Counter[tuple[str, int]] = Counter()
        reasons: Counter[str] = Counter()

        for round_number in range(ROUNDS):
            races = []
            for i in range(TITLES_PER_ROUND):
                tag = f"r{round_number}t{i}"
                title_id = await trade.issue_bill_of_lading("seller", UNITS, document(tag))
                pairing = rng.choice(["sales", "pledges", "sale-vs-pledge"])
                units = rng.choice([UNITS, UNITS, 25])
                if pairing == "sales":
                    sides = (("sale", "buyer"), ("sale", "second_buyer"))
                elif pairing == "pledges":
                    sides = (("pledge", "financier"), ("pledge", "financier_b"))
                else:
                    sides = (
                        ("sale", rng.choice(["buyer", "second_buyer"])),
                        ("pledge", "financier"),
                    )
                pair = [
                    contender(trade, kind, party, title_id, units, f"{tag}-{n}")
                    for n, (kind, party) in enumerate(sides)
                ]
                rng.shuffle(pair)
                pair[0].replica, pair[1].replica = (0, 1) if rng.random() < 0.5 else (1, 0)
                races.append(Race(title_id, (pair[0], pair[1])))

            async def fire(c: Contender) -> None:
                client = clients[c.replica]
                try:
                    await client.send(c.request)
                except ApiError as error:
                    c.outcome = error.reason
                else:
                    c.outcome = "OK"

            everyone = [c for race in races for c in race.contenders]
            rng.shuffle(everyone)
            await asyncio.gather(*(fire(c) for c in everyone))

            for race in races:
                won = [c for c in race.contenders if c.outcome == "OK"]
                assert len(won) == 1, (
                    race.title_id,
                    [(c.kind, c.outcome) for c in race.contenders],
                )
                (winner,) = won
                (loser,) = [c for c in race.contenders if c is not winner]
                if winner.kind == "pledge":
                    implied = "TITLE_PLEDGED"
                elif winner.units < UNITS:
                    implied = "TITLE_RETIRED"
                else:
                    implied = "NOT_TITLE_HOLDER"
                assert loser.outcome == implied, (race.title_id, winner, loser)
                winners[(winner.kind, winner.replica)] += 1
                reasons[loser.outcome] += 1

                title = await trade.title(race.title_id)
                if winner.kind == "pledge":
                    assert (title.holder_wallet_id, title.pledged_to) == (
                        trade.wallets["seller"],
                        trade.wallets[winner.party],
                    )
                    continue
                expected[winner.party] -= PRICE_MINOR
                expected["seller"] += PRICE_MINOR
                sold = race.title_id if winner.units == UNITS else f"{race.title_id}.1"
                delivered = await trade.title(sold)
                assert (delivered.holder_wallet_id, delivered.units, delivered.pledged_to) == (
                    trade.wallets[winner.party],
                    winner.units,
                    "",
                )
                if winner.units < UNITS:
                    rest = await trade.title(f"{race.title_id}.2")
                    assert (rest.holder_wallet_id, rest.units) == (
                        trade.wallets["seller"],
                        UNITS - winner.units,
                    )

        for name, available in expected.items():
            assert await trade.balance(name, "CNY") == (available, 0), name
        for pledgee in ("financier", "financier_b"):
            assert await trade.balance(pledgee, "CNY") == (0, 0)
        sales = sum(n for (kind, _), n in winners.items() if kind == "sale")
        assert len(await trade.stored_settlements()) == sales
        assert await trade.entry_kinds("seller") == ["DVP"] * sales
        # Every unit is held by someone, none twice.
        held = [
            t for name in ("seller", "buyer", "second_buyer") for t in await trade.titles_of(name)
        ]
        assert sum(t.units for t in held) == ROUNDS * TITLES_PER_ROUND * UNITS
        assert len({t.title_id for t in held}) == len(held)
        assert set(reasons) <= {"TITLE_PLEDGED", "NOT_TITLE_HOLDER", "TITLE_RETIRED"}
        print(f"\ntitle races: winners {dict(winners)}, losers {dict(reasons)}")
