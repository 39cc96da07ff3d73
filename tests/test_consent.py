"""Consent (issue 10, items 1, 2, 3, 5 and 6): each attack reproduced as the review found it,
through the real gRPC server, and shown refused (or harmless) with nothing changed.

- 1: a signed document names the one identity that may submit it and is bound to one request
  id; a relayed Transfer, LockPayment or FundEscrow is refused (SUBMITTER_MISMATCH, or
  INSTRUCTION_MISMATCH under another request id), an expiry beyond the cap is
  INSTRUCTION_EXPIRY_TOO_FAR and the retired v1 formats are refused.
- 2: a title pledged to a payment is bound to its contract and parameters.
- 3: financing needs the payer's signature; an uninvited financier learns nothing
  (PAYMENT_NOT_FOUND exactly as for a payment that does not exist), nor does an assignment by a
  wallet that is no payee.
- 5: event ids are unique per (payment, attester, event id): no squatting.
- 6: one oracle key never counts twice (registration refuses it, the quorum counts keys).

"Nothing changed" is :func:`everything`: balances and holds of every wallet, the journal (length
and each entry's hash), the supply, every payment and every title, as an auditor reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from condpay.attest import BlsAggregate, build_attestation, sign_ed25519, sign_party
from condpay.client import SettlementsClient, bound_params, param_values
from condpay.errors import ApiError
from condpay.ids import payment_id_for
from condpay.v1 import asset_pb2, oracle_pb2, payment_pb2, wallet_pb2

from contracts_dsl import CompiledContract, compile_source, escrow_minor
from settlement.ledger.attestations import BLS12_381, ED25519, OracleKey, Submission
from tests.settlement.world import (
    BANK,
    FINANCIER,
    OTHER_PLATFORM,
    PLATFORM,
    TradeWorld,
    build_world,
    expiry_us,
    key,
    refused,
)
from tests.support.harness import Harness
from tests.support.snapshots import LedgerSnapshot, take_snapshot
from tests.test_attestation_verify import (
    BLS_ORACLES,
    BLS_PUBLIC,
    DOCK,
    ED_ORACLES,
    GATE,
    RFID,
    bls_sk,
    ed_key,
    statement,
)
from tests.test_attestation_verify import refused as refused_by_verifier
from tests.test_attestation_verify import verify as verify_submission
from wallets import (
    AssignmentInstruction,
    FundInstruction,
    LockInstruction,
    OwnerKey,
    SignedInstruction,
    TransferInstruction,
)
from wallets import bls as wallets_bls

AUDITOR = "auditor/consent-review"
THIRD_PLATFORM = "platform/third-market"
OTHER_FINANCIERS = ("financier/bank-b", "financier/bank-c")
CUSTOMS = "customs.consent"
DAY_US = 86_400 * 1_000_000

PREAMBLE = """
param buyer  : wallet
param seller : wallet
param price  : money CNY
"""
ESCROW = """
escrow price from buyer
deadline 2099-01-01T00:00:00Z -> refund remainder to buyer
"""
CLEARED = f"""
contract "consent-cleared" version 1
{PREAMBLE}
oracle customs = "{CUSTOMS}"
{ESCROW}
clause cleared
when customs.cleared(declaration == "D-1") by customs
  -> pay remainder to seller
"""
# The eBL against payment: the title goes to the buyer when customs clears, with the money.
DVP = f"""
contract "consent-ebl-against-payment" version 1
{PREAMBLE}
param bol    : title
oracle customs = "{CUSTOMS}"
{ESCROW}
clause cleared
when customs.cleared(declaration == "D-1") by customs
  -> pay remainder to seller
     and deliver title bol to buyer
"""
# What the attacker wanted the seller's pledge for: the title on the buyer's own word.
ON_RECEIPT = f"""
contract "consent-ebl-on-receipt" version 1
{PREAMBLE}
param bol    : title
{ESCROW}
clause received
when receipt.signed(signer == buyer) by buyer
  -> pay remainder to seller
     and deliver title bol to buyer
"""
# A platform's own payment whose clearance its own buyer wallet attests.
SELF_ATTESTED = f"""
contract "consent-self-attested" version 1
{PREAMBLE}
{ESCROW}
clause cleared
when customs.cleared(declaration == "D-1") by buyer
  -> pay remainder to seller
"""
# Two attesters of one payment, each with an event id of its own naming.
TWO_ATTESTERS = f"""
contract "consent-two-attesters" version 1
{PREAMBLE}
oracle customs = "{CUSTOMS}"
{ESCROW}
clause cleared
when customs.cleared(declaration == "D-1") by customs
  -> pay 50% to seller
clause received
when receipt.signed(signer == buyer) by buyer
  -> pay remainder to seller
"""


def compiled(source: str) -> CompiledContract:
    contract = compile_source(source, "consent.contract").contract
    assert contract is not None
    return contract


# -- the world, and "nothing changed" ----------------------------------------------------------
async def consent_world(harness: Harness) -> TradeWorld:
    """tests/settlement/world.py's world (seller, buyer, financier, second_buyer at icbc-sz, the
    carrier registered as a title issuer), the buyer funded, a customs oracle registered."""
    world = await build_world(harness)
    await world.fund("buyer", "CNY", 500_000_00)
    await world.fund("financier", "CNY", 500_000_00)
    await world.fund("second_buyer", "CNY", 10_00)
    await world.cb.register_oracle(CUSTOMS, "ED25519", key(CUSTOMS).public_key)
    return world


@dataclass(frozen=True)
class Everything:
    ledger: LedgerSnapshot
    payments: tuple[bytes, ...]
    titles: tuple[bytes, ...]


async def everything(world: TradeWorld, title_ids: Iterable[str] = ()) -> Everything:
    """All that a refused call must leave as it was, read through the API by an auditor."""
    auditor = world.client(AUDITOR)
    ledger = await take_snapshot(auditor, [*world.wallets.values(), f"w_reserve.{BANK}"])
    payments: list[bytes] = []
    token = ""
    while True:
        page: payment_pb2.ListPaymentsResponse = await auditor.api.payments.list_payments(
            payment_pb2.ListPaymentsRequest(page_size=500, page_token=token),
        )
        payments += [p.SerializeToString(deterministic=True) for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    titles: list[bytes] = []
    for wallet_id in sorted(world.wallets.values()):
        listed: asset_pb2.ListTitlesResponse = await auditor.api.assets.list_titles(
            asset_pb2.ListTitlesRequest(holder_wallet_id=wallet_id, page_size=500),
        )
        titles += [t.SerializeToString(deterministic=True) for t in listed.titles]
    for title_id in sorted(title_ids):
        titles.append((await auditor.get_title(title_id)).SerializeToString(deterministic=True))
    return Everything(ledger, tuple(payments), tuple(titles))


async def refused_without_effect(
    world: TradeWorld,
    reason: str,
    call: Awaitable[Any],
    *,
    title_ids: Iterable[str] = (),
    **metadata: str,
) -> ApiError:
    """``call`` fails with ``reason`` (and ``metadata``), and everything is as it was."""
    title_ids = tuple(title_ids)
    before = await everything(world, title_ids)
    error = await refused(reason, call)
    for name, value in metadata.items():
        assert error.metadata.get(name) == value, (name, error.metadata)
    assert await everything(world, title_ids) == before
    return error


# -- signed requests, built once so that they can be relayed byte for byte ---------------------
def _signed(document: SignedInstruction) -> wallet_pb2.SignedInstruction:
    return wallet_pb2.SignedInstruction(payload=document.payload, signature=document.signature)


def transfer_request(
    world: TradeWorld,
    amount_minor: int,
    *,
    submitter: str = PLATFORM,
    request_id: str,
    expires_at_us: int = 0,
) -> wallet_pb2.TransferRequest:
    buyer_key, buyer = world.party("buyer")
    instruction = TransferInstruction(
        source=buyer,
        target=world.wallets["seller"],
        currency="CNY",
        amount_minor=amount_minor,
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us or expiry_us(),
    )
    return wallet_pb2.TransferRequest(
        request_id=request_id, instruction=_signed(instruction.sign(buyer_key))
    )


def lock_request(
    world: TradeWorld,
    source: str,
    params: dict[str, object],
    *,
    submitter: str = PLATFORM,
    request_id: str,
    expires_at_us: int = 0,
    pledges: Iterable[SignedInstruction] = (),
) -> payment_pb2.LockPaymentRequest:
    contract = compiled(source)
    bound = bound_params(contract, params)
    lock = LockInstruction(
        payer=bound.wallet(contract.escrow.funder),
        contract_hash=contract.hash,
        params_hash=bound.hash,
        currency=contract.escrow.currency,
        amount_minor=escrow_minor(contract, bound),
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expires_at_us or expiry_us(),
    )
    return payment_pb2.LockPaymentRequest(
        request_id=request_id,
        contract_source=source,
        params=param_values(contract, params),
        payer_instruction=_signed(lock.sign(world.keys["buyer"])),
        title_pledges=[_signed(p) for p in pledges],
    )


def fund_document(
    world: TradeWorld,
    payment_id: str,
    amount_minor: int,
    *,
    financier: str = "financier",
    payer: str = "buyer",
    submitter: str = FINANCIER,
    request_id: str,
    fee_minor: int = 0,
    currency: str = "CNY",
) -> FundInstruction:
    return FundInstruction(
        financier=world.wallets[financier],
        payer=world.wallets[payer],
        payment_id=payment_id,
        currency=currency,
        amount_minor=amount_minor,
        fee_minor=fee_minor,
        due_at_us=expiry_us(30 * 86_400),
        submitter=submitter,
        request_id=request_id,
        expires_at_us=expiry_us(),
    )


def fund_request(
    document: FundInstruction,
    financier_key: OwnerKey,
    payer_key: OwnerKey | None,
    *,
    payer_signed: bytes | None = None,
) -> payment_pb2.FundEscrowRequest:
    """The financier's signed document; the payer's signature over ``payer_signed`` (by default
    the same bytes), or none when ``payer_key`` is None."""
    signed = document.sign(financier_key)
    request = payment_pb2.FundEscrowRequest(
        request_id=document.request_id, financier_instruction=_signed(signed)
    )
    if payer_key is not None:
        request.payer_signature = payer_key.sign(payer_signed or signed.payload)
    return request


def simple_params(world: TradeWorld, price_minor: int) -> dict[str, object]:
    return {
        "buyer": world.wallets["buyer"],
        "seller": world.wallets["seller"],
        "price": ("CNY", price_minor),
    }


# -- item 1: a signed document is for one submitter, one request, a bounded time --------------
async def test_a_relayed_transfer_is_refused_for_every_other_caller(harness: Harness) -> None:
    world = await consent_world(harness)
    request = transfer_request(world, 1_000_00, request_id="pay-1")
    first = await world.platform.send(request)
    assert not first.operation.replayed
    balance = await world.balance("buyer", "CNY")
    # The same bytes, relayed by a second and a third identity: each has its own request ids,
    # so without the submitter in the signed bytes each relay would debit the buyer again.
    for relayer in (OTHER_PLATFORM, FINANCIER):
        await refused_without_effect(
            world,
            "SUBMITTER_MISMATCH",
            world.client(relayer).send(request),
            field="instruction.submitter",
        )
    # The named submitter under another request id.
    moved = replace_request_id(request, "pay-2")
    await refused_without_effect(
        world,
        "INSTRUCTION_MISMATCH",
        world.platform.send(moved),
        field="request_id",
    )
    # The named submitter under the signed request id: the stored outcome, nothing new.
    again = await world.platform.send(request)
    assert again.operation.replayed
    assert again.entry.seq == first.entry.seq
    assert await world.balance("buyer", "CNY") == balance == (499_000_00, 0)


def replace_request_id(request: Any, request_id: str) -> Any:
    moved = type(request)()
    moved.CopyFrom(request)
    moved.request_id = request_id
    return moved


async def test_a_relayed_lock_is_refused_for_every_other_platform(harness: Harness) -> None:
    world = await consent_world(harness)
    request = lock_request(world, CLEARED, simple_params(world, 100_000_00), request_id="lock-1")
    locked = await world.platform.send(request)
    assert locked.payment.payment_id == payment_id_for(PLATFORM, "lock-1")
    # Before: a second escrow of the buyer's money, owned by the replaying platform.
    for relayer in (OTHER_PLATFORM, THIRD_PLATFORM):
        await refused_without_effect(
            world,
            "SUBMITTER_MISMATCH",
            world.client(relayer).send(request),
            field="payer_instruction.submitter",
        )
    await refused_without_effect(
        world,
        "INSTRUCTION_MISMATCH",
        world.platform.send(replace_request_id(request, "lock-2")),
    )
    assert await world.balance("buyer", "CNY") == (400_000_00, 100_000_00)


async def test_a_relayed_funding_is_refused_for_every_other_financier(harness: Harness) -> None:
    world = await consent_world(harness)
    locked = await world.platform.send(
        lock_request(world, CLEARED, simple_params(world, 100_000_00), request_id="lock-f"),
    )
    payment_id = locked.payment.payment_id
    document = fund_document(world, payment_id, 40_000_00, request_id="fund-1")
    request = fund_request(document, world.keys["financier"], world.keys["buyer"])
    funded = await world.client(FINANCIER).send(request)
    assert funded.financing.principal.amount_minor == 40_000_00
    # Before: the first financier paid again, and the record named the second.
    for relayer in OTHER_FINANCIERS:
        await refused_without_effect(
            world,
            "SUBMITTER_MISMATCH",
            world.client(relayer).send(request),
            field="financier_instruction.submitter",
        )
    await refused_without_effect(
        world,
        "INSTRUCTION_MISMATCH",
        world.client(FINANCIER).send(replace_request_id(request, "fund-2")),
    )
    assert await world.balance("financier", "CNY") == (460_000_00, 0)


async def test_an_expiry_beyond_the_cap_is_refused(harness: Harness) -> None:
    world = await consent_world(harness)
    far = expiry_us(86_400 + 120)  # the cap is CONDPAY_INSTRUCTION_TTL_MAX_SECONDS = 1 day
    await refused_without_effect(
        world,
        "INSTRUCTION_EXPIRY_TOO_FAR",
        world.platform.send(
            transfer_request(world, 1_00, request_id="far-1", expires_at_us=far),
        ),
        field="instruction.expires_at_us",
        ttl_max_seconds="86400",
    )
    await refused_without_effect(
        world,
        "INSTRUCTION_EXPIRY_TOO_FAR",
        world.platform.send(
            lock_request(
                world, CLEARED, simple_params(world, 1_00), request_id="far-2", expires_at_us=far
            ),
        ),
        field="payer_instruction.expires_at_us",
    )
    # Just inside the cap is fine.
    near = transfer_request(world, 1_00, request_id="near-1", expires_at_us=expiry_us(86_000))
    assert (await world.platform.send(near)).entry.seq > 0


async def test_a_v1_document_is_refused_saying_that_v1_is_retired(harness: Harness) -> None:
    world = await consent_world(harness)
    buyer_key, buyer = world.party("buyer")
    v1 = (
        "condpay.transfer.v1\n"
        f"source: {buyer}\n"
        f"target: {world.wallets['seller']}\n"
        "currency: CNY\n"
        "amount_minor: 100\n"
        "request_id: v1-1\n"
        f"expires_at_us: {expiry_us()}\n"
        "memo: \n"
    ).encode()
    request = wallet_pb2.TransferRequest(
        request_id="v1-1",
        instruction=wallet_pb2.SignedInstruction(payload=v1, signature=buyer_key.sign(v1)),
    )
    error = await refused_without_effect(
        world, "INSTRUCTION_MALFORMED", world.platform.send(request)
    )
    assert "condpay.transfer.v1 format is retired" in error.message
    assert "condpay.transfer.v2" in error.message


# -- item 2: a pledge binds the deal ------------------------------------------------------------
async def test_a_title_pledge_serves_only_the_contract_and_terms_it_names(
    harness: Harness,
) -> None:
    world = await consent_world(harness)
    title_id = await world.issue_bill_of_lading("seller", 40, b"eBL COSU-9001 Yantian-LA")
    seller_key, seller = world.party("seller")
    real = compiled(DVP)
    params = {**simple_params(world, 100_000_00), "bol": title_id}

    def pledge_for(request_id: str) -> SignedInstruction:
        """The seller's pledge for the real deal, locked by PLATFORM under ``request_id``: the
        payment id is predictable, which is all the attack needs."""
        payment_id = payment_id_for(PLATFORM, request_id)
        return world.platform.pledge_to_payment(
            seller_key, seller, title_id, payment_id, real.hash, bound_params(real, params).hash
        )

    # As found: a 0.01 CNY lock of the same contract, or another contract that hands the title
    # over on the buyer's own word, under the request id that gives the pledged payment id.
    cheap = {**params, "price": ("CNY", 1)}
    for n, (source, terms, field) in enumerate(
        (
            (DVP, cheap, "title_pledges[0].params_hash"),
            (ON_RECEIPT, params, "title_pledges[0].contract_hash"),
            (ON_RECEIPT, cheap, "title_pledges[0].contract_hash"),
        )
    ):
        request_id = f"lock-ebl-{n}"
        await refused_without_effect(
            world,
            "INSTRUCTION_MISMATCH",
            world.platform.send(
                lock_request(
                    world, source, terms, request_id=request_id, pledges=[pledge_for(request_id)]
                ),
            ),
            title_ids=[title_id],
            field=field,
        )
    # Another platform cannot bring the pledge either (it names its submitter).
    await refused_without_effect(
        world,
        "SUBMITTER_MISMATCH",
        world.client(OTHER_PLATFORM).send(
            lock_request(
                world,
                DVP,
                params,
                submitter=OTHER_PLATFORM,
                request_id="lock-ebl",
                pledges=[pledge_for("lock-ebl")],
            ),
        ),
        title_ids=[title_id],
        field="title_pledges[0].submitter",
    )
    assert (await world.title(title_id)).holder_wallet_id == seller
    # The deal the seller signed goes through with its pledge.
    locked = await world.platform.send(
        lock_request(world, DVP, params, request_id="lock-ebl", pledges=[pledge_for("lock-ebl")]),
    )
    assert locked.payment.payment_id == payment_id_for(PLATFORM, "lock-ebl")
    assert (await world.title(title_id)).pledged_to == locked.payment.payment_id


# -- item 3: financing needs the payer; an uninvited financier learns nothing ------------------
def error_shape(error: ApiError, ident: str) -> tuple[object, ...]:
    """Everything a caller learns from a refusal, with the id it asked about taken out."""
    return (
        error.code,
        error.reason,
        sorted(error.metadata),
        {k: v.replace(ident, "<id>") for k, v in error.metadata.items()},
        error.message.replace(ident, "<id>"),
    )


async def test_an_uninvited_financier_is_refused_and_learns_nothing(harness: Harness) -> None:
    world = await consent_world(harness)
    locked = await world.platform.send(
        lock_request(world, CLEARED, simple_params(world, 100_000_00), request_id="lock-u"),
    )
    payment_id = locked.payment.payment_id
    uninvited = world.client(OTHER_FINANCIERS[0])
    # The uninvited financier's own wallet: second_buyer (it holds that key).
    own_key = world.keys["second_buyer"]

    def document(**changes: Any) -> FundInstruction:
        base = fund_document(
            world,
            payment_id,
            1,
            financier="second_buyer",
            submitter=OTHER_FINANCIERS[0],
            request_id="fund-u",
        )
        return replace(base, **changes)

    # As found: 1 fen with a fee of int64 max, against a payer who signed nothing. The fee is
    # never more than the amount financed, whoever signed; and nothing without the payer.
    for n, payer_key in enumerate((None, world.keys["buyer"])):
        greedy = document(fee_minor=2**63 - 1, request_id=f"fund-u1-{n}")
        await refused_without_effect(
            world,
            "INVALID_AMOUNT",
            uninvited.send(fund_request(greedy, own_key, payer_key)),
            field="fee_minor",
        )
    await refused_without_effect(
        world,
        "MISSING_FIELD",
        uninvited.send(fund_request(document(request_id="fund-u3"), own_key, None)),
        field="payer_signature",
    )
    # The payer's signature over another payment's funding does not carry over.
    elsewhere = document(payment_id="p_someotherpayment", request_id="fund-u2")
    moved = document(request_id="fund-u2")
    await refused_without_effect(
        world,
        "SIGNATURE_INVALID",
        uninvited.send(
            fund_request(
                moved,
                own_key,
                world.keys["buyer"],
                payer_signed=elsewhere.sign(own_key).payload,
            ),
        ),
    )
    # Naming a payer it holds the key of (its own wallet): the payment's payer is another, and
    # the answer is that of a payment that does not exist, whatever else is wrong with it.
    missing = "p_" + "q" * 26
    for n, changes in enumerate(({}, {"currency": "HKD"}, {"amount_minor": 10**12})):
        self_invited = document(
            payer=world.wallets["second_buyer"], request_id=f"fund-s{n}", **changes
        )
        ghost = replace(self_invited, payment_id=missing, request_id=f"fund-g{n}")
        invisible = await refused_without_effect(
            world,
            "PAYMENT_NOT_FOUND",
            uninvited.send(fund_request(self_invited, own_key, own_key)),
        )
        nonexistent = await refused(
            "PAYMENT_NOT_FOUND",
            uninvited.send(fund_request(ghost, own_key, own_key)),
        )
        assert error_shape(invisible, payment_id) == error_shape(nonexistent, missing)
        assert "100000" not in invisible.message
        assert "CNY" not in invisible.message
    # And it still cannot read the payment.
    await refused("PAYMENT_NOT_FOUND", uninvited.get_payment(payment_id))


async def test_an_assignment_by_a_wallet_that_is_no_payee_learns_nothing(
    harness: Harness,
) -> None:
    world = await consent_world(harness)
    locked = await world.platform.send(
        lock_request(world, CLEARED, simple_params(world, 100_000_00), request_id="lock-a"),
    )
    payment_id = locked.payment.payment_id
    missing = "p_" + "r" * 26
    financier = world.client(OTHER_FINANCIERS[0])
    shapes = []
    for target in (payment_id, missing):
        document = AssignmentInstruction(
            payment_id=target,
            payee=world.wallets["second_buyer"],  # no party of the payment
            financier=world.wallets["financier"],
            currency="HKD",  # wrong as well: the escrow's currency must not show through
            assigned_minor=50_000_00,
            advance_minor=1_00,
            submitter=OTHER_FINANCIERS[0],
            request_id=f"assign-{target[-4:]}",
            expires_at_us=expiry_us(),
        )
        payload = document.to_bytes()
        error = await refused_without_effect(
            world,
            "PAYMENT_NOT_FOUND",
            financier.api.payments.assign_proceeds(
                payment_pb2.AssignProceedsRequest(
                    request_id=document.request_id,
                    payload=payload,
                    payee_signature=world.keys["second_buyer"].sign(payload),
                    financier_signature=world.keys["financier"].sign(payload),
                ),
            ),
        )
        shapes.append(error_shape(error, target))
    assert shapes[0] == shapes[1]


# -- item 5: event ids are unique per (payment, attester, event id) ---------------------------
async def attest(
    world: TradeWorld,
    source: str,
    payment_id: str,
    attester: str,
    event_type: str,
    attributes: dict[str, str | int | bool],
    event_id: str,
    *,
    request_id: str,
    submitter: str = PLATFORM,
    signer: str = "buyer",
) -> Any:
    """An attestation of ``event_id`` for ``payment_id``: by the customs oracle (attester
    ``customs``), else by the party ``signer`` (its wallet key), sent by ``submitter``."""
    now = time.time_ns() // 1000
    attestation = build_attestation(
        oracle_set_version=await world.cb.oracle_set_version(),
        oracle=attester,
        event_id=event_id,
        payment_id=payment_id,
        contract_hash=compiled(source).hash,
        event_type=event_type,
        attributes=attributes,
        observed_at_us=now - 1_000_000,
        issued_at_us=now,
        expires_at_us=now + 600_000_000,
    )
    if attester == "customs":
        client = world.client(f"oracle/{CUSTOMS}")
        signatures = [sign_ed25519(attestation.statement, CUSTOMS, key(CUSTOMS))]
    else:
        client = world.client(submitter)
        wallet_key, wallet_id = world.party(signer)
        signatures = [sign_party(attestation.statement, wallet_id, wallet_key)]
    return await client.submit_attestation(
        attestation.statement, attestation.payload, signatures, request_id=request_id
    )


async def test_a_squatted_event_id_does_not_block_the_victims_attestation(
    harness: Harness,
) -> None:
    world = await consent_world(harness)
    victim = (
        await world.platform.send(
            lock_request(world, CLEARED, simple_params(world, 100_000_00), request_id="lock-v"),
        )
    ).payment.payment_id
    # As found: another platform locks its own 0.01 CNY payment, attested by its own buyer
    # wallet, and attests it first with the victim's predictable customs event id.
    squatter = world.client(OTHER_PLATFORM)
    own = {
        "buyer": world.wallets["second_buyer"],
        "seller": world.wallets["financier"],
        "price": ("CNY", 1),
    }
    contract = compiled(SELF_ATTESTED)
    reply = await squatter.lock_payment(
        world.keys["second_buyer"], contract, own, send_source=SELF_ATTESTED, request_id="lock-s"
    )
    squatted_id = f"customs.cleared:{victim}"
    squatted = await attest(
        world,
        SELF_ATTESTED,
        reply.payment.payment_id,
        "buyer",
        "customs.cleared",
        {"declaration": "D-1"},
        squatted_id,
        request_id="squat-1",
        submitter=OTHER_PLATFORM,
        signer="second_buyer",
    )
    assert squatted.attestation.event_id == squatted_id
    # The victim's genuine clearance, with that same id, is accepted and pays the seller.
    genuine = await attest(
        world,
        CLEARED,
        victim,
        "customs",
        "customs.cleared",
        {"declaration": "D-1"},
        squatted_id,
        request_id="genuine-1",
    )
    assert [leg.amount.amount_minor for leg in genuine.legs] == [100_000_00]
    # The same (payment, attester, event id) again is still a replay.
    error = await refused_without_effect(
        world,
        "EVENT_ALREADY_SEEN",
        attest(
            world,
            CLEARED,
            victim,
            "customs",
            "customs.cleared",
            {"declaration": "D-1"},
            squatted_id,
            request_id="genuine-2",
        ),
    )
    assert error.metadata["event_id"] == squatted_id


async def test_two_attesters_of_one_payment_may_use_the_same_event_id(harness: Harness) -> None:
    world = await consent_world(harness)
    payment_id = (
        await world.platform.send(
            lock_request(
                world, TWO_ATTESTERS, simple_params(world, 100_000_00), request_id="lock-t"
            ),
        )
    ).payment.payment_id
    cleared = await attest(
        world,
        TWO_ATTESTERS,
        payment_id,
        "customs",
        "customs.cleared",
        {"declaration": "D-1"},
        "ev-1",
        request_id="t-customs",
    )
    received = await attest(
        world,
        TWO_ATTESTERS,
        payment_id,
        "buyer",
        "receipt.signed",
        {"order": "PO-1", "signer": world.wallets["buyer"]},
        "ev-1",
        request_id="t-buyer",
    )
    assert [leg.amount.amount_minor for leg in cleared.legs] == [50_000_00]
    assert [leg.amount.amount_minor for leg in received.legs] == [50_000_00]
    assert received.payment.state == payment_pb2.PAYMENT_STATE_SETTLED
    for attester, event_type, attributes in (
        ("customs", "customs.cleared", {"declaration": "D-1"}),
        ("buyer", "receipt.signed", {"order": "PO-1", "signer": world.wallets["buyer"]}),
    ):
        await refused_without_effect(
            world,
            "EVENT_ALREADY_SEEN",
            attest(
                world,
                TWO_ATTESTERS,
                payment_id,
                attester,
                event_type,
                attributes,
                "ev-1",
                request_id=f"t-{attester}-again",
            ),
        )


# -- item 6: one oracle key never counts twice ---------------------------------------------------
async def test_one_key_cannot_be_registered_under_two_oracle_ids(harness: Harness) -> None:
    world = await consent_world(harness)
    cb = world.cb
    shared, other, spare = key("sensor-a"), key("sensor-b"), key("sensor-c")
    await cb.register_oracle("iot.a", "ED25519", shared.public_key)
    error = await refused_without_effect(
        world,
        "ORACLE_KEY_IN_USE",
        cb.register_oracle("iot.b", "ED25519", shared.public_key),
        field="public_key",
    )
    assert error.code.name == "ALREADY_EXISTS"
    # A key another oracle rotated out stays that oracle's: no one else may take it up.
    await cb.register_oracle("iot.b", "ED25519", other.public_key)
    await refused("ORACLE_KEY_IN_USE", rotate(cb, "iot.b", shared.public_key, "rot-1"))
    await rotate(cb, "iot.a", spare.public_key, "rot-2")
    await refused("ORACLE_KEY_IN_USE", cb.register_oracle("iot.c", "ED25519", shared.public_key))
    await refused("ORACLE_KEY_IN_USE", rotate(cb, "iot.b", shared.public_key, "rot-3"))
    # Its own earlier key an oracle may take back.
    await rotate(cb, "iot.a", shared.public_key, "rot-4")
    # Concurrent registrations of one new key: exactly one wins.
    fresh = key("sensor-d").public_key
    outcomes = await asyncio.gather(
        *(cb.register_oracle(f"iot.race{i}", "ED25519", fresh) for i in range(4)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 3, outcomes
    assert {e.reason for e in losers} == {"ORACLE_KEY_IN_USE"}


async def rotate(cb: SettlementsClient, oracle_id: str, public_key: bytes, request_id: str) -> Any:
    return await cb.api.oracles.rotate_oracle_key(
        oracle_pb2.RotateOracleKeyRequest(
            request_id=request_id, oracle_id=oracle_id, public_key=public_key
        ),
    )


def test_a_bls_aggregate_of_one_key_under_two_ids_does_not_meet_a_quorum() -> None:
    """Registration now refuses it, so the registry is built by hand: the rfid sensor holding
    the dock's BLS key. The aggregate of the dock's signature twice verifies over [dock, dock],
    listed as (dock, rfid): two ids, one key, one secret."""
    squatted = OracleKey(RFID, BLS12_381, BLS_PUBLIC[DOCK], 1)
    oracles = replace(BLS_ORACLES, keys={**BLS_ORACLES.keys, RFID: squatted})
    a = statement("sensors", "iot.arrived")
    scheme = wallets_bls.backend()
    dock = scheme.sign(bls_sk(DOCK), a.statement)
    doubled = scheme.aggregate([dock, dock])
    submission = Submission(a.statement, a.payload, (), BlsAggregate((DOCK, RFID), doubled))
    error = refused_by_verifier(submission, "QUORUM_NOT_MET", oracles)
    assert error.metadata["counted"] == "1"
    # With the gate, a second key, the quorum is met.
    both = scheme.aggregate([dock, dock, scheme.sign(bls_sk(GATE), a.statement)])
    ok = Submission(a.statement, a.payload, (), BlsAggregate((DOCK, RFID, GATE), both))
    assert verify_submission(ok, oracles).signer_ids == (DOCK, GATE, RFID)


def test_ed25519_signatures_of_one_key_under_two_ids_do_not_meet_a_quorum() -> None:
    squatted = OracleKey(RFID, ED25519, ed_key(DOCK).public_key, 1)
    oracles = replace(ED_ORACLES, keys={**ED_ORACLES.keys, RFID: squatted})
    a = statement("sensors", "iot.arrived")
    signatures = [sign_ed25519(a.statement, s, ed_key(DOCK)) for s in (DOCK, RFID)]
    error = refused_by_verifier(
        Submission(a.statement, a.payload, signatures), "QUORUM_NOT_MET", oracles
    )
    assert error.metadata["counted"] == "1"
