"""A cross-border trade world for settlement tests, all through the real gRPC server: the central
bank, a commercial bank, the core's bridge gateway (institution CONDPAY, funded on both sides),
a Shenzhen seller, a Hong Kong buyer, a financier, and a carrier that issues bills of lading.

Besides the world itself: request builders that sign an instruction once (so that the very same
request can be sent twice, as a client retry does), and read helpers for the assertions
(balances of everyone at once, titles, journal entry kinds, settlements)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest
from condpay.client import Price, SettlementsClient
from condpay.client import dvp_request as client_dvp_request
from condpay.errors import ApiError
from condpay.v1 import asset_pb2, settlement_pb2, wallet_pb2

from bridges import FaultPlan, FaultyBridge
from settlement.ledger.records import SettlementRecord
from settlement.runtime import Runtime
from tests.support.harness import AUDITOR, Harness, central_bank_of
from wallets import (
    OwnerKey,
    PledgeRelease,
    PvPInstruction,
    SignedInstruction,
    TitleIssue,
    TitlePledge,
    TitleSplit,
)

BANK = "icbc-sz"
GATEWAY = "CONDPAY"
GATEWAY_WALLET = f"w_reserve.{GATEWAY}"
PLATFORM = "platform/gba-trade"
OTHER_PLATFORM = "platform/other-market"
FINANCIER = "financier/bank-a"
CARRIER = "carrier.cosco"
# What the central bank issues to the bank's and the gateway's reserves, per currency.
RESERVE_MINOR = 10_000_000_00
CURRENCIES = ("CNY", "HKD", "THB", "AED", "SAR")
PARTIES = ("seller", "buyer", "financier", "second_buyer")

Holdings = dict[tuple[str, str], tuple[int, int]]


async def stop_payouts(runtime: Runtime) -> None:
    """From now on only the sweep (or the test itself) drives payouts: the runtime's payout
    starter (settlement/coordination/payouts.py) starts none when their release commits."""
    assert runtime.payouts is not None
    await runtime.payouts.stop()


def key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b".")[:32])


def expiry_us(seconds: float = 300.0) -> int:
    """An instruction expiry on the wall clock (as the client library computes it)."""
    return int((time.time() + seconds) * 1e6)


def document(name: str) -> bytes:
    return f"bill of lading {name}: 40 pallets of LED drivers".encode()


async def refused(reason: str, call: Awaitable[Any]) -> ApiError:
    """Await ``call`` and require it to fail with the typed ``reason``."""
    with pytest.raises(ApiError) as raised:
        await call
    assert raised.value.reason == reason, raised.value
    return raised.value


def signed(document: SignedInstruction) -> wallet_pb2.SignedInstruction:
    return wallet_pb2.SignedInstruction(payload=document.payload, signature=document.signature)


# -- requests signed once, so that they can be sent again unchanged ------------------------------
def issue_request(
    issuer_key: OwnerKey,
    issuer_id: str,
    holder: str,
    units: int,
    document_bytes: bytes,
    *,
    request_id: str,
    kind: str = "bill_of_lading",
    expires_at_us: int = 0,
    dry_run: bool = False,
    submitter: str = PLATFORM,
) -> asset_pb2.IssueTitleRequest:
    issue = TitleIssue(
        issuer=issuer_id,
        kind=kind,
        holder=holder,
        units=units,
        description="40 pallets of LED drivers, Yantian -> Los Angeles",
        document_sha256=hashlib.sha256(document_bytes).hexdigest(),
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us or expiry_us(),
    )
    return asset_pb2.IssueTitleRequest(
        request_id=request_id, dry_run=dry_run, issuer_instruction=signed(issue.sign(issuer_key))
    )


def split_request(
    holder_key: OwnerKey,
    holder: str,
    title_id: str,
    units_first: int,
    *,
    request_id: str,
    submitter: str = PLATFORM,
) -> asset_pb2.SplitTitleRequest:
    split = TitleSplit(title_id, holder, units_first, submitter, request_id, expiry_us())
    return asset_pb2.SplitTitleRequest(
        request_id=request_id, holder_instruction=signed(split.sign(holder_key))
    )


def pledge_request(
    holder_key: OwnerKey,
    holder: str,
    title_id: str,
    pledgee: str,
    *,
    request_id: str,
    dry_run: bool = False,
    submitter: str = PLATFORM,
) -> asset_pb2.PledgeTitleRequest:
    pledge = TitlePledge(title_id, holder, pledgee, submitter, request_id, expiry_us())
    return asset_pb2.PledgeTitleRequest(
        request_id=request_id, dry_run=dry_run, holder_instruction=signed(pledge.sign(holder_key))
    )


def release_request(
    signer_key: OwnerKey,
    pledgee: str,
    title_id: str,
    *,
    request_id: str,
    submitter: str = PLATFORM,
) -> asset_pb2.ReleasePledgeRequest:
    release = PledgeRelease(title_id, pledgee, submitter, request_id, expiry_us())
    return asset_pb2.ReleasePledgeRequest(
        request_id=request_id, pledgee_instruction=signed(release.sign(signer_key))
    )


def pvp_request(
    payer_key: OwnerKey,
    payer: str,
    payee: str,
    quote: settlement_pb2.FxQuote,
    *,
    request_id: str,
    expires_at_us: int = 0,
    dry_run: bool = False,
    submitter: str = PLATFORM,
) -> settlement_pb2.SettlePvPRequest:
    """The payer's PvP at ``quote``'s terms."""
    return pvp_terms_request(
        payer_key,
        payer,
        payee,
        quote.quote_id,
        (quote.source.currency, quote.source.amount_minor),
        (quote.target.currency, quote.target.amount_minor),
        request_id=request_id,
        expires_at_us=expires_at_us,
        dry_run=dry_run,
        submitter=submitter,
    )


def pvp_terms_request(
    payer_key: OwnerKey,
    payer: str,
    payee: str,
    quote_id: str,
    pay: tuple[str, int],
    receive: tuple[str, int],
    *,
    request_id: str,
    expires_at_us: int = 0,
    dry_run: bool = False,
    submitter: str = PLATFORM,
) -> settlement_pb2.SettlePvPRequest:
    """A PvP with any terms (they need not be the quote's)."""
    pvp = PvPInstruction(
        payer=payer,
        payee=payee,
        quote_id=quote_id,
        pay_currency=pay[0],
        pay_minor=pay[1],
        receive_currency=receive[0],
        receive_minor=receive[1],
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us or expiry_us(),
    )
    return settlement_pb2.SettlePvPRequest(
        request_id=request_id, dry_run=dry_run, payer_instruction=signed(pvp.sign(payer_key))
    )


def dvp_request(
    seller: tuple[OwnerKey, str],
    buyer: tuple[OwnerKey, str],
    title_id: str,
    units: int,
    price: Price,
    *,
    request_id: str,
    expires_at_us: int = 0,
    submitter: str = PLATFORM,
) -> settlement_pb2.SettleDvPRequest:
    return client_dvp_request(
        seller,
        buyer,
        title_id,
        units,
        price,
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us or expiry_us(),
    )


@dataclass
class TradeWorld:
    harness: Harness
    wallets: dict[str, str] = field(default_factory=dict)
    keys: dict[str, OwnerKey] = field(default_factory=dict)
    _clients: dict[str, SettlementsClient] = field(default_factory=dict)

    def client(self, caller: str) -> SettlementsClient:
        """One client (and channel) per identity, closed with the harness."""
        found = self._clients.get(caller)
        if found is None:
            found = SettlementsClient(self.harness.address, caller=caller)
            self.harness.clients.append(found)
            self._clients[caller] = found
        return found

    @property
    def cb(self) -> SettlementsClient:
        return self.client("central_bank/pboc")

    @property
    def platform(self) -> SettlementsClient:
        return self.client(PLATFORM)

    def party(self, name: str) -> tuple[OwnerKey, str]:
        return self.keys[name], self.wallets[name]

    async def balance(self, name: str, currency: str) -> tuple[int, int]:
        """(available, held) of a party (or any wallet id); (0, 0) for a currency never held."""
        wallet_id = self.wallets.get(name, name)
        wallet = await self.client(AUDITOR).get_wallet(wallet_id)
        line = next((b for b in wallet.balances if b.available.currency == currency), None)
        return (0, 0) if line is None else (line.available.amount_minor, line.held.amount_minor)

    async def holdings(self) -> Holdings:
        """Every party's, the gateway's and the bank's (available, held), in every currency."""
        names = [*self.wallets, GATEWAY_WALLET, f"w_reserve.{BANK}"]
        values = await asyncio.gather(*(self.balance(n, c) for n in names for c in CURRENCIES))
        pairs = [(n, c) for n in names for c in CURRENCIES]
        return dict(zip(pairs, values, strict=True))

    async def bridge_faults(self, plan: FaultPlan) -> FaultyBridge:
        """Put ``plan`` between the core and its in-process bridge; returns the wrapper (its
        ``set_plan`` changes the faults, its ``fates`` say what each call met)."""
        link = self.harness.runtime.bridge
        assert link is not None
        wrapped = await FaultyBridge.wrap(link.api, plan)  # type: ignore[arg-type]
        link.api = wrapped
        return wrapped

    async def fund(self, name: str, currency: str, amount_minor: int) -> None:
        bank = self.client(f"institution/{BANK}")
        await bank.transfer(
            key(BANK), f"w_reserve.{BANK}", self.wallets[name], currency, amount_minor
        )

    async def issue_bill_of_lading(
        self, holder: str, units: int, document_bytes: bytes, *, kind: str = "bill_of_lading"
    ) -> str:
        reply = await self.platform.issue_title(
            self.keys[CARRIER],
            CARRIER,
            kind,
            self.wallets[holder],
            units,
            document_bytes,
            description="40 pallets of LED drivers, Yantian -> Los Angeles",
        )
        return reply.title.title_id

    async def title(self, title_id: str) -> asset_pb2.Title:
        return (await self.platform.get_title(title_id)).title

    async def title_moves(self, title_id: str) -> list[str]:
        return [m.kind for m in (await self.platform.get_title(title_id)).moves]

    async def titles_of(self, name: str, *, page_size: int = 0) -> list[asset_pb2.Title]:
        """Every active title the party holds, page by page."""
        client, out, token = self.platform, [], ""
        while True:
            page: asset_pb2.ListTitlesResponse = await client.api.assets.list_titles(
                asset_pb2.ListTitlesRequest(
                    holder_wallet_id=self.wallets.get(name, name),
                    page_size=page_size,
                    page_token=token,
                ),
            )
            out += list(page.titles)
            token = page.next_page_token
            if not token:
                return out

    async def entry_kinds(self, name: str) -> list[str]:
        """The kinds of the journal entries touching a party's wallet, in order, read from the
        database (what was committed, whatever the API's view of it)."""
        wallet_id = self.wallets.get(name, name)
        entries = await self.harness.runtime.reader.journal(wallet_id, 0, 10_000)
        return [e.kind.value for e in entries]

    async def list_settlements(
        self, client: SettlementsClient, **filters: object
    ) -> list[settlement_pb2.Settlement]:
        out: list[settlement_pb2.Settlement] = []
        token = ""
        while True:
            page: settlement_pb2.ListSettlementsResponse = (
                await client.api.settlements.list_settlements(
                    settlement_pb2.ListSettlementsRequest(page_token=token, **filters),  # type: ignore[arg-type]
                )
            )
            out += list(page.settlements)
            token = page.next_page_token
            if not token:
                return out

    async def stored_settlements(self) -> list[SettlementRecord]:
        return await self.harness.runtime.settlements.settlements(limit=10_000)

    async def settle_everything(self, timeout_seconds: float = 10.0) -> list[SettlementRecord]:
        """Run the recovery sweep until every settlement is FINAL or ABORTED."""
        recovery = self.harness.runtime.recovery
        assert recovery is not None
        deadline = time.monotonic() + timeout_seconds
        while True:
            found = await self.stored_settlements()
            if all(s.state.done for s in found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not settled after {timeout_seconds} s: "
                    f"{[(s.settlement_id, s.state.value) for s in found if not s.state.done]}"
                )
            await recovery.sweep()
            await asyncio.sleep(0.02)


async def build_world(harness: Harness) -> TradeWorld:
    world = TradeWorld(harness)
    cb = world.cb
    for institution in (BANK, GATEWAY):
        await cb.register_institution(institution, institution.upper(), key(institution).public_key)
        for currency in CURRENCIES:
            await world.client(central_bank_of(currency)).issue(
                institution, currency, RESERVE_MINOR
            )
    bank = world.client(f"institution/{BANK}")
    for name in PARTIES:
        world.keys[name] = key(name)
        opened = await bank.open_wallet(BANK, key(name).public_key, kind="ENTERPRISE", tier=0)
        world.wallets[name] = opened.wallet.wallet_id
    world.keys[CARRIER] = key(CARRIER)
    await cb.register_oracle(CARRIER, "ED25519", key(CARRIER).public_key)
    return world
