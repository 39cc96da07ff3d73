"""Evidence bundles (EvidenceService.GetPaymentEvidence, `condpay evidence export|verify`)
through the real server on SQLite and PostgreSQL, on the clock the tests move: a settled
payment (financed, with assigned proceeds, customs + a 2-of-3 BLS sensor quorum + the buyer's
receipt), a partially released one, one refunded at its deadline and a cancelled one verify
offline with the SDK alone; one byte changed in an amount, an attestation signature, a journal
entry, the contract, a signed document or the checkpoint makes `verify` exit 1 naming it; a
bundle checked against another checkpoint key fails; who may not see a payment gets
PAYMENT_NOT_FOUND, exactly as for an id that does not exist."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from condpay import evidence_cli
from condpay.errors import ApiError
from condpay.evidence import EvidenceError, verify_bundle
from condpay.v1 import evidence_pb2, payment_pb2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from tests.payments.snapshot import (
    ORACLE,
    assignment,
    by_buyer,
    by_sensors,
    cancel_request,
    cleared_for,
    fund_request,
    locked,
    receipt,
    submit,
)
from tests.payments.snapshot import arrived as arrival
from tests.payments.test_payment_lifecycle import DEADLINE_US, sweep_at
from tests.payments.world import FINANCIER, PLATFORM, SENSORS, Oracles, TradeWorld, register_oracles
from tests.support.harness import AUDITOR
from wallets import OwnerKey, verify

GATE, DOCK, RFID = SENSORS
STATE = payment_pb2.PaymentState


async def _export(trade: TradeWorld, payment_id: str, caller: str = AUDITOR) -> bytes:
    client = trade.client(caller)
    reply = await client.api.evidence.get_payment_evidence(
        evidence_pb2.GetPaymentEvidenceRequest(payment_id=payment_id)
    )
    return reply.bundle


async def _key(trade: TradeWorld) -> bytes:
    got = await trade.client(AUDITOR).api.evidence.get_checkpoint_key(
        evidence_pb2.GetCheckpointKeyRequest()
    )
    return got.public_key


def _cli(*argv: str) -> int:
    return evidence_cli.main(list(argv))


async def _arrive(trade: TradeWorld, oracles: Oracles, payment: payment_pb2.Payment) -> None:
    statement = await arrival(trade, payment, "ev-arrived")
    await submit(trade.client(ORACLE), statement, [], by_sensors(oracles, statement, GATE, RFID))


async def _settled(trade: TradeWorld) -> str:
    """Locked, 40% financed, 50,000.00 of the seller's proceeds assigned, customs, sensors
    (30%: to the financier, the assignee), the buyer's receipt (the rest: 12,500.00 to the
    financier, 75,000.00 to the seller): SETTLED."""
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    financier = trade.client(FINANCIER)
    await financier.api.payments.fund_escrow(
        fund_request(trade, trade.wallets["financier"], payment.payment_id, 50_000_00)
    )
    await financier.assign_proceeds(
        trade.keys["seller"],
        trade.keys["financier"],
        assignment(
            trade,
            payment.payment_id,
            payee=trade.wallets["seller"],
            assigned_minor=50_000_00,
            advance_minor=48_000_00,
        ),
    )
    await cleared_for(trade, oracles, payment, "ev-customs")
    await _arrive(trade, oracles, payment)
    statement = await receipt(trade, payment, "ev-receipt")
    await submit(trade.platform, statement, by_buyer(trade, statement))
    done = await trade.cb.get_payment(payment.payment_id)
    assert done.state == STATE.PAYMENT_STATE_SETTLED
    return payment.payment_id


def _tampered(bundle: bytes, change: Any) -> bytes:
    document = json.loads(bundle)
    change(document)
    return json.dumps(document, sort_keys=True, indent=1).encode()


def _flip_hex(value: str, at: int = 0) -> str:
    """One byte of a hex string changed (its first nibble at byte ``at``)."""
    i = 2 * at
    return value[:i] + format(int(value[i], 16) ^ 1, "x") + value[i + 1 :]


def _failure(data: bytes, key: bytes | None, label: str = "") -> EvidenceError:
    try:
        verify_bundle(data, key)
    except EvidenceError as error:
        return error
    pytest.fail(f"{label or 'the bundle'} verified")


# -- exporting and verifying ---------------------------------------------------------------------
async def test_a_settled_payment_exports_and_verifies_offline(
    trade: TradeWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payment_id = await _settled(trade)
    key = await _key(trade)
    out = tmp_path / "settled.json"
    # The command as a person runs it, against the real server (development mode, a caller).
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "launcher",
        "evidence",
        "export",
        payment_id,
        "--server",
        trade.harness.address,
        "--caller",
        AUDITOR,
        "--insecure",
        "-o",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    _stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert out.read_bytes() == await _export(trade, payment_id)

    pub = tmp_path / "checkpoint.pub"
    pub.write_bytes(
        serialization.load_der_public_key(
            # the raw key as SubjectPublicKeyInfo: the Ed25519 OID prefix and the 32 bytes
            bytes.fromhex("302a300506032b6570032100") + key
        ).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    capsys.readouterr()
    assert _cli("verify", str(out), "--checkpoint-key", str(pub)) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    summary = printed.out
    assert f"VERIFIED {out}" in summary
    assert "SETTLED" in summary
    assert "released 30% (37,500.00 CNY) on customs (1 of 1) + sensors (2 of 3)" in summary
    assert "released rest (87,500.00 CNY) on buyer" in summary
    result = verify_bundle(out.read_bytes(), key)
    assert result.attestations == 3
    assert result.state == "SETTLED"
    # Lock, fund, advance and two releases (the receipt's pays the financier and the seller).
    bundle = json.loads(out.read_bytes())
    assert [e["kind"] for e in bundle["entries"]] == [
        "LOCK",
        "FUND",
        "ADVANCE",
        "RELEASE",
        "RELEASE",
    ]
    assert [(g["leg_id"], g["amount_minor"]) for g in bundle["legs"]] == [
        ("arrival/0", 37_500_00),
        ("receipt/0#0", 12_500_00),
        ("receipt/0#1", 75_000_00),
    ]
    assert [d["kind"] for d in bundle["documents"]] == [
        "LOCK",
        "FUND",
        "ASSIGN",
        "ATTESTATION",
        "ATTESTATION",
        "ATTESTATION",
    ]
    sensors = bundle["documents"][4]["oracle_set"]
    assert (sensors["threshold"], sensors["sources"]) == (2, sorted(SENSORS))
    # Without a trusted key: verified against the bundle's own, with a warning.
    assert _cli("verify", str(out)) == 0
    assert "warning: checked against the checkpoint key in the bundle" in capsys.readouterr().err
    # As the platform, the buyer's and seller's bank and the PBoC: the same payment.
    for caller in (PLATFORM, "institution/icbc-sz", "central_bank/pboc"):
        verify_bundle(await _export(trade, payment_id, caller), key)


async def test_tampering_with_any_part_fails_naming_it(
    trade: TradeWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payment_id = await _settled(trade)
    key = await _key(trade)
    bundle = await _export(trade, payment_id)
    verify_bundle(bundle, key)

    def leg_amount(d: dict[str, Any]) -> None:
        d["legs"][0]["amount_minor"] += 1

    def posting_amount(d: dict[str, Any]) -> None:
        d["entries"][-1]["postings"][1][3] += 1

    def entry_memo(d: dict[str, Any]) -> None:
        d["entries"][0]["memo"] += "x"

    def bls_signature(d: dict[str, Any]) -> None:
        sensors = d["documents"][4]
        sensors["bls"]["signature"] = _flip_hex(sensors["bls"]["signature"], 20)

    def customs_signature(d: dict[str, Any]) -> None:
        customs = d["documents"][3]
        customs["ed25519"][0]["signature"] = _flip_hex(customs["ed25519"][0]["signature"], 5)

    def attributes(d: dict[str, Any]) -> None:
        d["documents"][3]["attributes"] = _flip_hex(d["documents"][3]["attributes"], 3)

    def contract(d: dict[str, Any]) -> None:
        d["contract"]["source"] = d["contract"]["source"].replace("pay 30%", "pay 31%", 1)

    def lock_amount(d: dict[str, Any]) -> None:
        d["payment"]["escrow_minor"] += 1

    def lock_signature(d: dict[str, Any]) -> None:
        lock = d["documents"][0]["signatures"][0]
        lock["signature"] = _flip_hex(lock["signature"], 9)

    def checkpoint_root(d: dict[str, Any]) -> None:
        d["checkpoint"]["tree_root"] = _flip_hex(d["checkpoint"]["tree_root"])

    def checkpoint_seq(d: dict[str, Any]) -> None:
        d["checkpoint"]["seq"] += 1

    def proof(d: dict[str, Any]) -> None:
        d["entries"][2]["proof"][0] = _flip_hex(d["entries"][2]["proof"][0])

    def dropped_leg(d: dict[str, Any]) -> None:
        del d["legs"][-1]

    def funding(d: dict[str, Any]) -> None:
        d["financing"][0]["principal_minor"] -= 1

    lock_seq = json.loads(bundle)["entries"][0]["seq"]
    cases = [
        (leg_amount, "leg arrival/0"),  # the 30% leg, paid to the assignee
        (posting_amount, f"journal entry {json.loads(bundle)['entries'][-1]['seq']}: hash"),
        (entry_memo, f"journal entry {lock_seq}: hash"),
        (bls_signature, "attestation ev-arrived of sensors: BLS aggregate signature"),
        (customs_signature, "attestation ev-customs of customs: signature of customs.cn.shenzhen"),
        (attributes, "attestation ev-customs of customs: attributes"),
        (contract, "contract"),
        (lock_amount, "lock document (payment version 1)"),
        (lock_signature, "lock document (payment version 1): signature of"),
        (checkpoint_root, "checkpoint: signature"),
        (checkpoint_seq, "checkpoint: signature"),
        (proof, "inclusion proof"),
        (dropped_leg, "leg receipt/0"),
        (funding, "financing"),
    ]
    for change, named in cases:
        failure = _failure(_tampered(bundle, change), key, change.__name__)
        assert named in str(failure), (change.__name__, str(failure))

    # What the payer signed is the contract's canonical hash: a comment of the source is not
    # in it, so changing one changes nothing that is proved (docs/evidence.md says so).
    def comment(d: dict[str, Any]) -> None:
        d["contract"]["source"] = d["contract"]["source"].replace("# 30%", "# 31%", 1)

    verify_bundle(_tampered(bundle, comment), key)
    # Through the command: exit 1 and the first thing that failed, on stderr.
    bad = tmp_path / "bad.json"
    bad.write_bytes(_tampered(bundle, leg_amount))
    capsys.readouterr()
    assert _cli("verify", str(bad), "--checkpoint-key", key.hex()) == 1
    err = capsys.readouterr().err
    assert err.startswith("NOT VERIFIED: leg arrival/0"), err
    # A byte that is no longer JSON; a file that is not there (a usage error, 2).
    bad.write_bytes(bundle.replace(b"{", b"[", 1))
    assert _cli("verify", str(bad)) == 1
    assert _cli("verify", str(tmp_path / "missing.json")) == 2


async def test_another_checkpoint_key_does_not_verify(trade: TradeWorld) -> None:
    payment_id = await _settled(trade)
    bundle = await _export(trade, payment_id)
    other = Ed25519PrivateKey.generate().public_key()
    raw = other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    failure = _failure(bundle, raw)
    assert failure.what == "checkpoint"
    assert "not by the trusted key" in failure.why
    # The checkpoint re-signed by that other key and put in the bundle: the trusted key refuses.
    forger = Ed25519PrivateKey.generate()
    forged_key = forger.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )

    def resign(d: dict[str, Any]) -> None:
        from condpay.checkpoints import key_id, statement

        cp = d["checkpoint"]
        cp["public_key"], cp["key_id"] = forged_key.hex(), key_id(forged_key)
        cp["signature"] = forger.sign(
            statement(
                cp["seq"],
                bytes.fromhex(cp["head_hash"]),
                bytes.fromhex(cp["tree_root"]),
                cp["signed_at_us"],
            )
        ).hex()

    forged = _tampered(bundle, resign)
    verify_bundle(forged, forged_key)  # consistent in itself...
    assert _failure(forged, await _key(trade)).what == "checkpoint"  # ...but not the server's


async def test_a_partially_released_payment(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    await cleared_for(trade, oracles, payment, "ev-customs")
    await _arrive(trade, oracles, payment)
    bundle = await _export(trade, payment.payment_id, PLATFORM)
    result = verify_bundle(bundle, await _key(trade))
    assert result.state == "PARTIALLY_RELEASED"
    text_ = "\n".join(result.summary)
    assert "released 30% (37,500.00 CNY) on customs (1 of 1) + sensors (2 of 3)" in text_
    assert len(result.summary) == 3  # the lock, the release, the proofs


async def test_a_payment_refunded_at_its_deadline(trade: TradeWorld) -> None:
    await register_oracles(trade)
    payment = await locked(trade)
    financier = trade.client(FINANCIER)
    await financier.api.payments.fund_escrow(
        fund_request(trade, trade.wallets["financier"], payment.payment_id, 50_000_00)
    )
    await sweep_at(trade, DEADLINE_US)
    assert (await trade.cb.get_payment(payment.payment_id)).state == STATE.PAYMENT_STATE_EXPIRED
    bundle = await _export(trade, payment.payment_id, "institution/icbc-sz")
    result = verify_bundle(bundle, await _key(trade))
    assert result.state == "EXPIRED"
    assert "refunded 100% (125,000.00 CNY) at the deadline at 2026-12-30 16:00:00 UTC" in (
        "\n".join(result.summary)
    )
    legs = json.loads(bundle)["legs"]
    assert [(g["leg_id"], g["paid_to_wallet_id"], g["amount_minor"]) for g in legs] == [
        ("deadline/0#0", trade.wallets["financier"], 50_000_00),
        ("deadline/0#1", trade.wallets["buyer"], 75_000_00),
    ]

    # A deadline the record moved: the evaluator no longer makes the refund due then.
    def early(d: dict[str, Any]) -> None:
        d["changes"][-1]["at_us"] = DEADLINE_US - 1

    failure = _failure(_tampered(bundle, early), await _key(trade))
    assert failure.what.startswith("leg deadline/0"), str(failure)


async def test_a_cancelled_payment(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    await cleared_for(trade, oracles, payment, "ev-customs")
    await _arrive(trade, oracles, payment)
    buyer, seller = trade.wallets["buyer"], trade.wallets["seller"]
    await trade.platform.api.payments.cancel_payment(
        cancel_request(
            trade, payment.payment_id, {buyer: trade.keys["buyer"], seller: trade.keys["seller"]}
        )
    )
    bundle = await _export(trade, payment.payment_id)
    result = verify_bundle(bundle, await _key(trade))
    assert result.state == "CANCELLED"

    # The cancellation needs every party: drop the seller's signature.
    def one_signer(d: dict[str, Any]) -> None:
        d["documents"][-1]["signatures"] = [
            s for s in d["documents"][-1]["signatures"] if s["signer"] != seller
        ]

    failure = _failure(_tampered(bundle, one_signer), await _key(trade))
    assert failure.why == f"wallet {seller} did not sign"


# -- who may read it ------------------------------------------------------------------------------
async def test_who_may_not_see_the_payment_gets_payment_not_found(trade: TradeWorld) -> None:
    payment = await locked(trade)

    async def refusal(caller: str, payment_id: str) -> ApiError:
        with pytest.raises(ApiError) as caught:
            await _export(trade, payment_id, caller)
        return caught.value

    unknown = await refusal(AUDITOR, "p_doesnotexist")
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")
    await trade.cb.register_institution("boc-hk", "BOC Hong Kong", OwnerKey.generate().public_key)
    for caller in (
        "platform/other-platform",
        "institution/boc-hk",
        "central_bank/hkma",  # not the central bank of CNY
    ):
        hidden = await refusal(caller, payment.payment_id)
        as_unknown = await refusal(caller, "p_doesnotexist")
        assert (hidden.code, hidden.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")
        # Nothing of the payment but its id, exactly as for an id that does not exist.
        assert hidden.message == as_unknown.message.replace("p_doesnotexist", payment.payment_id)
        assert hidden.metadata == {"id": payment.payment_id}
    # Financiers and oracles read no payment's evidence (a financier's institution does): the
    # role is refused whatever the id.
    for caller in (FINANCIER, ORACLE):
        denied = await refusal(caller, payment.payment_id)
        assert (denied.code, denied.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_ALLOWED",
        )
    # The ones that may: its platform, the parties' bank, the PBoC, auditors.
    for caller in (PLATFORM, "institution/icbc-sz", "central_bank/pboc", AUDITOR):
        assert (
            json.loads(await _export(trade, payment.payment_id, caller))["payment"]["payment_id"]
            == payment.payment_id
        )


async def test_the_signed_bytes_are_stored_with_each_change(trade: TradeWorld) -> None:
    """The lock's document is written with the lock, in its transaction: a payment and its
    signed lock are never one without the other, and the bytes are those the payer signed."""
    payment = await locked(trade)
    async with trade.harness.runtime.sql.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT version, idx, kind, payload, entry_seq FROM payment_documents "
                    "WHERE payment_id = :p"
                ),
                {"p": payment.payment_id},
            )
        ).all()
    ((version, idx, kind, payload, entry_seq),) = rows
    assert (version, idx, kind) == (1, 0, "LOCK")
    bundle = json.loads(await _export(trade, payment.payment_id))
    assert entry_seq == bundle["entries"][0]["seq"]
    (signed,) = bundle["documents"][0]["signatures"]
    assert signed["signer"] == trade.wallets["buyer"]
    verify(trade.keys["buyer"].public_key, bytes.fromhex(signed["signature"]), bytes(payload))


async def test_one_byte_changed_anywhere_fails_unless_it_is_outside_what_is_proved(
    trade: TradeWorld,
) -> None:
    """A seeded sample of single-byte changes over the whole file: every one is refused with an
    EvidenceError (never another exception), except inside what docs/evidence.md says a bundle
    does not prove: the contract source's comments and layout (not in its hash), a wallet's
    institution, the key records of oracle sources that did not sign."""
    import random
    import re

    payment_id = await _settled(trade)
    key = await _key(trade)
    bundle = await _export(trade, payment_id)
    text_ = bundle.decode()
    unproved: list[tuple[int, int]] = []
    source = json.dumps(json.loads(bundle)["contract"]["source"], ensure_ascii=False)
    start = text_.index(source)
    unproved.append((start, start + len(source)))
    for pattern in (
        r'"institution_id": "[^"]*"',
        r'\{[^{}]*"oracle_id": "iot\.lax3\.dock"[^{}]*\}',
    ):
        unproved.extend(m.span() for m in re.finditer(pattern, text_))
    rng = random.Random(15)
    for pos in rng.sample(range(len(bundle)), 400):
        old = chr(bundle[pos])
        new = str((int(old) + 1) % 10) if old.isdigit() else ("x" if old != "x" else "y")
        changed = bundle[:pos] + new.encode() + bundle[pos + 1 :]
        try:
            verify_bundle(changed, key)
        except EvidenceError:
            continue
        assert any(a <= pos < b for a, b in unproved), (pos, text_[pos - 60 : pos + 20])
