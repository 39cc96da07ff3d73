"""Attestation verification, pure (settlement/ledger/attestations.py), with real keys and no
server: what is accepted, every refusal with its reason, the order of the checks, and the
oracle-side helpers (condpay.attest) that build and sign what the verifier accepts."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest
from condpay.attest import (
    INT64_MIN,
    Attestation,
    AttributeValue,
    BlsAggregate,
    Ed25519Signature,
    bls_registration,
    build_attestation,
    canonical_payload,
    payload_sha256,
    sign_bls_aggregate,
    sign_ed25519,
    sign_ed25519_quorum,
    sign_party,
)
from eth_typing import BLSPubkey
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1
from py_ecc.optimized_bls12_381.optimized_curve import G1, add, multiply, neg

from contracts_dsl import CompiledContract, Escrow, bind_params, compile_source, evaluate
from settlement.api.methods import METHODS
from settlement.errors import Reason as CoreReason
from settlement.errors import SettlementError
from settlement.ledger import attestations as verifier
from settlement.ledger.attestations import (
    BLS12_381,
    DEFAULT_LIMITS,
    ED25519,
    AttestationLimits,
    OracleKey,
    OracleSet,
    PaymentBinding,
    Reason,
    Submission,
    VerifiedAttestation,
    check_registration,
    decode_statement,
    parse_payload,
    verify_attestation,
)
from wallets import INT64_MAX, MalformedInstruction, OwnerKey, TransferInstruction
from wallets import bls as wallets_bls

# Adapted from examples/contracts/overseas-warehouse-delivery.contract: `customs` is one source,
# `sensors` a 2-of-3 quorum, and the buyer attests the receipt itself.
SOURCE: Final = """\
contract "attestation-test" version 1

param buyer       : wallet
param seller      : wallet
param price       : money CNY
param declaration : text

oracle customs = "customs.cn.shenzhen"
oracle sensors = quorum 2 of ["iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid"]

escrow price from buyer
deadline 2026-12-31T00:00:00+08:00 -> refund remainder to buyer

clause arrival
when customs.cleared(declaration == declaration) by customs
  and iot.arrived(site == "LAX-FBA-3") by sensors
  -> pay 30% to seller

clause receipt
when receipt.signed(signer == buyer) by buyer within 14 days after iot.arrived
  -> pay remainder to seller

clause cold_chain_breach
when iot.condition(max_temp_c > 8) by sensors
  -> pay 5% of price to buyer as penalty
"""


def _compile(source: str) -> CompiledContract:
    contract = compile_source(source, "attestation-test.contract").contract
    assert contract is not None
    return contract


CONTRACT: Final = _compile(SOURCE)
OTHER_CONTRACT: Final = _compile(SOURCE.replace("pay 30%", "pay 40%"))

SECOND: Final = 1_000_000
NOW: Final = 1_780_000_000 * SECOND  # 2026-05-28, microseconds
SET_VERSION: Final = 7
CUSTOMS: Final = "customs.cn.shenzhen"
GATE, DOCK, RFID = "iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid"
OUTSIDER: Final = "iot.lax4.gate"  # registered, but not one of the contract's sources
BUYER_WALLET, SELLER_WALLET = "w-buyer", "w-seller"


def ed_key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(hashlib.sha256(b"ed25519:" + name.encode()).digest())


def bls_sk(name: str) -> int:
    return wallets_bls.secret_key(hashlib.sha256(b"bls:" + name.encode()).digest())


BLS_PUBLIC: Final = {
    name: bls_registration(bls_sk(name)).public_key for name in (GATE, DOCK, RFID, OUTSIDER)
}


def ed_record(name: str, *, version: int = 1, revoked: bool = False) -> OracleKey:
    return OracleKey(name, ED25519, ed_key(name).public_key, version, revoked)


def bls_record(name: str, *, version: int = 1) -> OracleKey:
    return OracleKey(name, BLS12_381, BLS_PUBLIC[name], version)


def oracle_set(
    *, bls_members: tuple[str, ...] = (), version: int = SET_VERSION, **changed: OracleKey
) -> OracleSet:
    """customs and the sensors registered (those in ``bls_members`` with BLS keys, the others
    with Ed25519 keys) plus an outsider of each scheme, then ``changed`` records."""
    keys = {
        name: bls_record(name) if name in bls_members else ed_record(name)
        for name in (CUSTOMS, GATE, DOCK, RFID, OUTSIDER)
    }
    if OUTSIDER in bls_members:
        keys[OUTSIDER] = bls_record(OUTSIDER)
    keys.update({record.oracle_id: record for record in changed.values()})
    return OracleSet(version, keys)


ED_ORACLES: Final = oracle_set()
BLS_ORACLES: Final = oracle_set(bls_members=(GATE, DOCK, RFID, OUTSIDER))
MIXED_ORACLES: Final = oracle_set(bls_members=(DOCK, RFID))  # the gate signs with Ed25519

PAYMENT: Final = PaymentBinding(
    "pay-1",
    CONTRACT,
    {"buyer": BUYER_WALLET, "seller": SELLER_WALLET},
    {BUYER_WALLET: ed_key("buyer").public_key, SELLER_WALLET: ed_key("seller").public_key},
)

DEFAULT_ATTRIBUTES: Final[Mapping[str, Mapping[str, AttributeValue]]] = {
    "customs.cleared": {"declaration": "D-2026-0001", "duty_paid": True},
    "iot.arrived": {"site": "LAX-FBA-3", "container": "MSKU1234567"},
    "iot.condition": {"container": "MSKU1234567", "max_temp_c": 9},
    "receipt.signed": {"order": "PO-77", "signer": BUYER_WALLET},
}


def statement(
    oracle: str = "customs",
    event_type: str = "customs.cleared",
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    event_id: str = "ev-1",
    payment_id: str = "pay-1",
    contract_hash: str = CONTRACT.hash,
    oracle_set_version: int = SET_VERSION,
    observed_at_us: int = NOW - 60 * SECOND,
    issued_at_us: int = NOW - 10 * SECOND,
    expires_at_us: int = NOW + 600 * SECOND,
) -> Attestation:
    return build_attestation(
        oracle_set_version=oracle_set_version,
        oracle=oracle,
        event_id=event_id,
        payment_id=payment_id,
        contract_hash=contract_hash,
        event_type=event_type,
        attributes=DEFAULT_ATTRIBUTES[event_type] if attributes is None else attributes,
        observed_at_us=observed_at_us,
        issued_at_us=issued_at_us,
        expires_at_us=expires_at_us,
    )


def customs(attestation: Attestation | None = None, **fields: Any) -> Submission:
    """A customs attestation signed by the customs oracle's key."""
    a = attestation or statement(**fields)
    return Submission(a.statement, a.payload, [sign_ed25519(a.statement, CUSTOMS, ed_key(CUSTOMS))])


def sensors_ed(*signers: str, event_type: str = "iot.arrived", **fields: Any) -> Submission:
    a = statement("sensors", event_type, **fields)
    signatures = [sign_ed25519(a.statement, s, ed_key(s)) for s in signers]
    return Submission(a.statement, a.payload, signatures)


def sensors_bls(*signers: str, **fields: Any) -> Submission:
    a = statement("sensors", "iot.arrived", **fields)
    aggregate = sign_bls_aggregate(a.statement, [(s, bls_sk(s)) for s in signers])
    return Submission(a.statement, a.payload, (), aggregate)


def buyer_receipt(
    signer_wallet: str = BUYER_WALLET, key_of: str = "buyer", **fields: Any
) -> Submission:
    a = statement("buyer", "receipt.signed", **fields)
    return Submission(
        a.statement, a.payload, [sign_party(a.statement, signer_wallet, ed_key(key_of))]
    )


def verify(
    submission: Submission,
    oracles: OracleSet = ED_ORACLES,
    *,
    payment: PaymentBinding = PAYMENT,
    now_us: int = NOW,
    limits: AttestationLimits = DEFAULT_LIMITS,
) -> VerifiedAttestation:
    return verify_attestation(submission, payment, oracles, now_us, limits)


def refused(
    submission: Submission,
    reason: str,
    oracles: OracleSet = ED_ORACLES,
    **kwargs: Any,
) -> SettlementError:
    with pytest.raises(SettlementError) as info:
        verify(submission, oracles, **kwargs)
    error = info.value
    assert error.reason.name == reason, error.message
    assert error.reason.code == Reason.__members__[reason].code
    return error


# -- accepted -----------------------------------------------------------------------------------


def test_a_single_oracle_ed25519_attestation_gives_the_verified_event() -> None:
    result = verify(customs())
    assert result.event.event_id == "ev-1"
    assert result.event.event_type == "customs.cleared"
    assert result.event.oracle == "customs"  # the attester's name in the contract
    assert dict(result.event.attributes) == {"declaration": "D-2026-0001", "duty_paid": True}
    assert result.event.observed_at_us == NOW - 60 * SECOND
    assert result.signer_ids == (CUSTOMS,)
    assert result.key_versions == ((CUSTOMS, 1),)
    assert result.statement.payment_id == "pay-1"


@pytest.mark.parametrize("signers", [(RFID, GATE), (GATE, DOCK, RFID)])
def test_an_ed25519_quorum_of_two_of_three_or_more(signers: tuple[str, ...]) -> None:
    result = verify(sensors_ed(*signers))
    assert result.event.oracle == "sensors"
    assert result.signer_ids == tuple(sorted(signers))


def test_a_two_of_three_bls_aggregate() -> None:
    result = verify(sensors_bls(RFID, DOCK), BLS_ORACLES)
    assert result.signer_ids == (DOCK, RFID)
    assert result.key_versions == ((DOCK, 1), (RFID, 1))


def test_ed25519_and_bls_signers_add_up_to_one_quorum() -> None:
    a = statement("sensors", "iot.arrived")
    submission = Submission(
        a.statement,
        a.payload,
        [sign_ed25519(a.statement, GATE, ed_key(GATE))],
        sign_bls_aggregate(a.statement, [(DOCK, bls_sk(DOCK))]),
    )
    assert verify(submission, MIXED_ORACLES).signer_ids == (DOCK, GATE)


def test_a_party_attestation_signed_by_the_buyers_wallet() -> None:
    result = verify(buyer_receipt())
    assert result.event.oracle == "buyer"
    assert result.signer_ids == (BUYER_WALLET,)
    assert result.key_versions == ()


def test_verified_events_drive_the_evaluator() -> None:
    # The events come out exactly as the evaluator routes them (attester names, attribute types):
    # customs + a sensor quorum release 30%, the buyer's receipt the rest.
    binding = bind_params(
        CONTRACT,
        {
            "buyer": BUYER_WALLET,
            "seller": SELLER_WALLET,
            "price": {"currency": "CNY", "amount_minor": 125_000_00},
            "declaration": "D-2026-0001",
        },
    )
    assert binding.params is not None
    events = [
        verify(customs()).event,
        verify(sensors_bls(GATE, DOCK, event_id="ev-2"), BLS_ORACLES).event,
        verify(buyer_receipt(event_id="ev-3")).event,
    ]
    escrow = Escrow("CNY", 125_000_00, 125_000_00)
    evaluation = evaluate(CONTRACT, binding.params, escrow, events, NOW)
    assert evaluation.ok, evaluation.rejected
    assert [(leg.clause, leg.wallet, leg.amount_minor) for leg in evaluation.legs] == [
        ("arrival", SELLER_WALLET, 37_500_00),
        ("receipt", SELLER_WALLET, 87_500_00),
    ]


def test_an_oracle_set_that_holds_only_the_oracles_needed_is_enough() -> None:
    only_customs = OracleSet(SET_VERSION, {CUSTOMS: ed_record(CUSTOMS)})
    assert verify(customs(), only_customs).signer_ids == (CUSTOMS,)


# -- refused: signatures and keys ---------------------------------------------------------------


def test_a_forged_signature_is_refused_naming_the_signer() -> None:
    a = statement()
    forged = Submission(a.statement, a.payload, [sign_ed25519(a.statement, CUSTOMS, ed_key("x"))])
    error = refused(forged, "SIGNATURE_INVALID")
    assert error.metadata == {"signer_id": CUSTOMS}


@pytest.mark.parametrize("length", [0, 1, 63])
def test_a_truncated_signature_is_refused(length: int) -> None:
    submission = customs()
    signer, signature = submission.ed25519_signatures[0]
    truncated = replace(submission, ed25519_signatures=[(signer, signature[:length])])
    refused(truncated, "SIGNATURE_INVALID")
    padded = replace(submission, ed25519_signatures=[(signer, signature + b"\x00")])
    refused(padded, "SIGNATURE_INVALID")


def test_a_revoked_oracle_is_refused() -> None:
    revoked = oracle_set(customs=ed_record(CUSTOMS, revoked=True))
    refused(customs(), "ORACLE_REVOKED", revoked)


def test_a_key_rotated_out_no_longer_verifies() -> None:
    # The old key signed; the registry now holds version 2, a new key.
    rotated = oracle_set(
        customs=OracleKey(CUSTOMS, ED25519, ed_key("customs v2").public_key, 2, False)
    )
    error = refused(customs(), "SIGNATURE_INVALID", rotated)
    assert error.metadata["signer_id"] == CUSTOMS
    # ... and the new key's signature verifies, under version 2.
    a = statement()
    fresh = Submission(
        a.statement, a.payload, [sign_ed25519(a.statement, CUSTOMS, ed_key("customs v2"))]
    )
    assert verify(fresh, rotated).key_versions == ((CUSTOMS, 2),)


def test_an_unregistered_source_is_not_found() -> None:
    keys = {k: v for k, v in ED_ORACLES.keys.items() if k != CUSTOMS}
    refused(customs(), "ORACLE_NOT_FOUND", OracleSet(SET_VERSION, keys))


def test_a_key_of_the_other_scheme_cannot_sign() -> None:
    # The gate holds an Ed25519 key: it cannot be counted in a BLS aggregate, and a BLS signer
    # cannot sign with Ed25519.
    a = statement("sensors", "iot.arrived")
    in_aggregate = Submission(
        a.statement,
        a.payload,
        (),
        sign_bls_aggregate(a.statement, [(GATE, bls_sk(GATE)), (DOCK, bls_sk(DOCK))]),
    )
    assert refused(in_aggregate, "SIGNATURE_INVALID", MIXED_ORACLES).metadata["signer_id"] == GATE
    as_ed = Submission(
        a.statement,
        a.payload,
        sign_ed25519_quorum(a.statement, [(GATE, ed_key(GATE)), (DOCK, ed_key(DOCK))]),
    )
    assert refused(as_ed, "SIGNATURE_INVALID", MIXED_ORACLES).metadata["signer_id"] == DOCK
    unknown = oracle_set(customs=OracleKey(CUSTOMS, "SECP256K1", ed_key(CUSTOMS).public_key, 1))
    refused(customs(), "SIGNATURE_INVALID", unknown)


def test_a_bls_aggregate_that_does_not_verify_is_refused_naming_its_signers() -> None:
    a = statement("sensors", "iot.arrived")
    only_dock = sign_bls_aggregate(a.statement, [(DOCK, bls_sk(DOCK))]).signature
    claimed = Submission(a.statement, a.payload, (), BlsAggregate((DOCK, RFID), only_dock))
    error = refused(claimed, "SIGNATURE_INVALID", BLS_ORACLES)
    assert error.metadata == {"signer_ids": f"{DOCK},{RFID}"}
    other = sensors_bls(DOCK, RFID, event_id="ev-2").bls_aggregate
    assert other is not None
    moved = Submission(a.statement, a.payload, (), other)
    refused(moved, "SIGNATURE_INVALID", BLS_ORACLES)
    refused(
        replace(claimed, bls_aggregate=((DOCK, RFID), only_dock[:95])),
        "SIGNATURE_INVALID",
        BLS_ORACLES,
    )


def test_any_invalid_signature_refuses_the_whole_attestation_even_with_a_quorum() -> None:
    submission = sensors_ed(GATE, DOCK, RFID)
    signer = submission.ed25519_signatures[2][0]
    bad = [*submission.ed25519_signatures[:2], (signer, bytes(64))]
    assert refused(replace(submission, ed25519_signatures=bad), "SIGNATURE_INVALID").metadata == {
        "signer_id": RFID
    }
    # A signer listed twice counts once, but each of its signatures must verify.
    gate, dock = submission.ed25519_signatures[:2]
    again = [gate, dock, (DOCK, bytes(64))]
    assert refused(replace(submission, ed25519_signatures=again), "SIGNATURE_INVALID").metadata == {
        "signer_id": DOCK
    }


# -- refused: routing ---------------------------------------------------------------------------


def test_an_oracle_the_contract_does_not_name_is_refused() -> None:
    a = statement("insurer")
    submission = Submission(
        a.statement, a.payload, [sign_ed25519(a.statement, CUSTOMS, ed_key(CUSTOMS))]
    )
    error = refused(submission, "ORACLE_NOT_IN_CONTRACT")
    assert error.metadata == {"oracle": "insurer", "event_type": "customs.cleared"}


@pytest.mark.parametrize(
    ("oracle", "event_type"),
    [
        ("customs", "iot.arrived"),  # customs attests clearance only
        ("sensors", "customs.cleared"),
        ("seller", "receipt.signed"),  # a wallet parameter, but not the one the clause names
        ("customs", "bl.issued"),  # an event type no clause listens to
    ],
)
def test_an_event_type_the_attester_does_not_attest_is_refused(
    oracle: str, event_type: str
) -> None:
    a = statement(oracle, event_type, attributes={"site": "x"})
    submission = Submission(
        a.statement, a.payload, [sign_ed25519(a.statement, CUSTOMS, ed_key(CUSTOMS))]
    )
    refused(submission, "ORACLE_NOT_IN_CONTRACT")


def test_a_signer_outside_the_oracles_sources_is_refused() -> None:
    a = statement()
    outsider = Submission(
        a.statement, a.payload, [sign_ed25519(a.statement, OUTSIDER, ed_key(OUTSIDER))]
    )
    assert refused(outsider, "SIGNER_NOT_ALLOWED").metadata == {"signer_id": OUTSIDER}


def test_a_bls_aggregate_with_a_signer_outside_the_quorum_is_refused() -> None:
    submission = sensors_bls(DOCK, OUTSIDER)  # a valid aggregate of two registered BLS keys
    assert refused(submission, "SIGNER_NOT_ALLOWED", BLS_ORACLES).metadata == {
        "signer_id": OUTSIDER
    }


# -- refused: the payment, the payload, the oracle set, time ------------------------------------


def test_a_signature_moved_to_another_payment_is_refused() -> None:
    submission = customs()  # signed for pay-1
    other = replace(PAYMENT, payment_id="pay-2")
    assert refused(submission, "ATTESTATION_WRONG_PAYMENT", payment=other).metadata == {
        "field": "payment_id"
    }
    # Rewriting the statement for pay-2 keeps the signature of the pay-1 bytes: it fails.
    rewritten = statement(payment_id="pay-2")
    moved = Submission(rewritten.statement, rewritten.payload, submission.ed25519_signatures)
    refused(moved, "SIGNATURE_INVALID", payment=other)


def test_a_statement_for_another_contract_is_refused() -> None:
    other = replace(PAYMENT, contract=OTHER_CONTRACT)
    assert refused(customs(), "ATTESTATION_WRONG_PAYMENT", payment=other).metadata == {
        "field": "contract_hash"
    }
    refused(customs(contract_hash=OTHER_CONTRACT.hash), "ATTESTATION_WRONG_PAYMENT")


def test_a_statement_for_an_earlier_oracle_set_is_refused() -> None:
    error = refused(customs(oracle_set_version=SET_VERSION - 1), "ORACLE_SET_CHANGED")
    assert error.metadata == {"statement_version": "6", "current_version": "7"}
    refused(customs(), "ORACLE_SET_CHANGED", oracle_set(version=SET_VERSION + 1))


def test_a_payload_whose_hash_does_not_match_is_refused() -> None:
    submission = customs()
    changed = canonical_payload({"declaration": "D-2026-0002", "duty_paid": True})
    refused(replace(submission, payload=changed), "PAYLOAD_MISMATCH")


NON_CANONICAL: Final = [
    b'{"declaration": "D-1"}',  # whitespace
    b' {"declaration":"D-1"}',
    b'{"declaration":"D-1"}\n',
    b'{"duty_paid":true,"declaration":"D-1"}',  # keys out of order
    b'{"declaration":"D-1","declaration":"D-1"}',  # a repeated key
    b'{"declaration":"\\u0044-1"}',  # an escape where none is needed
    b'{"declaration":"\\u4e2d"}',  # escaped non-ASCII
    b'{"n":1.0}',  # floats
    b'{"n":1e3}',
    b'{"n":-0}',
    b'{"n":01}',
    b'{"n":NaN}',
    b'{"n":9223372036854775808}',  # beyond int64
    b'{"n":' + b"9" * 5000 + b"}",
    b'{"n":null}',
    b'{"n":[1]}',
    b'{"n":{"m":1}}',
    b'["declaration"]',
    b"",
    b"\xef\xbb\xbf{}",  # a byte-order mark
    b'{"s":"\xff"}',  # not UTF-8
    b'{"s":"\\ud800"}',  # a lone surrogate
    b"[" * 100_000 + b"]" * 100_000,  # too large (and too deep)
    b"[" * 30_000 + b"]" * 30_000,  # too deep
    b'{"s":"' + b"x" * 1025 + b'"}',  # a text attribute beyond the language's limit
    canonical_payload({f"a{i:02d}": i for i in range(65)}),  # too many attributes
]


@pytest.mark.parametrize("payload", NON_CANONICAL, ids=range(len(NON_CANONICAL)))
def test_a_non_canonical_payload_is_refused_even_when_the_hash_matches(payload: bytes) -> None:
    a = Attestation(
        replace(
            decode_statement(statement().statement), payload_sha256=payload_sha256(payload)
        ).to_bytes(),
        payload,
    )
    refused(customs(a), "PAYLOAD_MALFORMED")


def test_freshness_boundaries() -> None:
    window, skew, lifetime = (
        DEFAULT_LIMITS.freshness_window_us,
        DEFAULT_LIMITS.future_skew_us_max,
        DEFAULT_LIMITS.lifetime_us_max,
    )
    # Inside, at every edge.
    verify(customs(issued_at_us=NOW - window, observed_at_us=NOW - window))
    verify(customs(issued_at_us=NOW + skew, observed_at_us=NOW + skew))
    verify(customs(expires_at_us=NOW + 1))
    verify(customs(issued_at_us=NOW, observed_at_us=NOW, expires_at_us=NOW + lifetime))
    # One microsecond outside.
    refused(customs(issued_at_us=NOW - window - 1, observed_at_us=0), "ATTESTATION_STALE")
    refused(customs(issued_at_us=NOW + skew + 1), "ATTESTATION_FROM_FUTURE")
    refused(customs(expires_at_us=NOW), "ATTESTATION_EXPIRED")
    refused(
        customs(issued_at_us=NOW, observed_at_us=NOW, expires_at_us=NOW + lifetime + 1),
        "ATTESTATION_TIMES_INVALID",
    )


def test_stale_future_and_expired_statements_are_refused() -> None:
    refused(customs(issued_at_us=NOW - 3600 * SECOND), "ATTESTATION_STALE")
    refused(
        customs(issued_at_us=NOW + 120 * SECOND, expires_at_us=NOW + 900 * SECOND),
        "ATTESTATION_FROM_FUTURE",
    )
    refused(customs(expires_at_us=NOW - SECOND), "ATTESTATION_EXPIRED")


def test_inconsistent_times_are_refused() -> None:
    error = refused(customs(observed_at_us=NOW - 5 * SECOND), "ATTESTATION_TIMES_INVALID")
    assert error.metadata == {"field": "observed_at_us"}
    # Expiring before it was issued (yet after now: issued within the allowed skew).
    refused(
        customs(
            issued_at_us=NOW + 20 * SECOND, observed_at_us=NOW, expires_at_us=NOW + 10 * SECOND
        ),
        "ATTESTATION_TIMES_INVALID",
    )


def test_the_freshness_limits_are_parameters() -> None:
    strict = AttestationLimits(freshness_window_us=5 * SECOND)
    refused(customs(), "ATTESTATION_STALE", limits=strict)  # issued 10 s ago
    verify(customs(), limits=AttestationLimits(freshness_window_us=10 * SECOND))


# -- refused: quorum ----------------------------------------------------------------------------


def test_a_quorum_one_short_is_refused_with_needed_and_counted() -> None:
    error = refused(sensors_ed(DOCK), "QUORUM_NOT_MET")
    assert error.metadata == {"oracle": "sensors", "needed": "2", "counted": "1"}
    refused(sensors_bls(DOCK), "QUORUM_NOT_MET", BLS_ORACLES)
    no_signatures = replace(customs(), ed25519_signatures=[])
    assert refused(no_signatures, "QUORUM_NOT_MET").metadata["needed"] == "1"


def test_one_ed25519_signer_listed_twice_counts_once() -> None:
    submission = sensors_ed(DOCK)
    twice = replace(submission, ed25519_signatures=list(submission.ed25519_signatures) * 2)
    assert refused(twice, "QUORUM_NOT_MET").metadata["counted"] == "1"
    # Listed twice beside a second signer: the quorum is met, the dock counted once.
    gate = sign_ed25519(submission.statement, GATE, ed_key(GATE))
    met = replace(submission, ed25519_signatures=[*twice.ed25519_signatures, gate])
    assert verify(met).signer_ids == (DOCK, GATE)


def test_one_bls_signer_listed_twice_counts_once() -> None:
    a = statement("sensors", "iot.arrived")
    scheme = wallets_bls.backend()
    dock = scheme.sign(bls_sk(DOCK), a.statement)
    # The aggregate really holds the dock's signature twice, so it verifies over [dock, dock]:
    # only the count can stop it.
    doubled = scheme.aggregate([dock, dock])
    assert scheme.fast_aggregate_verify([BLS_PUBLIC[DOCK]] * 2, a.statement, doubled)
    submission = Submission(a.statement, a.payload, (), BlsAggregate((DOCK, DOCK), doubled))
    assert refused(submission, "QUORUM_NOT_MET", BLS_ORACLES).metadata["counted"] == "1"
    # With a second signer the quorum is met, and the dock still counts once.
    both = scheme.aggregate([dock, dock, scheme.sign(bls_sk(RFID), a.statement)])
    ok = Submission(a.statement, a.payload, (), BlsAggregate((DOCK, RFID, DOCK), both))
    assert verify(ok, BLS_ORACLES).signer_ids == (DOCK, RFID)


def test_one_signer_in_both_lists_counts_once_and_must_hold_a_key_of_each_scheme() -> None:
    a = statement("sensors", "iot.arrived")
    aggregate = sign_bls_aggregate(a.statement, [(DOCK, bls_sk(DOCK))])
    # The dock's registered key is BLS: its Ed25519 signature cannot count as a second signer.
    both = Submission(
        a.statement, a.payload, [sign_ed25519(a.statement, DOCK, ed_key(DOCK))], aggregate
    )
    refused(both, "SIGNATURE_INVALID", MIXED_ORACLES)


# -- refused: party attestations ----------------------------------------------------------------


def test_a_party_attestation_by_another_wallet_is_refused() -> None:
    # The seller signs with its own wallet key, as itself ...
    assert refused(buyer_receipt(SELLER_WALLET, "seller"), "SIGNER_NOT_ALLOWED").metadata == {
        "signer_id": SELLER_WALLET
    }
    # ... or in the buyer's name.
    refused(buyer_receipt(BUYER_WALLET, "seller"), "SIGNATURE_INVALID")
    # An oracle cannot attest for the buyer either.
    a = statement("buyer", "receipt.signed")
    by_oracle = Submission(
        a.statement, a.payload, [sign_ed25519(a.statement, CUSTOMS, ed_key(CUSTOMS))]
    )
    refused(by_oracle, "SIGNER_NOT_ALLOWED")


def test_a_party_attestation_needs_the_wallets_ed25519_signature() -> None:
    a = statement("buyer", "receipt.signed")
    aggregate = sign_bls_aggregate(a.statement, [(BUYER_WALLET, bls_sk("buyer"))])
    refused(Submission(a.statement, a.payload, (), aggregate), "SIGNER_NOT_ALLOWED")
    refused(Submission(a.statement, a.payload, ()), "QUORUM_NOT_MET")
    no_key = replace(PAYMENT, wallet_keys={})
    refused(buyer_receipt(), "WALLET_NOT_FOUND", payment=no_key)


# -- refused: malformed -------------------------------------------------------------------------


def test_malformed_statements_are_refused() -> None:
    good = statement().statement
    transfer = TransferInstruction("w-a", "w-b", "CNY", 1, "platform/p", "r-1", NOW).to_bytes()
    for bad in (b"", good[:-1], good + b"\n", good.replace(b"v1", b"v2", 1), transfer):
        refused(replace(customs(), statement=bad), "ATTESTATION_MALFORMED")
    error = refused(
        replace(customs(), statement=good.replace(b"event_id: ev-1", b"event_id: ev 1")),
        "ATTESTATION_MALFORMED",
    )
    assert error.metadata == {"field": "event_id"}


def test_too_many_signatures_or_an_aggregate_without_signers_are_malformed() -> None:
    submission = customs()
    many = list(submission.ed25519_signatures) * (DEFAULT_LIMITS.signatures_count_max + 1)
    refused(replace(submission, ed25519_signatures=many), "ATTESTATION_MALFORMED")
    refused(replace(submission, bls_aggregate=((), bytes(96))), "ATTESTATION_MALFORMED")


# -- the order of the checks --------------------------------------------------------------------


def _forged(submission: Submission) -> Submission:
    return replace(
        submission, ed25519_signatures=[(s, bytes(64)) for s, _ in submission.ed25519_signatures]
    )


PRECEDENCE: Final[list[tuple[str, Any, str]]] = [
    # (what is wrong, a submission with two or more defects, the first in the documented order)
    (
        "malformed beats everything",
        lambda: replace(customs(payment_id="pay-2"), statement=b"x"),
        "ATTESTATION_MALFORMED",
    ),
    (
        "payment before routing",
        lambda: customs(statement("insurer", payment_id="pay-2")),
        "ATTESTATION_WRONG_PAYMENT",
    ),
    (
        "routing before payload",
        lambda: replace(customs(statement("insurer")), payload=b"{}"),
        "ORACLE_NOT_IN_CONTRACT",
    ),
    (
        "payload before oracle set",
        lambda: replace(customs(oracle_set_version=1), payload=b"{}"),
        "PAYLOAD_MISMATCH",
    ),
    (
        "oracle set before time",
        lambda: customs(oracle_set_version=1, expires_at_us=NOW),
        "ORACLE_SET_CHANGED",
    ),
    (
        "time before signers",
        lambda: _forged(customs(issued_at_us=NOW - 3600 * SECOND)),
        "ATTESTATION_STALE",
    ),
    ("signers before quorum", lambda: sensors_ed(OUTSIDER), "SIGNER_NOT_ALLOWED"),
    ("quorum before cryptography", lambda: _forged(sensors_ed(DOCK)), "QUORUM_NOT_MET"),
]


@pytest.mark.parametrize(("case", "make", "reason"), PRECEDENCE, ids=[c for c, _, _ in PRECEDENCE])
def test_the_first_failing_check_in_the_documented_order_answers(
    case: str, make: Any, reason: str
) -> None:
    refused(make(), reason)


# -- any single-byte change is refused ----------------------------------------------------------

PROPERTY: Final = settings(derandomize=True, deadline=None, max_examples=150, database=None)
ED_SUBMISSION: Final = customs()
BLS_SUBMISSION: Final = sensors_bls(GATE, RFID)


def _flip(data: bytes, index: int, delta: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ delta]) + data[index + 1 :]


@PROPERTY
@given(index=st.integers(min_value=0), delta=st.integers(1, 255), use_bls=st.booleans())
def test_any_single_byte_change_of_the_statement_is_refused(
    index: int, delta: int, use_bls: bool
) -> None:
    submission, oracles = (BLS_SUBMISSION, BLS_ORACLES) if use_bls else (ED_SUBMISSION, ED_ORACLES)
    verify(submission, oracles)  # the unchanged submission is fine
    changed = replace(submission, statement=_flip(submission.statement, index, delta))
    with pytest.raises(SettlementError):
        verify(changed, oracles)


@PROPERTY
@given(index=st.integers(min_value=0), delta=st.integers(1, 255), use_bls=st.booleans())
def test_any_single_byte_change_of_a_signature_is_refused(
    index: int, delta: int, use_bls: bool
) -> None:
    if use_bls:
        aggregate = BLS_SUBMISSION.bls_aggregate
        assert aggregate is not None
        changed = replace(
            BLS_SUBMISSION, bls_aggregate=(aggregate[0], _flip(aggregate[1], index, delta))
        )
        refused(changed, "SIGNATURE_INVALID", BLS_ORACLES)
    else:
        ((signer, signature),) = ED_SUBMISSION.ed25519_signatures
        changed = replace(
            ED_SUBMISSION, ed25519_signatures=[(signer, _flip(signature, index, delta))]
        )
        refused(changed, "SIGNATURE_INVALID")


@PROPERTY
@given(index=st.integers(min_value=0), delta=st.integers(1, 255))
def test_any_single_byte_change_of_the_payload_is_refused(index: int, delta: int) -> None:
    changed = replace(ED_SUBMISSION, payload=_flip(ED_SUBMISSION.payload, index, delta))
    with pytest.raises(SettlementError) as info:
        verify(changed)
    assert info.value.reason.name in {"PAYLOAD_MALFORMED", "PAYLOAD_MISMATCH"}


# -- registration -------------------------------------------------------------------------------


def test_registration_accepts_valid_keys_with_their_proofs() -> None:
    check_registration(ED25519, ed_key(CUSTOMS).public_key, b"")
    public_key, proof = bls_registration(bls_sk(GATE))
    check_registration(BLS12_381, public_key, proof)


@pytest.mark.parametrize(
    "proof",
    [
        b"",
        bytes(96),
        bls_registration(bls_sk(DOCK)).proof_of_possession,
    ],  # none, garbage, another key's
    ids=["none", "garbage", "another-keys"],
)
def test_a_bls_key_without_its_own_proof_of_possession_is_refused(proof: bytes) -> None:
    assert (
        check_registration_reason(BLS12_381, BLS_PUBLIC[GATE], proof)
        == "PROOF_OF_POSSESSION_INVALID"
    )


def test_without_proof_of_possession_a_rogue_key_forges_the_quorum() -> None:
    # The attacker controls the dock and wants a 2-of-3 without the gate. It registers for the
    # dock rogue = g1·x − pk_gate, so that pk_gate + rogue = g1·x: x alone signs for both.
    x = 0x5EC12E7
    rogue = G1_to_pubkey(add(multiply(G1, x), neg(pubkey_to_G1(BLSPubkey(BLS_PUBLIC[GATE])))))
    a = statement("sensors", "iot.arrived")
    forged = BlsAggregate((GATE, DOCK), wallets_bls.backend().sign(x, a.statement))
    unchecked = oracle_set(bls_members=(GATE, RFID), dock=OracleKey(DOCK, BLS12_381, rogue, 2))
    # Had the key been registered unchecked, the gate would be counted without having signed:
    assert verify(Submission(a.statement, a.payload, (), forged), unchecked).signer_ids == (
        DOCK,
        GATE,
    )
    # Registration refuses it: nobody knows the rogue key's secret, so no proof verifies.
    for proof in (
        b"",
        wallets_bls.backend().pop_prove(x),
        bls_registration(bls_sk(DOCK)).proof_of_possession,
    ):
        assert check_registration_reason(BLS12_381, rogue, proof) == "PROOF_OF_POSSESSION_INVALID"


@pytest.mark.parametrize(
    ("scheme", "public_key", "proof"),
    [
        (ED25519, bytes(32), b""),  # y = 0: small order; OpenSSL accepts forgeries for it
        (ED25519, (1).to_bytes(32, "little"), b""),  # the identity
        (ED25519, b"\x01" * 31, b""),
        (BLS12_381, b"\xc0" + bytes(47), b"\xc0" + bytes(95)),  # the identity, with its "proof"
        (BLS12_381, b"\x00" * 48, b""),
        (BLS12_381, BLS_PUBLIC[GATE][:47], b""),
        ("SECP256K1", bytes(33), b""),
    ],
    ids=[
        "ed-small-order",
        "ed-identity",
        "ed-short",
        "bls-identity",
        "bls-garbage",
        "bls-short",
        "unknown",
    ],
)
def test_invalid_public_keys_are_refused(scheme: str, public_key: bytes, proof: bytes) -> None:
    assert check_registration_reason(scheme, public_key, proof) == "INVALID_PUBLIC_KEY"


def test_an_ed25519_key_takes_no_proof() -> None:
    reason = check_registration_reason(ED25519, ed_key(CUSTOMS).public_key, b"proof")
    assert reason == "PROOF_OF_POSSESSION_INVALID"


def check_registration_reason(scheme: str, public_key: bytes, proof: bytes) -> str:
    with pytest.raises(SettlementError) as info:
        check_registration(scheme, public_key, proof)
    assert info.value.reason.code == Reason.__members__[info.value.reason.name].code
    return info.value.reason.name


# -- the payload encoding and the helpers -------------------------------------------------------

ATTRIBUTE_VALUES: Final = st.one_of(
    st.text(max_size=40), st.integers(INT64_MIN, INT64_MAX), st.booleans()
)


@PROPERTY
@given(st.dictionaries(st.text(max_size=12), ATTRIBUTE_VALUES, max_size=8))
def test_canonical_payloads_parse_back_to_their_attributes(
    attributes: dict[str, AttributeValue],
) -> None:
    payload = canonical_payload(attributes)
    assert parse_payload(payload) == attributes
    assert canonical_payload(parse_payload(payload)) == payload


def test_canonical_payload_refuses_what_the_server_would() -> None:
    assert canonical_payload({"b": 1, "a": "中", "c": True}) == '{"a":"中","b":1,"c":true}'.encode()
    for bad_value in (1.5, None, [1], {"x": 1}):
        with pytest.raises(TypeError):
            canonical_payload({"a": bad_value})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        canonical_payload({1: "a"})  # type: ignore[dict-item]
    for bad in (INT64_MAX + 1, INT64_MIN - 1):
        with pytest.raises(ValueError, match="int64"):
            canonical_payload({"a": bad})
    with pytest.raises(ValueError, match="Unicode"):
        canonical_payload({"a": "\ud800"})


def test_the_helpers_refuse_repeated_signers_and_malformed_statements() -> None:
    a = statement()
    with pytest.raises(ValueError, match="once"):
        sign_ed25519_quorum(a.statement, [(GATE, ed_key(GATE)), (GATE, ed_key(GATE))])
    with pytest.raises(ValueError, match="once"):
        sign_bls_aggregate(a.statement, [(GATE, bls_sk(GATE)), (GATE, bls_sk(GATE))])
    with pytest.raises(ValueError, match="at least one"):
        sign_bls_aggregate(a.statement, [])
    with pytest.raises(MalformedInstruction):
        sign_ed25519(a.statement + b"x", CUSTOMS, ed_key(CUSTOMS))
    with pytest.raises(MalformedInstruction):
        statement(event_id="has space")
    assert sign_ed25519_quorum(a.statement, [(GATE, ed_key(GATE))]) == [
        Ed25519Signature(GATE, ed_key(GATE).sign(a.statement))
    ]
    assert a.decoded().payload_sha256 == hashlib.sha256(a.payload).hexdigest()


def test_every_reason_the_verifier_raises_is_declared_for_submit_attestation() -> None:
    declared = METHODS["/condpay.v1.OracleService/SubmitAttestation"].reasons
    source = Path(verifier.__file__).read_text()
    raised = {m for m in CoreReason if f"Reason.{m.name}" in source}
    assert len(raised) > 10
    registration = {CoreReason.INVALID_PUBLIC_KEY, CoreReason.PROOF_OF_POSSESSION_INVALID}
    assert registration <= METHODS["/condpay.v1.OracleService/RegisterOracle"].reasons
    assert raised - registration <= declared, sorted(r.name for r in raised - declared)
    with pytest.raises(SettlementError) as info:
        verify(_forged(customs()))
    assert info.value.reason is CoreReason.SIGNATURE_INVALID
