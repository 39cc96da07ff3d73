"""Reads are scoped by tenant: the role x method x tenant matrix of docs/api.md ("Who may call
what and see what"), checked cell by cell through the real gRPC server, and opaque page tokens.

For a read, the caller of the object's own tenant sees it, and a caller of the same role in
another tenant gets exactly the NOT_FOUND of an id that does not exist (code, reason, metadata
and message, the id swapped) or, in a list, does not find it. For every call, the role check
answers as the table says.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from condpay.attest import build_attestation, sign_ed25519
from condpay.client import SettlementsClient
from condpay.errors import ApiError
from condpay.loans import LoanTerms, open_loan_request
from condpay.v1 import (
    asset_pb2,
    evidence_pb2,
    finance_pb2,
    oracle_pb2,
    payment_pb2,
    settlement_pb2,
    wallet_pb2,
)
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from settlement.api.identity import Role
from settlement.api.methods import METHODS
from tests.payments.world import CUSTOMS, WAREHOUSE, compiled
from tests.settlement.world import BANK, CARRIER, FINANCIER, PLATFORM, build_world, document, key
from tests.support.harness import AUDITOR, Harness, start_harness
from tests.support.snapshots import raw_call

API_DOC = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
ROLE_COLUMNS = ("central_bank", "institution", "platform", "financier", "oracle", "auditor")
OTHER_BANK = "boc-hk"
OTHER_PLATFORM = "platform/other-market"
# Per role: (a caller of the object's tenant, a caller of the same role in another tenant).
TENANTS: dict[str, tuple[str, str]] = {
    "central_bank": ("central_bank/pboc", "central_bank/hkma"),
    "institution": (f"institution/{BANK}", f"institution/{OTHER_BANK}"),
    "platform": (PLATFORM, OTHER_PLATFORM),
    "financier": (FINANCIER, "financier/other-bank"),
    "oracle": (f"oracle/{CARRIER}", "oracle/other.oracle"),
    "auditor": (AUDITOR, "auditor/second"),
}


@dataclass(frozen=True)
class Row:
    method: str  # /condpay.v1.Service/Method
    obj: str  # wallet | journal | payment | title | settlement | —
    cells: dict[str, str]  # role -> — | call | own | all | currency


def doc_table() -> list[Row]:
    section = API_DOC.split("## Who may call what and see what", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        service, name = cells[0].strip("`").split(".")
        rows.append(
            Row(
                f"/condpay.v1.{service}/{name}",
                cells[1],
                dict(zip(ROLE_COLUMNS, cells[2:], strict=True)),
            )
        )
    return rows


def test_the_table_is_the_role_table() -> None:
    """Every RPC has a row; a role may call it exactly where its cell is not `—`."""
    rows = {r.method: r for r in doc_table()}
    assert set(rows) == set(METHODS)
    for method, spec in METHODS.items():
        allowed = {Role(r) for r, cell in rows[method].cells.items() if cell != "—"}
        assert allowed == spec.roles, method
        assert set(rows[method].cells.values()) <= {"—", "call", "own", "all", "currency"}


# -- the world -----------------------------------------------------------------------------------
@dataclass
class Tenancy:
    harness: Harness
    wallets: dict[str, str]
    payment: payment_pb2.Payment
    title_of: dict[str, str] = field(default_factory=dict)  # role -> a title its tenant sees
    settlement_of: dict[str, str] = field(default_factory=dict)
    loan_id: str = ""
    clients: dict[str, SettlementsClient] = field(default_factory=dict)

    def client(self, caller: str) -> SettlementsClient:
        found = self.clients.get(caller)
        if found is None:
            found = SettlementsClient(self.harness.address, caller=caller, attempts_max=1)
            self.harness.clients.append(found)
            self.clients[caller] = found
        return found


def warehouse_params(wallets: dict[str, str], price_minor: int) -> dict[str, object]:
    return {
        "buyer": wallets["buyer"],
        "seller": wallets["seller"],
        "price": ("CNY", price_minor),
        "declaration": "D-2026-1205",
    }


async def build_tenancy(h: Harness) -> Tenancy:
    trade = await build_world(h)
    await trade.cb.register_institution(OTHER_BANK, "BOC HK", key(OTHER_BANK).public_key)
    await trade.cb.register_oracle(CUSTOMS, "ED25519", key("customs").public_key)
    await trade.fund("buyer", "CNY", 100_000_00)
    await trade.fund("financier", "CNY", 100_000_00)
    world = Tenancy(h, trade.wallets, payment_pb2.Payment())
    platform, financier = world.client(PLATFORM), world.client(FINANCIER)
    locked = await platform.lock_payment(
        key("buyer"), compiled(WAREHOUSE), warehouse_params(trade.wallets, 10_000_00),
        send_source=WAREHOUSE,
    )  # fmt: skip
    await financier.fund_escrow(
        key("financier"),
        trade.wallets["financier"],
        locked.payment.payment_id,
        "CNY",
        1_000_00,
        payer_key=key("buyer"),
        payer_wallet=trade.wallets["buyer"],
    )
    world.payment = await platform.get_payment(locked.payment.payment_id)
    seller, buyer = (key("seller"), trade.wallets["seller"]), (key("buyer"), trade.wallets["buyer"])
    # Title A: issued (through the platform) by the carrier, delivered by the platform's DvP.
    title_a = await trade.issue_bill_of_lading("seller", 40, document("A"))
    dvp_a = await platform.settle_dvp(seller, buyer, title_a, 40, ("CNY", 1_000_00))
    # Title B: pledged to the financier and released, then delivered by the financier's DvP.
    title_b = await trade.issue_bill_of_lading("seller", 10, document("B"))
    await financier.pledge_title(
        key("seller"), trade.wallets["seller"], title_b, trade.wallets["financier"]
    )
    await financier.release_pledge(key("financier"), trade.wallets["financier"], title_b)
    dvp_b = await financier.settle_dvp(seller, buyer, title_b, 10, ("CNY", 500_00))
    # A loan the platform (the borrower's agent) and the financier (the lender's) act on, against
    # a warehouse receipt of the seller's (a wallet of BANK's).
    receipt = await trade.issue_bill_of_lading(
        "seller", 100, document("R"), kind="warehouse_receipt"
    )
    now = int(time.time() * 1e6)
    terms = LoanTerms(
        borrower=trade.wallets["seller"],
        financier=trade.wallets["financier"],
        borrower_agent=PLATFORM,
        financier_agent=FINANCIER,
        title_id=receipt,
        currency="CNY",
        principal_minor=1_000_00,
        fee_minor=0,
        rate_bps=0,
        maturity_at_us=now + 86_400_000_000,
        unit_price_minor=100_00,
        haircut_bps=5_000,
        margin_call_bps=10_000,
        cure_period_s=3_600,
        price_oracle=CUSTOMS,
        warehouse_oracle=CARRIER,
        sensor_oracles="",
        sensor_threshold=0,
        disposal="RETAIN",
        submitter=FINANCIER,
        request_id="tenancy-loan",
        expires_at_us=now + 300_000_000,
    )
    opened = await financier.api.finance.open_loan(
        open_loan_request(terms, key("seller"), key("financier"))
    )
    world.loan_id = opened.loan.loan_id
    for role in ROLE_COLUMNS:
        world.title_of[role] = title_b if role == "financier" else title_a
        world.settlement_of[role] = (
            dvp_b.settlement.settlement_id
            if role == "financier"
            else dvp_a.settlement.settlement_id
        )
    return world


@pytest.fixture
async def tenancy(tmp_path: Path) -> AsyncIterator[Tenancy]:
    """The matrix runs on SQLite (the paging test below also on PostgreSQL)."""
    async with start_harness(f"sqlite:///{tmp_path}/condpay.db") as h:
        yield await build_tenancy(h)


# -- reading one object as a caller --------------------------------------------------------------
def missing_like(ident: str) -> str:
    """An id of the same shape that names nothing."""
    return ident[:-4] + ("zzzz" if not ident.endswith("zzzz") else "yyyy")


@dataclass(frozen=True)
class Probe:
    """What to ask for ``obj`` and whether the reply shows it."""

    target: str  # the object id the answer is about
    request: Message
    shows: Any  # (reply) -> bool


def probe(world: Tenancy, method: str, role: str, ident: str | None = None) -> Probe:
    name = method.rsplit("/", 1)[1]
    wallet = world.wallets["buyer"]
    payment = world.payment.payment_id
    title = world.title_of[role]
    settlement = world.settlement_of[role]
    if name == "GetWallet":
        w = ident or wallet
        return Probe(w, wallet_pb2.GetWalletRequest(wallet_id=w), lambda r: r.wallet.wallet_id == w)
    if name == "ListJournal":
        w = ident or wallet
        return Probe(w, wallet_pb2.ListJournalRequest(wallet_id=w), lambda r: len(r.entries) > 0)
    if name == "GetPayment":
        p = ident or payment
        return Probe(
            p, payment_pb2.GetPaymentRequest(payment_id=p), lambda r: r.payment.payment_id == p
        )
    if name == "WatchPayment":
        p = ident or payment
        return Probe(
            p, payment_pb2.WatchPaymentRequest(payment_id=p), lambda r: r.payment.payment_id == p
        )
    if name == "ListPayments":
        return Probe(
            payment,
            payment_pb2.ListPaymentsRequest(page_size=500),
            lambda r: payment in [p.payment_id for p in r.payments],
        )
    if name == "GetPaymentEvidence":
        p = ident or payment
        return Probe(
            p,
            evidence_pb2.GetPaymentEvidenceRequest(payment_id=p),
            lambda r: json.loads(r.bundle)["payment"]["payment_id"] == p,
        )
    if name == "GetTitle":
        t = ident or title
        return Probe(t, asset_pb2.GetTitleRequest(title_id=t), lambda r: r.title.title_id == t)
    if name == "ListTitles":
        return Probe(
            title,
            asset_pb2.ListTitlesRequest(holder_wallet_id=wallet, page_size=500),
            lambda r: title in [t.title_id for t in r.titles],
        )
    if name == "GetSettlement":
        s = ident or settlement
        return Probe(
            s,
            settlement_pb2.GetSettlementRequest(settlement_id=s),
            lambda r: r.settlement.settlement_id == s,
        )
    if name == "ListSettlements":
        return Probe(
            settlement,
            settlement_pb2.ListSettlementsRequest(page_size=500),
            lambda r: settlement in [s.settlement_id for s in r.settlements],
        )
    if name == "GetLoan":
        loan = ident or world.loan_id
        return Probe(
            loan, finance_pb2.GetLoanRequest(loan_id=loan), lambda r: r.loan.loan_id == loan
        )
    if name == "WatchLoan":
        loan = ident or world.loan_id
        return Probe(
            loan, finance_pb2.WatchLoanRequest(loan_id=loan), lambda r: r.loan.loan_id == loan
        )
    if name == "ListLoans":
        return Probe(
            world.loan_id,
            finance_pb2.ListLoansRequest(page_size=500),
            lambda r: world.loan_id in [loan.loan_id for loan in r.loans],
        )
    raise AssertionError(f"no probe for {method}")


async def outcome(world: Tenancy, method: str, request: Message, caller: str) -> Any:
    try:
        return await raw_call(world.harness.address, method, request, caller=caller)
    except ApiError as error:
        return error


def assert_same_as_missing(seen: Any, missing: Any, ident: str, absent: str) -> None:
    """``seen`` (asking for ``ident``) answers exactly as ``missing`` (asking for ``absent``)."""
    assert isinstance(seen, ApiError), f"{ident} was shown: {seen}"
    assert isinstance(missing, ApiError), f"{absent} was found: {missing}"
    assert (type(seen), seen.reason) == (type(missing), missing.reason)
    assert seen.message.replace(ident, absent) == missing.message
    assert {k: v.replace(ident, absent) for k, v in seen.metadata.items()} == missing.metadata
    assert len(seen.status.details) == len(missing.status.details)


LISTS = {"ListPayments", "ListTitles", "ListSettlements", "ListLoans"}


async def check_read(world: Tenancy, row: Row, role: str, cell: str) -> None:
    own, other = TENANTS[role]
    name = row.method.rsplit("/", 1)[1]
    p = probe(world, row.method, role)
    mine = await outcome(world, row.method, p.request, own)
    assert not isinstance(mine, ApiError), f"{own} cannot see its own {row.obj}: {mine}"
    assert p.shows(mine), f"{own} does not see its own {row.obj} {p.target}"
    theirs = await outcome(world, row.method, p.request, other)
    if cell == "all":
        assert not isinstance(theirs, ApiError), (other, row.method, theirs)
        assert p.shows(theirs), (other, row.method)
        return
    if cell == "currency":  # central banks: the CNY wallet's money is the PBOC's to see
        assert not isinstance(theirs, ApiError), theirs
        if name == "GetWallet":
            assert {b.available.currency for b in mine.wallet.balances} == {"CNY"}
            assert "CNY" not in {b.available.currency for b in theirs.wallet.balances}
        else:
            assert list(theirs.entries) == []
        return
    assert cell == "own", cell
    if name in LISTS:
        assert not isinstance(theirs, ApiError), theirs
        assert not p.shows(theirs), f"{other} lists {p.target}"
        return
    absent = missing_like(p.target)
    missing = await outcome(
        world, row.method, probe(world, row.method, role, absent).request, other
    )
    assert_same_as_missing(theirs, missing, p.target, absent)


async def attestation(world: Tenancy, payment_id: str, *, dry_run: bool = True) -> Message:
    now = int(time.time() * 1e6)
    version = await world.client(AUDITOR).oracle_set_version()
    built = build_attestation(
        oracle_set_version=version,
        oracle="customs",
        event_id=f"customs:{payment_id}",
        payment_id=payment_id,
        contract_hash=world.payment.contract.contract_hash,
        event_type="customs.cleared",
        attributes={"declaration": "D-2026-1205"},
        observed_at_us=now - 60_000_000,
        issued_at_us=now,
        expires_at_us=now + 600_000_000,
    )
    signer_id, signature = sign_ed25519(built.statement, CUSTOMS, key("customs"))
    return oracle_pb2.SubmitAttestationRequest(
        request_id=f"att-{payment_id[-8:]}",
        dry_run=dry_run,
        statement=built.statement,
        payload=built.payload,
        signatures=[oracle_pb2.SignerSignature(signer_id=signer_id, signature=signature)],
    )


async def check_attestation_lookup(world: Tenancy, role: str) -> None:
    """SubmitAttestation finds the payment only for its platform and the oracles it names."""
    method = "/condpay.v1.OracleService/SubmitAttestation"
    own, other = TENANTS[role]
    if role == "oracle":
        own = f"oracle/{CUSTOMS}"
    payment_id = world.payment.payment_id
    request = await attestation(world, payment_id)
    mine = await outcome(world, method, request, own)
    if isinstance(mine, ApiError):
        assert mine.reason != "PAYMENT_NOT_FOUND", (own, mine)
    theirs = await outcome(world, method, request, other)
    absent = missing_like(payment_id)
    missing = await outcome(world, method, await attestation(world, absent), other)
    assert isinstance(missing, ApiError)
    assert missing.reason == "PAYMENT_NOT_FOUND", missing
    assert_same_as_missing(theirs, missing, payment_id, absent)


def empty_request(method: str) -> Message:
    descriptor = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    return message_factory.GetMessageClass(descriptor.input_type)()


async def check_role(world: Tenancy, method: str, role: str, allowed: bool) -> None:
    caller = TENANTS[role][0]
    answer = await outcome(world, method, empty_request(method), caller)
    reason = answer.reason if isinstance(answer, ApiError) else ""
    if allowed:
        assert reason not in ("ROLE_NOT_ALLOWED", "CALLER_UNKNOWN"), (method, role, answer)
    else:
        assert reason == "ROLE_NOT_ALLOWED", (method, role, answer)
        assert answer.metadata == {"role": role, "method": method}


async def test_role_method_tenant_matrix(tenancy: Tenancy, subtests: pytest.Subtests) -> None:
    world = tenancy
    cells = 0
    for row in doc_table():
        name = row.method.rsplit("/", 1)[1]
        for role, cell in row.cells.items():
            with subtests.test(f"{name} as {role}: {cell}"):
                await check_role(world, row.method, role, cell != "—")
                if name == "SubmitAttestation" and cell == "own":
                    await check_attestation_lookup(world, role)
                elif row.obj != "—" and cell != "—":
                    await check_read(world, row, role, cell)
                cells += 1
    assert cells == len(METHODS) * len(ROLE_COLUMNS)


async def test_a_platform_sees_a_wallet_only_as_a_party(tenancy: Tenancy) -> None:
    """The seller is a party of the platform's payment; the second buyer of nothing it may see."""
    world = tenancy
    platform = world.client(PLATFORM)
    assert (await platform.get_wallet(world.wallets["seller"])).wallet_id == world.wallets["seller"]
    with pytest.raises(ApiError) as hidden:
        await platform.get_wallet(world.wallets["second_buyer"])
    assert hidden.value.reason == "WALLET_NOT_FOUND"
    # The bank's reserve is the institution's, the central bank's and the auditors'.
    reserve = f"w_reserve.{BANK}"
    with pytest.raises(ApiError):
        await platform.get_wallet(reserve)
    await world.client(f"institution/{BANK}").get_wallet(reserve)


async def test_issue_and_redeem_only_by_the_currencys_central_bank(tenancy: Tenancy) -> None:
    world = tenancy
    supply_before = await world.client(AUDITOR).get_supply()
    for caller, currency in (("central_bank/pboc", "HKD"), ("central_bank/hkma", "CNY")):
        for call in (world.client(caller).issue, world.client(caller).redeem):
            with pytest.raises(ApiError) as refused:
                await call(BANK, currency, 1_00)
            assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.reason == "NOT_CURRENCY_ISSUER"
    assert await world.client(AUDITOR).get_supply() == supply_before
    await world.client("central_bank/hkma").issue(BANK, "HKD", 1_00)


async def test_only_an_institution_opens_wallets(tenancy: Tenancy) -> None:
    """A platform could open an uncapped personal tier-1 wallet at any institution."""
    world = tenancy
    with pytest.raises(ApiError) as refused:
        await world.client(PLATFORM).open_wallet(BANK, key("mallory").public_key, tier=1)
    assert refused.value.reason == "ROLE_NOT_ALLOWED"
    with pytest.raises(ApiError) as elsewhere:
        await world.client(f"institution/{OTHER_BANK}").open_wallet(
            BANK, key("mallory").public_key, tier=1
        )
    assert elsewhere.value.reason == "ROLE_NOT_ALLOWED"


# -- paging --------------------------------------------------------------------------------------
async def list_page(
    client: SettlementsClient, token: str, size: int, **filters: Any
) -> payment_pb2.ListPaymentsResponse:
    reply: payment_pb2.ListPaymentsResponse = await client.api.payments.list_payments(
        payment_pb2.ListPaymentsRequest(page_size=size, page_token=token, **filters),
    )
    return reply


async def test_paging_lists_exactly_ones_own_with_opaque_tokens(harness: Harness) -> None:
    """Another platform's payments interleaved: every page holds only the caller's, the pages
    together hold all of them, and a token reveals nothing and works for no one else."""
    trade = await build_world(harness)
    await trade.fund("buyer", "CNY", 100_000_00)
    contract = compiled(WAREHOUSE)
    mine: list[str] = []
    theirs: list[str] = []
    for i in range(14):
        caller = PLATFORM if i % 2 == 0 else OTHER_PLATFORM
        locked = await trade.client(caller).lock_payment(
            key("buyer"), contract, warehouse_params(trade.wallets, 1_00 + i),
            send_source=WAREHOUSE,
        )  # fmt: skip
        (mine if caller == PLATFORM else theirs).append(locked.payment.payment_id)
    platform = trade.client(PLATFORM)
    seen: list[str] = []
    tokens: list[str] = []
    token = ""
    while True:
        page = await list_page(platform, token, 2)
        assert len(page.payments) <= 2
        seen += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
        tokens.append(token)
    assert seen == sorted(mine)
    assert len(tokens) >= 3
    for t in tokens:  # opaque: no payment id in the token or in what it decodes to
        raw = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
        for ident in mine + theirs:
            assert ident not in t
            assert ident.encode() not in raw
            assert ident[2:].encode() not in raw
        assert not re.search(r"p_[a-z0-9]{6,}", t)

    first = tokens[0]

    async def refused(client: SettlementsClient, t: str, **filters: Any) -> None:
        with pytest.raises(ApiError) as error:
            await list_page(client, t, 2, **filters)
        assert error.value.reason == "INVALID_PAGE_TOKEN", error.value

    await refused(trade.client(OTHER_PLATFORM), first)  # another caller's
    await refused(trade.client(AUDITOR), first)
    await refused(platform, first, payer_wallet_id=trade.wallets["buyer"])  # other filters
    flipped = first[:-3] + ("A" if first[-3] != "A" else "B") + first[-2:]
    await refused(platform, flipped)  # tampered
    for garbage in ("abc", mine[0], sorted(mine)[1], "A" * 40, "%%%", "é"):
        await refused(platform, garbage)
    with pytest.raises(ApiError) as other_method:  # another list's token
        await platform.api.settlements.list_settlements(
            settlement_pb2.ListSettlementsRequest(page_size=2, page_token=first),
        )
    assert other_method.value.reason == "INVALID_PAGE_TOKEN"
    # The same token still works for its caller (and the other platform pages its own).
    again = await list_page(platform, first, 2)
    assert [p.payment_id for p in again.payments] == sorted(mine)[2:4]
    other_seen: list[str] = []
    token = ""
    while True:
        page = await list_page(trade.client(OTHER_PLATFORM), token, 3)
        other_seen += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert other_seen == sorted(theirs)


async def test_the_whole_journal_is_each_readers_part_of_it(tenancy: Tenancy) -> None:
    """Without a wallet: an institution lists the entries touching its wallets, a central bank
    those with a posting in its currencies, an auditor all of them, page after page."""
    world = tenancy
    everything = [e async for e in world.client(AUDITOR).journal(page_size=7)]
    bank = f"w_reserve.{BANK}"
    ours = {w for w in world.wallets.values()} | {bank}
    own_bank = [e async for e in world.client(f"institution/{BANK}").journal(page_size=7)]
    assert [e.seq for e in own_bank] == [
        e.seq for e in everything if any(p.account_id in ours for p in e.postings)
    ]
    assert [e async for e in world.client(f"institution/{OTHER_BANK}").journal()] == []
    for central_bank, currency in (("central_bank/pboc", "CNY"), ("central_bank/hkma", "HKD")):
        seen = [e async for e in world.client(central_bank).journal(page_size=5)]
        assert [e.seq for e in seen] == [
            e.seq for e in everything if any(p.amount.currency == currency for p in e.postings)
        ]
        assert seen
    assert len(everything) > len(own_bank) > 0


async def test_the_journal_is_followed_from_an_entry(tenancy: Tenancy) -> None:
    """after_seq: only the entries after it, each reader's part of them as without it, page
    after page; a page token holds only for the after_seq it was given with; past the head
    (up to 2**64 - 1) nothing."""
    world = tenancy
    auditor, bank = world.client(AUDITOR), world.client(f"institution/{BANK}")
    everything = [e async for e in auditor.journal(page_size=7)]
    own_bank = [e async for e in bank.journal(page_size=7)]
    wallet = f"w_reserve.{BANK}"
    own_wallet = [e async for e in bank.journal(wallet, page_size=7)]
    for after in (0, 1, everything[len(everything) // 2].seq, everything[-2].seq):
        followed = [e async for e in auditor.journal(after_seq=after, page_size=3)]
        assert followed == [e for e in everything if e.seq > after]
        assert [e async for e in bank.journal(after_seq=after, page_size=2)] == [
            e for e in own_bank if e.seq > after
        ]
        assert [e async for e in bank.journal(wallet, after_seq=after, page_size=2)] == [
            e for e in own_wallet if e.seq > after
        ]
    for past in (everything[-1].seq, everything[-1].seq + 1, 2**63, 2**64 - 1):
        assert [e async for e in auditor.journal(after_seq=past)] == []
    wallets = auditor.api.wallets
    first = await wallets.list_journal(wallet_pb2.ListJournalRequest(page_size=2, after_seq=1))
    assert [e.seq for e in first.entries] == [2, 3]
    assert first.next_page_token
    for other in (0, 2):
        with pytest.raises(ApiError) as error:
            await wallets.list_journal(
                wallet_pb2.ListJournalRequest(
                    page_size=2, after_seq=other, page_token=first.next_page_token
                )
            )
        assert error.value.reason == "INVALID_PAGE_TOKEN", error.value
