"""Digital titles through gRPC: issue, split, pledge, release; their history and listing;
idempotency and dry runs. Every refusal is a typed reason and changes nothing."""

from __future__ import annotations

import hashlib

import pytest
from condpay.errors import ApiError
from condpay.v1 import asset_pb2, oracle_pb2

from settlement.ledger.titles import derive_title_id
from tests.settlement.world import (
    CARRIER,
    TradeWorld,
    document,
    issue_request,
    key,
    pledge_request,
    refused,
    release_request,
    split_request,
)

ACTIVE = asset_pb2.TITLE_STATE_ACTIVE
SPLIT = asset_pb2.TITLE_STATE_SPLIT


async def assert_no_title(trade: TradeWorld, issuer: str, document_bytes: bytes) -> None:
    title_id = derive_title_id(issuer, hashlib.sha256(document_bytes).hexdigest())
    await refused("TITLE_NOT_FOUND", trade.platform.get_title(title_id))


# -- issue -----------------------------------------------------------------------------------------
async def test_issue_a_bill_of_lading_to_its_holder(trade: TradeWorld) -> None:
    paper = document("COSU6241")
    title_id = await trade.issue_bill_of_lading("seller", 40, paper)
    assert title_id == derive_title_id(CARRIER, hashlib.sha256(paper).hexdigest())
    reply = await trade.platform.get_title(title_id)
    title = reply.title
    assert (title.kind, title.issuer_id, title.holder_wallet_id) == (
        "bill_of_lading",
        CARRIER,
        trade.wallets["seller"],
    )
    assert (title.units, title.state, title.pledged_to, title.version) == (40, ACTIVE, "", 1)
    assert title.document_sha256 == hashlib.sha256(paper).hexdigest()
    assert [(m.kind, m.from_wallet_id, m.to_wallet_id, m.units) for m in reply.moves] == [
        ("ISSUED", "", trade.wallets["seller"], 40)
    ]
    assert [t.title_id for t in await trade.titles_of("seller")] == [title_id]
    assert await trade.titles_of("buyer") == []

    # The same document again, under a new request id: the carrier issued it once already.
    again = await refused("TITLE_EXISTS", trade.issue_bill_of_lading("buyer", 40, paper))
    assert again.metadata["title_id"] == title_id
    assert await trade.titles_of("buyer") == []
    # Another carrier may issue its own title over the same document bytes: ids differ by issuer.
    await trade.cb.register_oracle("carrier.msc", "ED25519", key("carrier.msc").public_key)
    other = await trade.platform.issue_title(
        key("carrier.msc"), "carrier.msc", "bill_of_lading", trade.wallets["buyer"], 40, paper
    )
    assert other.title.title_id != title_id


async def test_issue_refusals_create_nothing(trade: TradeWorld) -> None:
    platform, seller = trade.platform, trade.wallets["seller"]
    carrier = trade.keys[CARRIER]

    # An issuer that was never registered.
    paper = document("unregistered")
    await refused(
        "ORACLE_NOT_FOUND",
        platform.issue_title(key("nobody"), "carrier.nobody", "bill_of_lading", seller, 5, paper),
    )
    await assert_no_title(trade, "carrier.nobody", paper)

    # A revoked issuer, signing with its (once valid) key.
    await trade.cb.register_oracle("carrier.gone", "ED25519", key("carrier.gone").public_key)
    await trade.cb.api.oracles.revoke_oracle(
        oracle_pb2.RevokeOracleRequest(oracle_id="carrier.gone", reason="licence withdrawn"),
    )
    paper = document("revoked")
    await refused(
        "ORACLE_REVOKED",
        platform.issue_title(
            key("carrier.gone"), "carrier.gone", "bill_of_lading", seller, 5, paper
        ),
    )
    await assert_no_title(trade, "carrier.gone", paper)

    # A registered issuer's name with someone else's signature.
    paper = document("forged")
    await refused(
        "SIGNATURE_INVALID",
        platform.issue_title(trade.keys["seller"], CARRIER, "bill_of_lading", seller, 5, paper),
    )
    await assert_no_title(trade, CARRIER, paper)

    # Right issuer, right key, but the signed bytes were changed on the way.
    paper = document("tampered")
    request = issue_request(carrier, CARRIER, seller, 5, paper, request_id="issue-tampered")
    request.issuer_instruction.signature = bytes(64)
    await refused("SIGNATURE_INVALID", platform.api.assets.issue_title(request))
    await assert_no_title(trade, CARRIER, paper)

    # Not a kind of title.
    paper = document("container")
    await refused(
        "INVALID_TITLE_KIND",
        platform.issue_title(carrier, CARRIER, "shipping_container", seller, 5, paper),
    )
    await assert_no_title(trade, CARRIER, paper)

    # No units.
    paper = document("empty")
    await refused(
        "INVALID_UNITS", platform.issue_title(carrier, CARRIER, "bill_of_lading", seller, 0, paper)
    )
    await assert_no_title(trade, CARRIER, paper)

    # To a wallet that does not exist.
    paper = document("nowhere")
    await refused(
        "WALLET_NOT_FOUND",
        platform.issue_title(carrier, CARRIER, "bill_of_lading", "w_nowhere", 5, paper),
    )
    await assert_no_title(trade, CARRIER, paper)

    # Expired before it arrived.
    paper = document("late")
    await refused(
        "INSTRUCTION_EXPIRED",
        platform.issue_title(
            carrier, CARRIER, "bill_of_lading", seller, 5, paper, expires_in_seconds=-1
        ),
    )
    await assert_no_title(trade, CARRIER, paper)

    assert await trade.titles_of("seller") == []
    # Each refused document can still be issued properly afterwards: nothing was reserved.
    await trade.issue_bill_of_lading("seller", 5, document("late"))
    assert len(await trade.titles_of("seller")) == 1


async def test_a_warehouse_receipt_and_a_receivable_are_titles_too(trade: TradeWorld) -> None:
    receipt = await trade.issue_bill_of_lading(
        "seller", 12, document("WR-88"), kind="warehouse_receipt"
    )
    receivable = await trade.issue_bill_of_lading(
        "financier", 1_000_000, document("INV-2026-17"), kind="receivable"
    )
    assert (await trade.title(receipt)).kind == "warehouse_receipt"
    assert (await trade.title(receivable)).kind == "receivable"
    assert [t.title_id for t in await trade.titles_of("financier")] == [receivable]


# -- split -----------------------------------------------------------------------------------------
async def test_split_conserves_units_and_retires_the_parent(trade: TradeWorld) -> None:
    seller_key, seller = trade.party("seller")
    title_id = await trade.issue_bill_of_lading("seller", 40, document("COSU-split"))
    reply = await trade.platform.split_title(seller_key, seller, title_id, 15)
    first, rest = reply.first, reply.rest
    assert (first.title_id, rest.title_id) == (f"{title_id}.1", f"{title_id}.2")
    assert (first.units, rest.units) == (15, 25)
    for child in (first, rest):
        assert (child.parent_title_id, child.holder_wallet_id) == (title_id, seller)
        assert (child.state, child.pledged_to, child.kind) == (ACTIVE, "", "bill_of_lading")
        assert child.document_sha256 == (await trade.title(title_id)).document_sha256

    parent = await trade.platform.get_title(title_id)
    assert parent.title.state == SPLIT
    assert parent.title.units == 40  # what it had when it retired
    assert [m.kind for m in parent.moves] == ["ISSUED", "SPLIT"]
    assert await trade.title_moves(first.title_id) == ["SPLIT"]
    listed = await trade.titles_of("seller")
    assert [t.title_id for t in listed] == [first.title_id, rest.title_id]
    assert sum(t.units for t in listed) == 40

    # The parent is retired: it cannot be split, pledged or split into new children again.
    retired = await refused(
        "TITLE_RETIRED", trade.platform.split_title(seller_key, seller, title_id, 10)
    )
    assert retired.metadata["title_id"] == title_id
    await refused(
        "TITLE_RETIRED",
        trade.platform.pledge_title(seller_key, seller, title_id, trade.wallets["financier"]),
    )
    # A child splits on: <id>.2.1 and <id>.2.2.
    again = await trade.platform.split_title(seller_key, seller, rest.title_id, 5)
    assert (again.first.title_id, again.first.units) == (f"{title_id}.2.1", 5)
    assert (again.rest.title_id, again.rest.units) == (f"{title_id}.2.2", 20)
    assert sum(t.units for t in await trade.titles_of("seller")) == 40


async def test_split_refusals(trade: TradeWorld) -> None:
    seller_key, seller = trade.party("seller")
    buyer_key, buyer = trade.party("buyer")
    title_id = await trade.issue_bill_of_lading("seller", 40, document("COSU-nosplit"))

    # The buyer, signing as itself, does not hold the title.
    await refused("NOT_TITLE_HOLDER", trade.platform.split_title(buyer_key, buyer, title_id, 10))
    # The buyer signing in the seller's name.
    await refused("SIGNATURE_INVALID", trade.platform.split_title(buyer_key, seller, title_id, 10))
    # All the units (or more) in the first part is no split.
    await refused(
        "TITLE_UNITS_EXCEEDED", trade.platform.split_title(seller_key, seller, title_id, 40)
    )
    await refused("INVALID_UNITS", trade.platform.split_title(seller_key, seller, title_id, 0))
    await refused(
        "TITLE_NOT_FOUND", trade.platform.split_title(seller_key, seller, "t_missing", 10)
    )
    title = await trade.title(title_id)
    assert (title.state, title.version, title.units) == (ACTIVE, 1, 40)
    assert await trade.title_moves(title_id) == ["ISSUED"]
    await refused("TITLE_NOT_FOUND", trade.platform.get_title(f"{title_id}.1"))


# -- pledge ----------------------------------------------------------------------------------------
async def test_a_pledged_title_cannot_split_be_pledged_again_or_be_sold(trade: TradeWorld) -> None:
    seller_key, seller = trade.party("seller")
    financier_key, financier = trade.party("financier")
    title_id = await trade.issue_bill_of_lading("seller", 40, document("COSU-pledge"))

    pledged = await trade.platform.pledge_title(seller_key, seller, title_id, financier)
    assert (pledged.title.pledged_to, pledged.title.holder_wallet_id) == (financier, seller)
    assert pledged.title.version == 2

    await refused("TITLE_PLEDGED", trade.platform.split_title(seller_key, seller, title_id, 10))
    again = await refused(
        "TITLE_PLEDGED",
        trade.platform.pledge_title(seller_key, seller, title_id, trade.wallets["second_buyer"]),
    )
    assert again.metadata["pledged_to"] == financier
    await trade.fund("buyer", "CNY", 50_000_00)
    before = await trade.holdings()
    await refused(
        "TITLE_PLEDGED",
        trade.platform.settle_dvp(
            trade.party("seller"), trade.party("buyer"), title_id, 40, ("CNY", 50_000_00)
        ),
    )
    assert await trade.holdings() == before
    assert (await trade.title(title_id)).holder_wallet_id == seller

    # Only the pledgee releases: the holder cannot, a stranger cannot.
    await refused("TITLE_NOT_PLEDGED", trade.platform.release_pledge(seller_key, seller, title_id))
    buyer_key, buyer = trade.party("buyer")
    await refused("TITLE_NOT_PLEDGED", trade.platform.release_pledge(buyer_key, buyer, title_id))
    # Nor someone signing in the pledgee's name.
    await refused(
        "SIGNATURE_INVALID", trade.platform.release_pledge(seller_key, financier, title_id)
    )
    assert (await trade.title(title_id)).pledged_to == financier

    financier_client = trade.client("financier/bank-a")
    released = await financier_client.release_pledge(financier_key, financier, title_id)
    assert (released.title.pledged_to, released.title.holder_wallet_id) == ("", seller)
    # Released twice: it is no longer pledged to anyone.
    await refused(
        "TITLE_NOT_PLEDGED", financier_client.release_pledge(financier_key, financier, title_id)
    )
    assert await trade.title_moves(title_id) == ["ISSUED", "PLEDGED", "RELEASED"]

    # Free again: it sells.
    sold = await trade.platform.settle_dvp(
        trade.party("seller"), trade.party("buyer"), title_id, 40, ("CNY", 50_000_00)
    )
    assert sold.settlement.legs[-1].state == "DELIVERED"
    assert (await trade.title(title_id)).holder_wallet_id == buyer


async def test_pledge_refusals(trade: TradeWorld) -> None:
    seller_key, seller = trade.party("seller")
    buyer_key, buyer = trade.party("buyer")
    financier = trade.wallets["financier"]
    title_id = await trade.issue_bill_of_lading("seller", 40, document("COSU-nopledge"))

    await refused(
        "NOT_TITLE_HOLDER", trade.platform.pledge_title(buyer_key, buyer, title_id, financier)
    )
    await refused(
        "SIGNATURE_INVALID", trade.platform.pledge_title(buyer_key, seller, title_id, financier)
    )
    await refused(
        "WALLET_NOT_FOUND", trade.platform.pledge_title(seller_key, seller, title_id, "w_nowhere")
    )
    await refused(
        "TITLE_NOT_FOUND", trade.platform.pledge_title(seller_key, seller, "t_missing", financier)
    )
    # A release of a title nobody pledged.
    await refused(
        "TITLE_NOT_PLEDGED",
        trade.platform.release_pledge(trade.keys["financier"], financier, title_id),
    )
    title = await trade.title(title_id)
    assert (title.pledged_to, title.version) == ("", 1)
    assert await trade.title_moves(title_id) == ["ISSUED"]


# -- history and listing ---------------------------------------------------------------------------
async def test_get_title_shows_every_move_in_order(trade: TradeWorld) -> None:
    seller_key, seller = trade.party("seller")
    financier_key, financier = trade.party("financier")
    buyer = trade.wallets["buyer"]
    title_id = await trade.issue_bill_of_lading("seller", 40, document("COSU-history"))
    await trade.platform.pledge_title(
        seller_key, seller, title_id, financier, request_id="history-pledge"
    )
    await trade.platform.release_pledge(
        financier_key, financier, title_id, request_id="history-release"
    )
    await trade.fund("buyer", "CNY", 10_000_00)
    sold = await trade.platform.settle_dvp(
        trade.party("seller"),
        trade.party("buyer"),
        title_id,
        40,
        ("CNY", 10_000_00),
        request_id="history-sale",
    )

    reply = await trade.platform.get_title(title_id)
    moves = [(m.kind, m.from_wallet_id, m.to_wallet_id, m.units, m.request_id) for m in reply.moves]
    issue_request_id = reply.moves[0].request_id
    assert moves == [
        ("ISSUED", "", seller, 40, issue_request_id),
        ("PLEDGED", seller, seller, 40, "history-pledge"),
        ("RELEASED", seller, seller, 40, "history-release"),
        # escrowed to the settlement, then delivered, in the sale's one transaction
        ("PLEDGED", seller, seller, 40, "history-sale"),
        ("DELIVERED", seller, buyer, 40, "history-sale"),
    ]
    seqs = [m.seq for m in reply.moves]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    times = [m.at.ToMicroseconds() for m in reply.moves]
    assert times == sorted(times)
    assert reply.title.version == 5
    assert (reply.title.holder_wallet_id, reply.title.pledged_to) == (buyer, "")
    assert sold.settlement.settlement_id


async def test_list_titles_pages_through_a_holders_active_titles(trade: TradeWorld) -> None:
    seller_key, seller = trade.party("seller")
    ids = [await trade.issue_bill_of_lading("seller", 10, document(f"list-{i}")) for i in range(5)]
    await trade.issue_bill_of_lading("buyer", 10, document("list-buyer"))
    await trade.platform.split_title(seller_key, seller, ids[0], 4)

    expected = sorted([*ids[1:], f"{ids[0]}.1", f"{ids[0]}.2"])
    for size in (1, 2, 0, 500):
        listed = await trade.titles_of("seller", page_size=size)
        assert [t.title_id for t in listed] == expected, size
    assert all(t.holder_wallet_id == seller for t in listed)
    assert len(await trade.titles_of("buyer")) == 1
    assert await trade.titles_of("financier") == []

    client = trade.platform
    with pytest.raises(ApiError) as raised:
        await client.api.assets.list_titles(
            asset_pb2.ListTitlesRequest(holder_wallet_id=seller, page_size=-1),
        )
    assert raised.value.reason == "INVALID_PAGE_SIZE"
    with pytest.raises(ApiError) as raised:
        await client.api.assets.list_titles(asset_pb2.ListTitlesRequest())
    assert raised.value.reason == "MISSING_FIELD"


async def test_title_reads_are_for_readers_and_writes_for_their_roles(trade: TradeWorld) -> None:
    title_id = await trade.issue_bill_of_lading("seller", 40, document("COSU-roles"))
    auditor = trade.client("auditor/csrc")
    assert (await auditor.get_title(title_id)).title.units == 40
    carrier = trade.client(f"oracle/{CARRIER}")
    assert (await carrier.get_title(title_id)).title.issuer_id == CARRIER  # its issuer reads it
    await refused("TITLE_NOT_FOUND", trade.client("oracle/other.carrier").get_title(title_id))
    await refused("TITLE_NOT_FOUND", trade.client("institution/boc-hk").get_title(title_id))
    assert (await trade.client("institution/icbc-sz").get_title(title_id)).title.units == 40
    # The carrier itself (an oracle) may issue; an institution may not.
    issued = await carrier.issue_title(
        trade.keys[CARRIER], CARRIER, "bill_of_lading", trade.wallets["seller"], 3, b"own"
    )
    assert issued.title.units == 3
    bank = trade.client("institution/icbc-sz")
    await refused(
        "ROLE_NOT_ALLOWED",
        bank.issue_title(
            trade.keys[CARRIER], CARRIER, "bill_of_lading", trade.wallets["seller"], 3, b"bank"
        ),
    )


# -- idempotency and dry runs ----------------------------------------------------------------------
async def test_a_replayed_issue_answers_the_first_result(trade: TradeWorld) -> None:
    client, seller = trade.platform, trade.wallets["seller"]
    paper = document("COSU-replay")
    request = issue_request(trade.keys[CARRIER], CARRIER, seller, 40, paper, request_id="iss-1")
    first = await client.api.assets.issue_title(request)
    second = await client.api.assets.issue_title(request)
    assert not first.operation.replayed
    assert second.operation.replayed
    assert second.title == first.title
    assert await trade.title_moves(first.title.title_id) == ["ISSUED"]
    # Same id, another request (other units): refused, and the title stays as issued.
    other = issue_request(trade.keys[CARRIER], CARRIER, seller, 41, paper, request_id="iss-1")
    await refused("IDEMPOTENCY_KEY_REUSED", client.api.assets.issue_title(other))
    assert (await trade.title(first.title.title_id)).units == 40

    # A refused request keeps failing the same way under its id, even once it could succeed.
    late = issue_request(
        trade.keys[CARRIER], CARRIER, "w_later", 5, document("later"), request_id="iss-2"
    )
    await refused("WALLET_NOT_FOUND", client.api.assets.issue_title(late))
    await refused("WALLET_NOT_FOUND", client.api.assets.issue_title(late))


async def test_replayed_split_pledge_and_release(trade: TradeWorld) -> None:
    client = trade.platform
    seller_key, seller = trade.party("seller")
    financier_key, financier = trade.party("financier")
    title_id = await trade.issue_bill_of_lading("seller", 40, document("COSU-replays"))

    split = split_request(seller_key, seller, title_id, 10, request_id="split-1")
    first = await client.api.assets.split_title(split)
    again = await client.api.assets.split_title(split)
    assert again.operation.replayed
    assert (again.first, again.rest) == (first.first, first.rest)
    await refused(
        "IDEMPOTENCY_KEY_REUSED",
        client.api.assets.split_title(
            split_request(seller_key, seller, title_id, 11, request_id="split-1"),
        ),
    )
    child = first.first.title_id
    pledge = pledge_request(seller_key, seller, child, financier, request_id="pledge-1")
    pledged = await client.api.assets.pledge_title(pledge)
    replayed = await client.api.assets.pledge_title(pledge)
    assert replayed.operation.replayed
    assert replayed.title == pledged.title
    release = release_request(financier_key, financier, child, request_id="release-1")
    released = await client.api.assets.release_pledge(release)
    replayed_release = await client.api.assets.release_pledge(release)
    assert replayed_release.operation.replayed
    assert replayed_release.title == released.title
    # A replayed pledge after the release does not pledge again.
    assert (await client.api.assets.pledge_title(pledge)).operation.replayed
    assert (await trade.title(child)).pledged_to == ""
    assert await trade.title_moves(child) == ["SPLIT", "PLEDGED", "RELEASED"]
    assert await trade.title_moves(title_id) == ["ISSUED", "SPLIT"]


async def test_dry_runs_write_nothing(trade: TradeWorld) -> None:
    client = trade.platform
    seller_key, seller = trade.party("seller")
    paper = document("COSU-dry")
    dry = issue_request(
        trade.keys[CARRIER], CARRIER, seller, 40, paper, request_id="dry-issue", dry_run=True
    )
    reply = await client.api.assets.issue_title(dry)
    assert reply.operation.dry_run
    assert reply.title.units == 40
    await refused("TITLE_NOT_FOUND", client.get_title(reply.title.title_id))
    assert await trade.titles_of("seller") == []
    # The id was not spent by the dry run: the real call under it succeeds.
    dry.dry_run = False
    real = await client.api.assets.issue_title(dry)
    assert not real.operation.replayed
    assert not real.operation.dry_run
    title_id = real.title.title_id

    # A dry-run pledge answers what would happen, and the title stays free.
    pledge = pledge_request(
        seller_key,
        seller,
        title_id,
        trade.wallets["financier"],
        request_id="dry-pledge",
        dry_run=True,
    )
    would = await client.api.assets.pledge_title(pledge)
    assert would.title.pledged_to == trade.wallets["financier"]
    assert (await trade.title(title_id)).pledged_to == ""
    # A dry run of something refused is refused the same way, and records nothing either.
    doomed = issue_request(
        trade.keys[CARRIER], CARRIER, seller, 40, paper, request_id="dry-again", dry_run=True
    )
    await refused("TITLE_EXISTS", client.api.assets.issue_title(doomed))
    await refused("OPERATION_NOT_FOUND", client.get_operation("dry-again"))
    assert await trade.title_moves(title_id) == ["ISSUED"]
