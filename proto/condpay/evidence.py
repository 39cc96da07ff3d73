"""Evidence bundles: why a conditional payment's money moved, checked offline.

A bundle (``EvidenceService.GetPaymentEvidence``; ``condpay evidence export``) is one UTF-8 JSON
document of format ``condpay.evidence.v1`` (docs/evidence.md, "Bundle format"). This module is
the verifier: it needs nothing of the server, only the client package (``wallets`` for the
signed documents, ``contracts_dsl`` to compile the contract and re-run its pure evaluator,
``condpay.checkpoints`` and ``condpay.journal`` for the proofs)::

    from condpay.evidence import verify_bundle

    result = verify_bundle(open("p.evidence.json", "rb").read(), checkpoint_key=trusted_key)
    print("\\n".join(result.summary))

:func:`verify_bundle` checks, in this order, and raises :class:`EvidenceError` naming the first
thing that does not verify:

1. the checkpoint's signature (against ``checkpoint_key``; without one, against the key in the
   bundle, with a warning: then it proves only that the bundle is consistent, not whose it is);
2. every journal entry: its hash is the hash of its content chained to its ``prev_hash``, and
   its inclusion proof leads from that hash to the checkpoint's tree root;
3. the contract source compiles to the contract hash; the parameters bind to the parameter
   hash;
4. every signed document: the payer's lock (naming this contract, these parameters, this
   escrow), title pledges, fundings, assignments, a cancellation, each signature over the exact
   bytes with the key of the wallet that must sign;
5. every attestation: its statement names this payment and contract, its attributes hash to
   the statement's ``payload_sha256``, its signatures verify against the oracle set recorded
   with it (or the party's wallet key) and make the contract's quorum;
6. the contract's evaluator, re-run on the recorded events at the recorded times (deadlines
   included), makes due exactly the recorded legs, and each leg's money is in a journal entry
   of the bundle; the payment's figures (held, released, refunded, state) follow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Final

from condpay.attest import canonical_payload
from condpay.checkpoints import CheckpointError, key_id, verify_checkpoint, verify_inclusion
from condpay.evidence_format import FORMAT, dumps
from condpay.journal import entry_hash
from contracts_dsl import (
    BoundParams,
    CompiledContract,
    ContractState,
    Escrow,
    Event,
    bind_params,
    compile_source,
    deadline_us,
    escrow_minor,
    evaluate,
)
from wallets import BadSignature, bls, verify
from wallets.errors import MalformedInstruction
from wallets.instructions import (
    AssignmentInstruction,
    AttestationStatement,
    CancelInstruction,
    FundInstruction,
    LockInstruction,
    PaymentPledge,
)
from wallets.money import format_money

# Between an event id and its attester in the ids the evaluator sees (as the server does:
# settlement/ledger/payments.py evaluator_event).
QUALIFIER: Final = "#"
_SPLIT: Final = re.compile(r"#\d+")
# The party name of every refund leg (the funders: financiers first, then the payer).
REFUND_PARTY: Final = "funders"
_TERMINAL: Final = {"SETTLED", "REFUNDED", "EXPIRED", "CANCELLED"}


class EvidenceError(ValueError):
    """The first thing in a bundle that does not verify; ``what`` names it (``"journal entry
    17: inclusion proof"``), the message says why."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")
        self.what = what
        self.why = why


@dataclass(slots=True)
class Verified:
    """A bundle that verified: what it proves, for people (``summary``), and ``warnings``."""

    payment_id: str
    state: str
    checkpoint_seq: int
    checkpoint_key_id: str
    entries: int
    attestations: int
    summary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(what, "not a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise EvidenceError(what, "not a hex string") from None


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvidenceError(what, "not an integer")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise EvidenceError(what, "not a string")
    return value


def _at(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "0%"
    share = Fraction(part * 100, whole)
    if share.denominator == 1:
        return f"{share.numerator}%"
    return f"{float(share):.2f}%"


def load(data: bytes) -> dict[str, Any]:
    try:
        bundle = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise EvidenceError("bundle", "not UTF-8 JSON") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise EvidenceError("bundle", f"not a {FORMAT} document")
    return bundle


# -- 1, 2: checkpoint and entries -----------------------------------------------------------------
def _checkpoint(bundle: dict[str, Any], trusted: bytes | None, result: Verified) -> dict[str, Any]:
    cp = bundle.get("checkpoint")
    if not isinstance(cp, dict):
        raise EvidenceError("checkpoint", "missing")
    public_key = _hex(cp.get("public_key"), "checkpoint: public_key")
    if trusted is None:
        result.warnings.append(
            f"checked against the checkpoint key in the bundle ({key_id(public_key)}), not one "
            "you trust: pass --checkpoint-key to know whose checkpoint it is"
        )
        trusted = public_key
    elif public_key != trusted:
        raise EvidenceError(
            "checkpoint",
            f"signed by key {key_id(public_key)}, not by the trusted key {key_id(trusted)}",
        )
    try:
        verify_checkpoint(
            trusted,
            _int(cp.get("seq"), "checkpoint: seq"),
            _hex(cp.get("head_hash"), "checkpoint: head_hash"),
            _hex(cp.get("tree_root"), "checkpoint: tree_root"),
            _int(cp.get("signed_at_us"), "checkpoint: signed_at_us"),
            _hex(cp.get("signature"), "checkpoint: signature"),
        )
    except CheckpointError as error:
        raise EvidenceError("checkpoint: signature", str(error)) from None
    if cp.get("key_id") != key_id(trusted):
        raise EvidenceError("checkpoint: key_id", "is not the key's")
    result.checkpoint_seq = cp["seq"]
    result.checkpoint_key_id = key_id(trusted)
    return cp


def _entries(bundle: dict[str, Any], cp: dict[str, Any]) -> dict[int, dict[str, Any]]:
    entries = bundle.get("entries")
    if not isinstance(entries, list) or not entries:
        raise EvidenceError("journal entries", "missing")
    root = bytes.fromhex(cp["tree_root"])
    by_seq: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise EvidenceError(f"journal entry #{i}", "not an object")
        seq = _int(entry.get("seq"), f"journal entry #{i}: seq")
        what = f"journal entry {seq}"
        postings = entry.get("postings")
        if not isinstance(postings, list) or not all(
            isinstance(p, list) and len(p) == 5 for p in postings
        ):
            raise EvidenceError(what, "postings are not [account, bucket, currency, amount, after]")
        computed = entry_hash(
            _hex(entry.get("prev_hash"), f"{what}: prev_hash"),
            seq,
            _str(entry.get("kind"), f"{what}: kind"),
            _str(entry.get("request_id"), f"{what}: request_id"),
            _str(entry.get("caller"), f"{what}: caller"),
            _int(entry.get("committed_at_us"), f"{what}: committed_at_us"),
            _str(entry.get("memo"), f"{what}: memo"),
            [tuple(p) for p in postings],
        )
        recorded = _hex(entry.get("hash"), f"{what}: hash")
        if computed != recorded:
            raise EvidenceError(f"{what}: hash", "the entry's content does not make its hash")
        proof = entry.get("proof")
        if not isinstance(proof, list):
            raise EvidenceError(f"{what}: inclusion proof", "missing")
        try:
            verify_inclusion(
                recorded,
                seq,
                cp["seq"],
                [_hex(p, f"{what}: inclusion proof") for p in proof],
                root,
            )
        except CheckpointError as error:
            raise EvidenceError(f"{what}: inclusion proof", str(error)) from None
        if seq in by_seq:
            raise EvidenceError(what, "listed twice")
        by_seq[seq] = entry
    return by_seq


# -- 3: contract and parameters --------------------------------------------------------------------
def _contract(bundle: dict[str, Any]) -> tuple[CompiledContract, BoundParams]:
    spec = bundle.get("contract")
    if not isinstance(spec, dict):
        raise EvidenceError("contract", "missing")
    compiled = compile_source(_str(spec.get("source"), "contract: source"))
    if compiled.contract is None:
        raise EvidenceError("contract", "the source does not compile")
    contract = compiled.contract
    if contract.hash != spec.get("hash"):
        raise EvidenceError("contract", "the source does not compile to the contract hash")
    if (contract.name, contract.language_version) != (
        spec.get("name"),
        spec.get("language_version"),
    ):
        raise EvidenceError("contract", "its name or language version is not the source's")
    params_spec = bundle.get("params")
    if not isinstance(params_spec, dict):
        raise EvidenceError("parameters", "missing")
    try:
        values = json.loads(_str(params_spec.get("json"), "parameters: json"))
    except ValueError:
        raise EvidenceError("parameters", "not JSON") from None
    bound = bind_params(contract, values)
    if bound.params is None:
        raise EvidenceError("parameters", "they do not bind to the contract")
    if bound.params.hash != params_spec.get("hash"):
        raise EvidenceError("parameters", "they do not make the parameter hash")
    return contract, bound.params


# -- 4, 5: documents and attestations --------------------------------------------------------------
@dataclass(slots=True)
class _Context:
    bundle: dict[str, Any]
    payment: dict[str, Any]
    contract: CompiledContract
    params: BoundParams
    wallets: dict[str, Any]
    parties: dict[str, str]  # wallet parameter -> wallet id


def _signatures(ctx: _Context, doc: dict[str, Any], what: str, required: Sequence[str]) -> None:
    """Each of ``required`` wallets signed the document's payload with its wallet's key."""
    payload = _hex(doc.get("payload"), f"{what}: payload")
    signatures = doc.get("signatures")
    if not isinstance(signatures, list):
        raise EvidenceError(f"{what}: signatures", "missing")
    by_signer: dict[str, dict[str, Any]] = {}
    for s in signatures:
        if isinstance(s, dict) and isinstance(s.get("signer"), str):
            by_signer.setdefault(s["signer"], s)
    for wallet_id in required:
        found = by_signer.get(wallet_id)
        if found is None:
            raise EvidenceError(f"{what}: signatures", f"wallet {wallet_id} did not sign")
        key = _hex(found.get("public_key"), f"{what}: key of {wallet_id}")
        known = ctx.wallets.get(wallet_id, {}).get("public_key")
        if known is None or bytes.fromhex(known) != key:
            raise EvidenceError(
                f"{what}: signature of {wallet_id}", "signed with another key than the wallet's"
            )
        try:
            verify(key, _hex(found.get("signature"), f"{what}: signature of {wallet_id}"), payload)
        except BadSignature:
            raise EvidenceError(
                f"{what}: signature of {wallet_id}", "does not verify over the document's bytes"
            ) from None


def _decode(kind: type[Any], doc: dict[str, Any], what: str) -> Any:
    try:
        return kind.from_bytes(_hex(doc.get("payload"), f"{what}: payload"))
    except MalformedInstruction as error:
        raise EvidenceError(what, f"not a canonical document: {error}") from None


def _same(what: str, field_name: str, signed: object, recorded: object) -> None:
    if signed != recorded:
        raise EvidenceError(what, f"signed {field_name} {signed!r}, the record says {recorded!r}")


def _document(ctx: _Context, doc: dict[str, Any]) -> Event | None:
    """Verify one document; the verified event for an attestation."""
    kind = doc.get("kind")
    version = doc.get("version")
    what = f"{str(kind).lower()} document (payment version {version})"
    pid = ctx.payment["payment_id"]
    if kind == "LOCK":
        lock = _decode(LockInstruction, doc, what)
        _same(what, "contract hash", lock.contract_hash, ctx.contract.hash)
        _same(what, "parameter hash", lock.params_hash, ctx.params.hash)
        _same(what, "payer", lock.payer, ctx.payment["payer_wallet_id"])
        _same(
            what,
            "escrow",
            (lock.currency, lock.amount_minor),
            (ctx.payment["currency"], ctx.payment["escrow_minor"]),
        )
        _same(what, "submitter (the platform)", lock.submitter, ctx.payment.get("platform"))
        _same(
            "payment",
            "escrow (by the contract)",
            escrow_minor(ctx.contract, ctx.params),
            ctx.payment["escrow_minor"],
        )
        _same(
            "payment",
            "deadline (by the contract)",
            deadline_us(ctx.contract, ctx.params),
            ctx.payment.get("deadline_at_us"),
        )
        _signatures(ctx, doc, what, [lock.payer])
    elif kind == "PLEDGE":
        pledge = _decode(PaymentPledge, doc, what)
        _same(what, "payment", pledge.payment_id, pid)
        _same(what, "contract hash", pledge.contract_hash, ctx.contract.hash)
        _same(what, "parameter hash", pledge.params_hash, ctx.params.hash)
        _signatures(ctx, doc, what, [pledge.holder])
    elif kind == "FUND":
        fund = _decode(FundInstruction, doc, what)
        _same(what, "payment", fund.payment_id, pid)
        _same(what, "payer", fund.payer, ctx.payment["payer_wallet_id"])
        _signatures(ctx, doc, what, [fund.financier, fund.payer])
    elif kind == "ASSIGN":
        assign = _decode(AssignmentInstruction, doc, what)
        _same(what, "payment", assign.payment_id, pid)
        _signatures(ctx, doc, what, [assign.payee, assign.financier])
    elif kind == "CANCEL":
        cancel = _decode(CancelInstruction, doc, what)
        _same(what, "payment", cancel.payment_id, pid)
        required = sorted({ctx.payment["payer_wallet_id"], *ctx.parties.values()})
        _signatures(ctx, doc, what, required)
    elif kind == "ATTESTATION":
        return _attestation(ctx, doc)
    else:
        raise EvidenceError(what, "unknown document kind")
    return None


def _attestation(ctx: _Context, doc: dict[str, Any]) -> Event:
    statement_bytes = _hex(doc.get("payload"), "attestation: statement")
    try:
        statement = AttestationStatement.from_bytes(statement_bytes)
    except MalformedInstruction as error:
        raise EvidenceError("attestation", f"not a canonical statement: {error}") from None
    what = f"attestation {statement.event_id} of {statement.oracle}"
    _same(what, "payment", statement.payment_id, ctx.payment["payment_id"])
    _same(what, "contract hash", statement.contract_hash, ctx.contract.hash)
    payload = _hex(doc.get("attributes"), f"{what}: attributes")
    if hashlib.sha256(payload).hexdigest() != statement.payload_sha256:
        raise EvidenceError(f"{what}: attributes", "do not hash to the statement's payload_sha256")
    try:
        attributes = json.loads(payload.decode("utf-8"))
        if not isinstance(attributes, dict) or canonical_payload(attributes) != payload:
            raise ValueError(payload)
    except ValueError:
        raise EvidenceError(f"{what}: attributes", "not canonical JSON of attributes") from None
    oracle_set = doc.get("oracle_set")
    if not isinstance(oracle_set, dict):
        raise EvidenceError(f"{what}: oracle set", "missing")
    _same(what, "oracle set version", statement.oracle_set_version, oracle_set.get("version"))
    ed25519 = doc.get("ed25519") or []
    aggregate = doc.get("bls")
    if not isinstance(ed25519, list):
        raise EvidenceError(f"{what}: signatures", "not a list")
    spec = ctx.contract.oracle(statement.oracle)
    counted: set[str] = set()
    if spec is None:  # a party of the contract attests with its wallet key
        wallet_id = ctx.parties.get(statement.oracle)
        if wallet_id is None:
            raise EvidenceError(what, "the contract names no such oracle or party")
        known = ctx.wallets.get(wallet_id, {}).get("public_key")
        if known is None or aggregate is not None:
            raise EvidenceError(f"{what}: signatures", f"only wallet {wallet_id} may sign")
        _same(what, "party", doc.get("party"), {"wallet_id": wallet_id, "public_key": known})
        _same(
            what,
            "oracle set",
            [oracle_set.get(k) for k in ("sources", "threshold", "keys")],
            [[], 1, []],
        )
        for s in ed25519:
            if not isinstance(s, dict) or s.get("signer") != wallet_id:
                raise EvidenceError(f"{what}: signatures", f"only wallet {wallet_id} may sign")
            _verify_ed25519(bytes.fromhex(known), s, statement_bytes, f"{what}: signature")
            counted.add(wallet_id)
        threshold, keys_used = 1, len(counted)
    else:
        _same(what, "party", doc.get("party"), None)
        _same(what, "sources", sorted(spec.sources), oracle_set.get("sources"))
        _same(what, "quorum", spec.threshold, oracle_set.get("threshold"))
        keys: dict[str, dict[str, Any]] = {}
        for k in oracle_set.get("keys") or []:
            if isinstance(k, dict) and k.get("oracle_id") in spec.sources:
                keys[k["oracle_id"]] = k
        used: set[bytes] = set()

        def key_of(signer: object, scheme: str) -> bytes:
            k = keys.get(signer) if isinstance(signer, str) else None
            if k is None or k.get("scheme") != scheme or k.get("revoked"):
                raise EvidenceError(
                    f"{what}: signature of {signer}",
                    f"not a {scheme} source of {statement.oracle} in oracle set "
                    f"{oracle_set.get('version')}",
                )
            return _hex(k.get("public_key"), f"{what}: key of {signer}")

        for s in ed25519:
            if not isinstance(s, dict):
                raise EvidenceError(f"{what}: signatures", "not an object")
            key = key_of(s.get("signer"), "ED25519")
            _verify_ed25519(key, s, statement_bytes, f"{what}: signature of {s.get('signer')}")
            counted.add(s["signer"])
            used.add(key)
        if aggregate is not None:
            signers = aggregate.get("signers") if isinstance(aggregate, dict) else None
            if not isinstance(signers, list) or not signers:
                raise EvidenceError(f"{what}: BLS aggregate", "no signers")
            public_keys = [key_of(s, "BLS12_381") for s in signers]
            signature = _hex(aggregate.get("signature"), f"{what}: BLS aggregate")
            if not bls.backend().fast_aggregate_verify(public_keys, statement_bytes, signature):
                raise EvidenceError(
                    f"{what}: BLS aggregate signature",
                    f"does not verify for {', '.join(map(str, signers))}",
                )
            counted.update(signers)
            used.update(public_keys)
        threshold, keys_used = spec.threshold, len(used)
    if min(len(counted), keys_used) < threshold:
        raise EvidenceError(
            f"{what}: quorum", f"{threshold} distinct signers needed, {len(counted)} signed"
        )
    return Event(
        event_id=statement.event_id,
        event_type=statement.event_type,
        oracle=statement.oracle,
        attributes=attributes,
        observed_at_us=statement.observed_at_us,
    )


def _verify_ed25519(key: bytes, s: dict[str, Any], message: bytes, what: str) -> None:
    try:
        verify(key, _hex(s.get("signature"), what), message)
    except BadSignature:
        raise EvidenceError(what, "does not verify over the statement") from None


# -- 6: the evaluator, the legs, the money ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Part:
    """A leg, or one part of a leg paid to several wallets, as the server must have recorded it:
    ``paid_to`` None for a bridge payout (paid to its settlement)."""

    leg_id: str
    clause: str
    kind: str
    party: str
    wallet: str
    paid_to: str | None
    amount_minor: int
    reason: str
    target_currency: str | None = None


@dataclass(slots=True)
class _Step:
    version: int
    at_us: int
    cause: str  # "attestation" | "deadline" | "cancel"
    events: list[Event]
    parts: list[_Part]


@dataclass(slots=True)
class _Replay:
    steps: list[_Step] = field(default_factory=list)
    kinds: dict[int, str] = field(default_factory=dict)  # version -> the change's kind
    held: int = 0
    state: str = "LOCKED"
    terminal_reason: str = ""
    financing: list[list[Any]] = field(default_factory=list)  # [wallet, principal, refunded]
    assignments: list[list[Any]] = field(default_factory=list)  # [payee, financier, assigned, in]


def _split(leg_id: str, shares: list[tuple[str, int]]) -> list[tuple[str, str, int]]:
    """(leg id, recipient, amount) of each share: ``<leg>#<n>`` when there are several."""
    if len(shares) == 1:
        return [(leg_id, shares[0][0], shares[0][1])]
    return [(f"{leg_id}#{i}", to, amount) for i, (to, amount) in enumerate(shares)]


def _replay(
    ctx: _Context, changes: list[dict[str, Any]], events_by_version: dict[int, Event]
) -> _Replay:
    """What the server must have done, change by change (settlement/ledger/payments.py): the
    contract's evaluator on the recorded events at the recorded times, the legs it makes due
    split as the server splits them (assignees first for a payment, financiers first for a
    refund), the payment's state."""
    payment = ctx.payment
    payer, currency = payment["payer_wallet_id"], payment["currency"]
    documents = {d["version"]: d for d in ctx.bundle["documents"] if d["kind"] != "PLEDGE"}
    run = _Replay(held=payment["escrow_minor"])
    state = ContractState.initial(ctx.contract)
    events: list[Event] = []
    pending: list[Event] = []
    refunded_ever = False

    def refund(leg_id: str, clause: str, amount: int, reason: str) -> list[_Part]:
        shares, left = [], amount
        for financing in run.financing:
            take = min(left, financing[1] - financing[2])
            if take > 0:
                financing[2] += take
                shares.append((financing[0], take))
                left -= take
        if left:
            shares.append((payer, left))
        return [
            _Part(i, clause, "refund", REFUND_PARTY, payer, to, a, reason)
            for i, to, a in _split(leg_id, shares)
        ]

    def pay(
        leg_id: str, clause: str, kind: str, party: str, wallet: str, amount: int, reason: str
    ) -> list[_Part]:
        shares, left = [], amount
        for assignment in run.assignments:
            if assignment[0] != wallet or left == 0:
                continue
            take = min(left, assignment[2] - assignment[3])
            if take > 0:
                assignment[3] += take
                shares.append((assignment[1], take))
                left -= take
        if left:
            shares.append((wallet, left))
        return [
            _Part(i, clause, kind, party, wallet, to, a, reason)
            for i, to, a in _split(leg_id, shares)
        ]

    for change in changes:
        version, at_us = change["version"], change["at_us"]
        doc = documents.get(version)
        kind = None if doc is None else doc["kind"]
        if kind == "LOCK":
            run.kinds[version] = "locked"
            continue
        if kind == "FUND":
            f = FundInstruction.from_bytes(bytes.fromhex(doc["payload"]))  # type: ignore[index]
            run.financing.append([f.financier, f.amount_minor, 0])
            run.kinds[version] = "funded"
            continue
        if kind == "ASSIGN":
            a = AssignmentInstruction.from_bytes(bytes.fromhex(doc["payload"]))  # type: ignore[index]
            run.assignments.append([a.payee, a.financier, a.assigned_minor, 0])
            run.kinds[version] = "assigned"
            continue
        if run.state in _TERMINAL:
            raise EvidenceError(f"change {version}", f"the payment was already {run.state}")
        parts: list[_Part] = []
        if kind == "CANCEL":
            if run.held:
                parts = refund("cancel/refund", "cancel", run.held, "cancelled by all parties")
            run.held = 0
            run.steps.append(_Step(version, at_us, "cancel", pending, parts))
            pending = []
            run.state, run.terminal_reason = "CANCELLED", "cancelled"
            run.kinds[version] = "cancelled"
            continue
        cause = "deadline"
        if kind == "ATTESTATION":
            event = events_by_version[version]
            events.append(
                Event(
                    event_id=f"{event.event_id}{QUALIFIER}{event.oracle}",
                    event_type=event.event_type,
                    oracle=event.oracle,
                    attributes=event.attributes,
                    observed_at_us=event.observed_at_us,
                )
            )
            pending.append(event)
            cause = "attestation"
        elif kind is not None:
            raise EvidenceError(f"change {version}", f"a {kind} document changes no payment")
        evaluation = evaluate(
            ctx.contract,
            ctx.params,
            Escrow(currency, payment["escrow_minor"], run.held),
            list(events),
            at_us,
            state,
        )
        if not evaluation.ok:
            raise EvidenceError(
                f"contract evaluation at payment version {version}",
                f"the evaluator refused the recorded inputs: {evaluation.rejected}",
            )
        for leg in evaluation.legs:
            if leg.kind == "deliver_title":
                parts.append(
                    _Part(
                        leg.leg_id,
                        leg.clause,
                        leg.kind,
                        leg.party,
                        leg.wallet,
                        leg.wallet,
                        0,
                        f"{leg.reason}; title {leg.title}",
                    )
                )
            elif leg.amount_minor == 0:
                continue
            elif leg.target_currency:
                parts.append(
                    _Part(
                        leg.leg_id,
                        leg.clause,
                        leg.kind,
                        leg.party,
                        leg.wallet,
                        None,
                        leg.amount_minor,
                        f"{leg.reason}; paid in {leg.target_currency} by settlement ",
                        leg.target_currency,
                    )
                )
                run.held -= leg.amount_minor
            elif leg.kind == "refund":
                parts += refund(leg.leg_id, leg.clause, leg.amount_minor, leg.reason)
                run.held -= leg.amount_minor
                refunded_ever = True
            else:
                parts += pay(
                    leg.leg_id,
                    leg.clause,
                    leg.kind,
                    leg.party,
                    leg.wallet,
                    leg.amount_minor,
                    leg.reason,
                )
                run.held -= leg.amount_minor
        state = evaluation.state
        if state.terminal and run.held > 0:
            parts += refund(
                "close/remainder", "close", run.held, f"contract done ({state.terminal_reason})"
            )
            run.held = 0
            refunded_ever = True
        if state.terminal:
            run.terminal_reason = state.terminal_reason or ""
            if state.deadline_fired:
                run.state = "EXPIRED"
            elif refunded_ever:
                run.state = "REFUNDED"
            else:
                run.state = "SETTLED"
            run.kinds[version] = run.state.lower()
        elif parts:
            run.state = "PARTIALLY_RELEASED"
        run.kinds.setdefault(version, "released" if parts else cause.replace("ation", "ed"))
        run.steps.append(_Step(version, at_us, cause, pending if parts else [], parts))
        if parts:
            pending = []
    return run


def _postings(entry: dict[str, Any]) -> list[list[Any]]:
    return [list(p[:4]) for p in entry["postings"]]


def _legs(ctx: _Context, run: _Replay, entries: dict[int, dict[str, Any]]) -> None:
    """The recorded legs are exactly the parts the replay made due, in order, and each one's
    money is in its journal entry, committed at its change's time."""
    recorded = ctx.bundle["legs"]
    payer, currency = ctx.payment["payer_wallet_id"], ctx.payment["currency"]
    settlements = {s["settlement_id"]: s for s in ctx.bundle["settlements"]}
    paid_out: set[str] = set()
    i = 0
    for step in run.steps:
        for part in step.parts:
            if i >= len(recorded):
                raise EvidenceError(
                    f"leg {part.leg_id}",
                    f"the contract makes it due at {_at(step.at_us)}; it is not recorded",
                )
            leg = recorded[i]
            i += 1
            what = f"leg {leg['leg_id']}"
            _same(what, "id (the contract's next leg)", leg["leg_id"], part.leg_id)
            for name, want in (
                ("clause", part.clause),
                ("kind", part.kind),
                ("party", part.party),
                ("wallet_id", part.wallet),
                ("currency", currency),
            ):
                _same(what, name, leg[name], want)
            if leg["amount_minor"] != part.amount_minor:
                raise EvidenceError(
                    f"{what}: amount",
                    f"the contract makes {part.amount_minor} due, the record says "
                    f"{leg['amount_minor']}",
                )
            if part.paid_to is None:  # a bridge payout
                settlement = settlements.get(leg["paid_to_wallet_id"])
                if settlement is None:
                    raise EvidenceError(what, "its payout's settlement is not in the bundle")
                _same(what, "reason", leg["reason"], part.reason + settlement["settlement_id"])
                _same(what, "entry", leg["entry_seq"], 0)
                want = [
                    leg["leg_id"],
                    payer,
                    currency,
                    part.amount_minor,
                    part.wallet,
                    part.target_currency,
                ]
                got = [
                    settlement[k]
                    for k in (
                        "origin_leg_id",
                        "payer_wallet_id",
                        "pay_currency",
                        "pay_minor",
                        "payee_wallet_id",
                        "receive_currency",
                    )
                ]
                _same(what, "payout", got, want)
                _payout_entries(what, settlement, entries, step.at_us)
                paid_out.add(settlement["settlement_id"])
                continue
            _same(what, "reason", leg["reason"], part.reason)
            _same(what, "recipient", leg["paid_to_wallet_id"], part.paid_to)
            if part.kind == "deliver_title":
                _same(what, "entry", leg["entry_seq"], 0)
                continue
            entry = entries.get(leg["entry_seq"])
            if entry is None:
                raise EvidenceError(what, f"its journal entry {leg['entry_seq']} is not in it")
            postings = _postings(entry)
            if [part.paid_to, "AVAILABLE", currency, part.amount_minor] not in postings or not any(
                p[0] == payer and p[1] == "HELD" and p[2] == currency and p[3] < 0 for p in postings
            ):
                raise EvidenceError(what, f"journal entry {entry['seq']} does not move it")
            if entry["committed_at_us"] != step.at_us:
                raise EvidenceError(
                    f"change {step.version}: at_us",
                    f"its journal entry {entry['seq']} was committed at another time",
                )
    if i < len(recorded):
        raise EvidenceError(
            f"leg {recorded[i]['leg_id']}", "recorded, but the contract never made it due"
        )
    extra = sorted(set(settlements) - paid_out)
    if extra:
        raise EvidenceError(f"settlement {extra[0]}", "no leg of the payment pays through it")


def _payout_entries(
    what: str, settlement: dict[str, Any], entries: dict[int, dict[str, Any]], at_us: int
) -> None:
    """A payout settled (COMMITTED, FINAL) has one commit entry: the payer's HELD out in the
    escrow's currency, the payee's AVAILABLE in in the other; an open or aborted one none."""
    seqs = settlement["entry_seqs"]
    settled = settlement["state"] in ("COMMITTED", "FINAL")
    if len(seqs) != (1 if settled else 0):
        raise EvidenceError(what, f"a {settlement['state']} payout with entries {seqs}")
    for seq in seqs:
        entry = entries.get(seq)
        if entry is None:
            raise EvidenceError(what, f"its payout's journal entry {seq} is not in the bundle")
        postings = _postings(entry)
        out = [
            settlement["payer_wallet_id"],
            "HELD",
            settlement["pay_currency"],
            -settlement["pay_minor"],
        ]
        paid = [
            settlement["payee_wallet_id"],
            "AVAILABLE",
            settlement["receive_currency"],
            settlement["receive_minor"],
        ]
        if out not in postings or paid not in postings:
            raise EvidenceError(what, f"journal entry {seq} does not pay it out")
        if entry["committed_at_us"] < at_us:
            raise EvidenceError(what, f"journal entry {seq} is older than the leg")


def _figures(ctx: _Context, run: _Replay, changes: list[dict[str, Any]]) -> None:
    payment = ctx.payment
    parts = [p for s in run.steps for p in s.parts]
    refunded = sum(p.amount_minor for p in parts if p.kind == "refund")
    released = sum(p.amount_minor for p in parts if p.kind != "refund")
    _same("payment", "held", payment["held_minor"], run.held)
    _same("payment", "released", payment["released_minor"], released)
    _same("payment", "refunded", payment["refunded_minor"], refunded)
    _same("payment", "state", payment["state"], run.state)
    _same("payment", "terminal_reason", payment["terminal_reason"], run.terminal_reason)
    _same("payment", "version", payment["version"], changes[-1]["version"])
    _same("payment", "created_at_us", payment["created_at_us"], changes[0]["at_us"])
    _same("payment", "updated_at_us", payment["updated_at_us"], changes[-1]["at_us"])
    for change in changes:
        _same(f"change {change['version']}", "kind", change["kind"], run.kinds[change["version"]])
    submitters = {
        d["version"]: _decode(
            FundInstruction if d["kind"] == "FUND" else AssignmentInstruction, d, "document"
        ).submitter
        for d in ctx.bundle["documents"]
        if d["kind"] in ("FUND", "ASSIGN")
    }
    funded = [submitters[d["version"]] for d in ctx.bundle["documents"] if d["kind"] == "FUND"]
    assigned = [submitters[d["version"]] for d in ctx.bundle["documents"] if d["kind"] == "ASSIGN"]
    for recorded, (_wallet, _principal, back), by in zip(
        ctx.bundle["financing"], run.financing, funded, strict=True
    ):
        _same("financing", "refunded", recorded["refunded_minor"], back)
        _same("financing", "funded_by", recorded["funded_by"], by)
    for recorded, (_payee, _financier, _assigned, collected), by in zip(
        ctx.bundle["assignments"], run.assignments, assigned, strict=True
    ):
        _same("assignments", "collected", recorded["collected_minor"], collected)
        _same("assignments", "assigned_by", recorded["assigned_by"], by)


def _entries_accounted(ctx: _Context, entries: dict[int, dict[str, Any]]) -> None:
    named = {d.get("entry_seq") for d in ctx.bundle.get("documents") or []}
    named |= {g.get("entry_seq") for g in ctx.bundle.get("legs") or []}
    for s in ctx.bundle.get("settlements") or []:
        named |= set(s.get("entry_seqs") or [])
    for seq in entries:
        if seq not in named:
            raise EvidenceError(
                f"journal entry {seq}", "no document or leg of the payment names it"
            )
    lock = next(d for d in ctx.bundle["documents"] if d["kind"] == "LOCK")
    entry = entries.get(lock.get("entry_seq"))
    payer, currency, escrow = (
        ctx.payment["payer_wallet_id"],
        ctx.payment["currency"],
        ctx.payment["escrow_minor"],
    )
    if entry is None or [
        [payer, "AVAILABLE", currency, -escrow],
        [payer, "HELD", currency, escrow],
    ] != [list(p[:4]) for p in entry["postings"]]:
        raise EvidenceError("lock document", "its journal entry does not hold the escrow")
    funded, assigned = [], []
    for doc in ctx.bundle.get("documents") or []:
        if doc.get("kind") == "FUND":
            f = FundInstruction.from_bytes(bytes.fromhex(doc["payload"]))
            funded.append([f.financier, f.amount_minor, f.fee_minor, f.due_at_us])
        if doc.get("kind") == "ASSIGN":
            a = AssignmentInstruction.from_bytes(bytes.fromhex(doc["payload"]))
            assigned.append([a.payee, a.financier, a.assigned_minor, a.advance_minor])
    recorded_funding = [
        [f.get(k) for k in ("financier_wallet_id", "principal_minor", "fee_minor", "due_at_us")]
        for f in ctx.bundle.get("financing") or []
    ]
    if recorded_funding != funded:
        raise EvidenceError("financing", "is not what the signed fundings say")
    recorded_assigned = [
        [
            a.get(k)
            for k in ("payee_wallet_id", "financier_wallet_id", "assigned_minor", "advance_minor")
        ]
        for a in ctx.bundle.get("assignments") or []
    ]
    if recorded_assigned != assigned:
        raise EvidenceError("assignments", "are not what the signed assignments say")
    for doc in ctx.bundle.get("documents") or []:
        if doc.get("kind") in ("FUND", "ASSIGN"):
            entry = entries.get(doc.get("entry_seq"))
            decoded = (
                FundInstruction if doc["kind"] == "FUND" else AssignmentInstruction
            ).from_bytes(bytes.fromhex(doc["payload"]))
            amount = (
                decoded.amount_minor
                if isinstance(decoded, FundInstruction)
                else decoded.advance_minor
            )
            target = decoded.payer if isinstance(decoded, FundInstruction) else decoded.payee
            if entry is None or [target, "AVAILABLE", decoded.currency, amount] not in [
                list(p[:4]) for p in entry["postings"]
            ]:
                raise EvidenceError(
                    f"{doc['kind'].lower()} document (payment version {doc.get('version')})",
                    "its journal entry does not move the signed amount",
                )


def _summary(ctx: _Context, run: _Replay, result: Verified) -> None:
    payment = ctx.payment
    currency, escrow = payment["currency"], payment["escrow_minor"]
    lines = [
        f"payment {payment['payment_id']} ({ctx.contract.name}): {payment['state']}; "
        f"{format_money(escrow, currency)} locked by {payment['payer_wallet_id']} at "
        f"{_at(payment['created_at_us'])}"
    ]
    released_so_far = 0
    for step in run.steps:
        amount = sum(p.amount_minor for p in step.parts)
        if step.cause == "cancel":
            lines.append(
                f"cancelled by every party at {_at(step.at_us)}: refunded "
                f"{format_money(amount, currency)}"
            )
            continue
        if not step.parts:
            if step.cause == "deadline":
                lines.append(f"deadline passed at {_at(step.at_us)}: nothing due")
            continue
        names = []
        for event in step.events:
            spec = ctx.contract.oracle(event.oracle)
            names.append(
                event.oracle
                if spec is None
                else f"{event.oracle} ({spec.threshold} of {len(spec.sources)})"
            )
        refund = all(p.kind == "refund" for p in step.parts)
        rest = not refund and released_so_far > 0 and released_so_far + amount == escrow
        trigger = f"on {' + '.join(names)}" if names else "at the deadline"
        line = (
            f"{'refunded' if refund else 'released'} {'rest' if rest else _percent(amount, escrow)}"
            f" ({format_money(amount, currency)}) {trigger} at {_at(step.at_us)}"
        )
        payouts = sorted({str(p.target_currency) for p in step.parts if p.target_currency})
        if payouts:
            line += f", paid out in {', '.join(payouts)} through the bridge"
        titles = [p for p in step.parts if p.kind == "deliver_title"]
        if titles:
            line += f", {len(titles)} title(s) delivered"
        lines.append(line)
        if not refund:
            released_so_far += amount
    lines.append(
        f"{result.entries} journal entries proved against checkpoint {result.checkpoint_seq} "
        f"(key {result.checkpoint_key_id}); {result.attestations} attestations verified; the "
        "contract's evaluator makes exactly the recorded legs due"
    )
    result.summary = lines


# -- the shape of a bundle: every object has exactly its fields ----------------------------------
_SIGNED_KINDS: Final = ("LOCK", "PLEDGE", "FUND", "ASSIGN", "CANCEL")
_DOCUMENT: Final = {"version", "idx", "kind", "payload", "entry_seq"}
_SHAPES: Final[dict[str, set[str]]] = {
    "bundle": {
        "format",
        "payment",
        "contract",
        "params",
        "wallets",
        "changes",
        "documents",
        "financing",
        "assignments",
        "legs",
        "settlements",
        "entries",
        "checkpoint",
    },
    "payment": {
        "payment_id",
        "platform",
        "payer_wallet_id",
        "currency",
        "escrow_minor",
        "held_minor",
        "released_minor",
        "refunded_minor",
        "state",
        "terminal_reason",
        "deadline_at_us",
        "created_at_us",
        "updated_at_us",
        "version",
    },
    "contract": {"hash", "name", "language_version", "source"},
    "params": {"json", "hash"},
    "checkpoint": {
        "seq",
        "head_hash",
        "tree_root",
        "signed_at_us",
        "public_key",
        "key_id",
        "signature",
    },
    "entries": {
        "seq",
        "kind",
        "request_id",
        "caller",
        "committed_at_us",
        "memo",
        "postings",
        "prev_hash",
        "hash",
        "proof",
    },
    "changes": {"version", "kind", "at_us"},
    "signed document": _DOCUMENT | {"signatures"},
    "attestation document": _DOCUMENT | {"attributes", "ed25519", "bls", "oracle_set", "party"},
    "signatures": {"signer", "public_key", "signature"},
    "ed25519": {"signer", "signature"},
    "bls": {"signers", "signature"},
    "oracle_set": {"version", "sources", "threshold", "keys"},
    "keys": {"oracle_id", "scheme", "public_key", "key_version", "revoked"},
    "party": {"wallet_id", "public_key"},
    "legs": {
        "leg_id",
        "clause",
        "kind",
        "party",
        "wallet_id",
        "paid_to_wallet_id",
        "amount_minor",
        "currency",
        "reason",
        "entry_seq",
    },
    "financing": {
        "financier_wallet_id",
        "principal_minor",
        "fee_minor",
        "due_at_us",
        "refunded_minor",
        "funded_by",
    },
    "assignments": {
        "payee_wallet_id",
        "financier_wallet_id",
        "assigned_minor",
        "advance_minor",
        "collected_minor",
        "assigned_by",
    },
    "settlements": {
        "settlement_id",
        "origin_leg_id",
        "state",
        "payer_wallet_id",
        "pay_currency",
        "pay_minor",
        "payee_wallet_id",
        "receive_currency",
        "receive_minor",
        "entry_seqs",
    },
    "wallets": {"public_key", "institution_id"},
}
_INTEGERS: Final = {
    "escrow_minor",
    "held_minor",
    "released_minor",
    "refunded_minor",
    "created_at_us",
    "updated_at_us",
    "version",
    "language_version",
    "seq",
    "signed_at_us",
    "committed_at_us",
    "at_us",
    "idx",
    "entry_seq",
    "threshold",
    "key_version",
    "amount_minor",
    "principal_minor",
    "fee_minor",
    "due_at_us",
    "assigned_minor",
    "advance_minor",
    "collected_minor",
    "pay_minor",
    "receive_minor",
}


def _object(value: object, shape: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EvidenceError(what, "not an object")
    want = _SHAPES[shape]
    if set(value) != want:
        odd = sorted(set(value) ^ want)
        raise EvidenceError(what, f"its fields are not those of the format (see {odd})")
    for name in want & _INTEGERS:
        _int(value[name], f"{what}: {name}")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise EvidenceError(what, "not a list")
    return value


def _shape(bundle: dict[str, Any]) -> None:
    """Every object of the bundle has exactly the fields of the format, integers where
    integers belong: a renamed or a missing field is refused before anything is read."""
    _object(bundle, "bundle", "bundle")
    payment = _object(bundle["payment"], "payment", "payment")
    if payment["deadline_at_us"] is not None:
        _int(payment["deadline_at_us"], "payment: deadline_at_us")
    _object(bundle["contract"], "contract", "contract")
    _object(bundle["params"], "params", "parameters")
    _object(bundle["checkpoint"], "checkpoint", "checkpoint")
    for name, shape in (
        ("entries", "entries"),
        ("changes", "changes"),
        ("legs", "legs"),
        ("financing", "financing"),
        ("assignments", "assignments"),
        ("settlements", "settlements"),
    ):
        for i, item in enumerate(_list(bundle[name], name)):
            _object(item, shape, f"{name}[{i}]")
    wallets = bundle["wallets"]
    if not isinstance(wallets, dict):
        raise EvidenceError("wallets", "not an object")
    for wallet_id, wallet in wallets.items():
        _object(wallet, "wallets", f"wallet {wallet_id}")
    for i, doc in enumerate(_list(bundle["documents"], "documents")):
        what = f"documents[{i}]"
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind in _SIGNED_KINDS:
            _object(doc, "signed document", what)
            for s in _list(doc["signatures"], f"{what}: signatures"):
                _object(s, "signatures", f"{what}: signature")
        elif kind == "ATTESTATION":
            _object(doc, "attestation document", what)
            for s in _list(doc["ed25519"], f"{what}: ed25519"):
                _object(s, "ed25519", f"{what}: signature")
            if doc["bls"] is not None:
                _object(doc["bls"], "bls", f"{what}: bls")
            oracle_set = _object(doc["oracle_set"], "oracle_set", f"{what}: oracle_set")
            for k in _list(oracle_set["keys"], f"{what}: oracle_set keys"):
                _object(k, "keys", f"{what}: oracle key")
            if doc["party"] is not None:
                _object(doc["party"], "party", f"{what}: party")
        else:
            raise EvidenceError(what, "unknown document kind")
    for settlement in bundle["settlements"]:
        for seq in _list(settlement["entry_seqs"], "settlement: entry_seqs"):
            _int(seq, "settlement: entry_seqs")


def _changes(ctx: _Context, entries: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The changes, versions 1, 2, ...; the documents each on the change that made it (a main
    document, idx 0, per change; pledges, idx 1.., with the lock), and the entry a lock, a
    funding or an advance posted committed at its change's time."""
    changes = ctx.bundle["changes"]
    if [c["version"] for c in changes] != list(range(1, len(changes) + 1)) or not changes:
        raise EvidenceError("changes", "not the payment's versions 1, 2, ... in order")
    at = {c["version"]: c["at_us"] for c in changes}
    main: set[int] = set()
    for doc in ctx.bundle["documents"]:
        what = f"{doc['kind'].lower()} document (payment version {doc['version']})"
        if doc["version"] not in at:
            raise EvidenceError(what, "no change of the payment has its version")
        if doc["kind"] == "PLEDGE":
            if doc["version"] != 1 or doc["idx"] < 1 or doc["entry_seq"] != 0:
                raise EvidenceError(what, "a title pledge comes with the lock")
            continue
        if doc["idx"] != 0 or doc["version"] in main:
            raise EvidenceError(what, "a second document for one change")
        main.add(doc["version"])
        posts = doc["kind"] in ("LOCK", "FUND", "ASSIGN")
        if (doc["entry_seq"] != 0) != posts:
            raise EvidenceError(what, f"entry {doc['entry_seq']} is not the change's own")
        if posts:
            entry = entries.get(doc["entry_seq"])
            if entry is None:
                raise EvidenceError(what, f"its journal entry {doc['entry_seq']} is not in it")
            if entry["committed_at_us"] != at[doc["version"]]:
                raise EvidenceError(
                    f"change {doc['version']}: at_us",
                    f"its journal entry {entry['seq']} was committed at another time",
                )
    if (
        changes[0]["version"] not in main
        or next(d["kind"] for d in ctx.bundle["documents"] if d["version"] == 1 and d["idx"] == 0)
        != "LOCK"
    ):
        raise EvidenceError("lock document", "missing: the payer's signed lock is not recorded")
    return list(changes)


def _parties(ctx: _Context) -> None:
    """``wallets`` lists exactly the payment's parties: the payer, the contract's wallet
    parameters, the financiers of its fundings, the payees and financiers of its assignments."""
    parties = {ctx.payment["payer_wallet_id"], *ctx.parties.values()}
    for doc in ctx.bundle["documents"]:
        if doc["kind"] == "FUND":
            parties.add(FundInstruction.from_bytes(bytes.fromhex(doc["payload"])).financier)
        elif doc["kind"] == "ASSIGN":
            a = AssignmentInstruction.from_bytes(bytes.fromhex(doc["payload"]))
            parties.update((a.payee, a.financier))
    if set(ctx.wallets) != parties:
        raise EvidenceError("wallets", f"not the payment's parties {sorted(parties)}")


def verify_bundle(data: bytes, checkpoint_key: bytes | None = None) -> Verified:
    """Verify a bundle offline (the module docstring lists the checks); EvidenceError names the
    first thing that does not verify."""
    bundle = load(data)
    _shape(bundle)
    payment = bundle["payment"]
    for name in ("payment_id", "platform", "payer_wallet_id", "currency", "state"):
        _str(payment[name], f"payment: {name}")
    result = Verified(payment["payment_id"], payment["state"], 0, "", 0, 0)
    cp = _checkpoint(bundle, checkpoint_key, result)
    entries = _entries(bundle, cp)
    result.entries = len(entries)
    contract, params = _contract(bundle)
    ctx = _Context(
        bundle,
        payment,
        contract,
        params,
        bundle["wallets"],
        {p.name: params.wallet(p.name) for p in contract.params if p.kind == "wallet"},
    )
    events: dict[int, Event] = {}
    for doc in bundle["documents"]:
        event = _document(ctx, doc)
        if event is not None:
            events[doc["version"]] = event
    result.attestations = len(events)
    _parties(ctx)
    changes = _changes(ctx, entries)
    _entries_accounted(ctx, entries)
    run = _replay(ctx, changes, events)
    _legs(ctx, run, entries)
    _figures(ctx, run, changes)
    _summary(ctx, run, result)
    return result


__all__ = ["FORMAT", "EvidenceError", "Verified", "dumps", "load", "verify_bundle"]
