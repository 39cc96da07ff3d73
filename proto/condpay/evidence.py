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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Final

from condpay.attest import canonical_payload
from condpay.checkpoints import CheckpointError, key_id, verify_checkpoint, verify_inclusion
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

FORMAT: Final = "condpay.evidence.v1"
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


def dumps(bundle: Mapping[str, Any]) -> bytes:
    """The bundle's bytes as the server writes them: sorted keys, one space of indent."""
    return json.dumps(bundle, sort_keys=True, indent=1, ensure_ascii=False).encode()


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
        if known is not None and bytes.fromhex(known) != key:
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
        for s in ed25519:
            if not isinstance(s, dict) or s.get("signer") != wallet_id:
                raise EvidenceError(f"{what}: signatures", f"only wallet {wallet_id} may sign")
            _verify_ed25519(bytes.fromhex(known), s, statement_bytes, f"{what}: signature")
            counted.add(wallet_id)
        threshold, keys_used = 1, len(counted)
    else:
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
class _Due:
    leg_id: str
    clause: str
    kind: str
    party: str
    wallet: str
    amount_minor: int
    target_currency: str | None = None


@dataclass(slots=True)
class _Step:
    at_us: int
    cause: str  # "attestation" | "deadline" | "cancel"
    events: list[Event]
    due: list[_Due]


def _replay(
    ctx: _Context, changes: list[dict[str, Any]], events_by_version: dict[int, Event]
) -> tuple[list[_Step], int, ContractState]:
    payment = ctx.payment
    documents = {d.get("version"): d.get("kind") for d in ctx.bundle.get("documents") or []}
    state = ContractState.initial(ctx.contract)
    held = payment["escrow_minor"]
    events: list[Event] = []
    steps: list[_Step] = []
    pending: list[Event] = []
    payer = payment["payer_wallet_id"]
    for change in changes:
        version, at_us = change["version"], change["at_us"]
        kind = documents.get(version)
        if kind in ("LOCK", "FUND", "ASSIGN"):
            continue
        due: list[_Due] = []
        if kind == "CANCEL":
            if held:
                due.append(_Due("cancel/refund", "cancel", "refund", REFUND_PARTY, payer, held))
            held = 0
            steps.append(_Step(at_us, "cancel", pending, due))
            pending = []
            continue
        cause = "deadline"
        if kind == "ATTESTATION":
            event = events_by_version[version]
            qualified = Event(
                event_id=f"{event.event_id}{QUALIFIER}{event.oracle}",
                event_type=event.event_type,
                oracle=event.oracle,
                attributes=event.attributes,
                observed_at_us=event.observed_at_us,
            )
            events.append(qualified)
            pending.append(event)
            cause = "attestation"
        evaluation = evaluate(
            ctx.contract,
            ctx.params,
            Escrow(payment["currency"], payment["escrow_minor"], held),
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
                due.append(_Due(leg.leg_id, leg.clause, leg.kind, leg.party, leg.wallet, 0))
            elif leg.amount_minor == 0:
                continue
            else:
                refund = leg.kind == "refund"
                due.append(
                    _Due(
                        leg.leg_id,
                        leg.clause,
                        leg.kind,
                        REFUND_PARTY if refund else leg.party,
                        payer if refund else leg.wallet,
                        leg.amount_minor,
                        leg.target_currency,
                    )
                )
                held -= leg.amount_minor
        state = evaluation.state
        if state.terminal and held > 0:
            due.append(_Due("close/remainder", "close", "refund", REFUND_PARTY, payer, held))
            held = 0
        if due or cause == "deadline":
            steps.append(_Step(at_us, cause, pending, due))
            pending = []
    return steps, held, state


def _money_moved(ctx: _Context, entries: dict[int, dict[str, Any]], leg: dict[str, Any]) -> None:
    """The leg's money is in a journal entry of the bundle: the payer's HELD posting out and the
    recipient's AVAILABLE posting in (a payout: the settlement's commit entry)."""
    what = f"leg {leg['leg_id']}"
    amount, currency = leg["amount_minor"], leg["currency"]
    payer = ctx.payment["payer_wallet_id"]
    if leg["kind"] == "deliver_title" or amount == 0:
        return
    settlements = {s.get("settlement_id"): s for s in ctx.bundle.get("settlements") or []}
    settlement = settlements.get(leg["paid_to_wallet_id"])
    if settlement is not None:
        _same(what, "payout amount", settlement.get("pay_minor"), amount)
        for seq in settlement.get("entry_seqs") or []:
            entry = entries.get(seq)
            if entry is None:
                raise EvidenceError(what, f"its payout's journal entry {seq} is not in the bundle")
            if [payer, "HELD", currency, -amount] not in [list(p[:4]) for p in entry["postings"]]:
                raise EvidenceError(what, f"journal entry {seq} does not pay it out")
        return
    entry = entries.get(leg.get("entry_seq", 0))
    if entry is None:
        raise EvidenceError(what, f"its journal entry {leg.get('entry_seq')} is not in the bundle")
    postings = [list(p[:4]) for p in entry["postings"]]
    if [leg["paid_to_wallet_id"], "AVAILABLE", currency, amount] not in postings or not any(
        p[0] == payer and p[1] == "HELD" and p[2] == currency and p[3] < 0 for p in postings
    ):
        raise EvidenceError(what, f"journal entry {entry['seq']} does not move it")


def _legs(
    ctx: _Context, steps: list[_Step], entries: dict[int, dict[str, Any]]
) -> list[tuple[_Step, int]]:
    """Match the recorded legs, in order, with what the evaluator made due; per step, the money
    released or refunded."""
    recorded = ctx.bundle.get("legs")
    if not isinstance(recorded, list):
        raise EvidenceError("legs", "missing")
    i = 0
    moved: list[tuple[_Step, int]] = []
    for step in steps:
        total = 0
        for due in step.due:
            parts: list[dict[str, Any]] = []
            while i < len(recorded) and (
                recorded[i].get("leg_id") == due.leg_id
                or (
                    isinstance(recorded[i].get("leg_id"), str)
                    and recorded[i]["leg_id"].startswith(due.leg_id + "#")
                    and _SPLIT.fullmatch(recorded[i]["leg_id"][len(due.leg_id) :]) is not None
                )
            ):
                parts.append(recorded[i])
                i += 1
            what = f"leg {due.leg_id}"
            if not parts:
                found = recorded[i].get("leg_id") if i < len(recorded) else "nothing"
                raise EvidenceError(
                    what, f"the contract makes it due at {_at(step.at_us)}; recorded: {found}"
                )
            for part in parts:
                _same(what, "kind", part.get("kind"), due.kind)
                _same(what, "clause", part.get("clause"), due.clause)
                _same(what, "party", part.get("party"), due.party)
                _same(what, "wallet", part.get("wallet_id"), due.wallet)
                _same(what, "currency", part.get("currency"), ctx.payment["currency"])
                _money_moved(ctx, entries, part)
            recorded_minor = sum(_int(p.get("amount_minor"), what) for p in parts)
            if recorded_minor != due.amount_minor:
                raise EvidenceError(
                    f"{what}: amount",
                    f"the contract makes {due.amount_minor} due, the record says {recorded_minor}",
                )
            total += due.amount_minor
        moved.append((step, total))
    if i < len(recorded):
        raise EvidenceError(
            f"leg {recorded[i].get('leg_id')}", "recorded, but the contract never made it due"
        )
    return moved


def _figures(ctx: _Context, held: int, state: ContractState, steps: list[_Step]) -> None:
    payment = ctx.payment
    refunded = sum(d.amount_minor for s in steps for d in s.due if d.kind == "refund")
    released = sum(d.amount_minor for s in steps for d in s.due if d.kind != "refund")
    _same("payment", "held", held, payment["held_minor"])
    _same("payment", "released", released, payment["released_minor"])
    _same("payment", "refunded", refunded, payment["refunded_minor"])
    cancelled = any(s.cause == "cancel" for s in steps)
    terminal = state.terminal or cancelled
    if terminal != (payment["state"] in _TERMINAL):
        raise EvidenceError(
            "payment: state",
            f"the record says {payment['state']}; the contract is "
            f"{'done' if terminal else 'still open'}",
        )


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
    lock = next((d for d in ctx.bundle.get("documents") or [] if d.get("kind") == "LOCK"), None)
    if lock is None:
        raise EvidenceError("lock document", "missing: the payer's signed lock is not recorded")
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


def _summary(
    ctx: _Context, moved: list[tuple[_Step, int]], result: Verified, attestations: int
) -> None:
    payment = ctx.payment
    currency, escrow = payment["currency"], payment["escrow_minor"]
    lines = [
        f"payment {payment['payment_id']} ({ctx.contract.name}): {payment['state']}; "
        f"{format_money(escrow, currency)} locked by {payment['payer_wallet_id']} at "
        f"{_at(payment['created_at_us'])}"
    ]
    released_so_far = 0
    for step, amount in moved:
        names = []
        for event in step.events:
            spec = ctx.contract.oracle(event.oracle)
            names.append(
                event.oracle
                if spec is None
                else f"{event.oracle} ({spec.threshold} of {len(spec.sources)})"
            )
        on = " + ".join(names)
        refund = step.due and all(d.kind == "refund" for d in step.due)
        payout = [d for d in step.due if d.target_currency]
        if step.cause == "cancel":
            lines.append(f"cancelled by all parties at {_at(step.at_us)}: refunded {amount}")
            continue
        share = _percent(amount, escrow)
        rest = released_so_far > 0 and released_so_far + amount == escrow
        what = "refunded" if refund else "released"
        how = "rest" if rest else share
        trigger = f"on {on}" if on else "at the deadline"
        line = f"{what} {how} ({format_money(amount, currency)}) {trigger} at {_at(step.at_us)}"
        if payout:
            line += f", paid out in {', '.join(sorted({str(d.target_currency) for d in payout}))}"
            line += " through the bridge"
        if not step.due:
            line = f"deadline passed at {_at(step.at_us)}: nothing due"
        lines.append(line)
        released_so_far += amount
    lines.append(
        f"{result.entries} journal entries proved against checkpoint {result.checkpoint_seq} "
        f"(key {result.checkpoint_key_id}); {attestations} attestations verified; the "
        "contract's evaluator makes exactly the recorded legs due"
    )
    result.summary = lines


def verify_bundle(data: bytes, checkpoint_key: bytes | None = None) -> Verified:
    """Verify a bundle offline (the module docstring lists the checks); EvidenceError names the
    first thing that does not verify."""
    bundle = load(data)
    payment = bundle.get("payment")
    if not isinstance(payment, dict):
        raise EvidenceError("payment", "missing")
    result = Verified(str(payment.get("payment_id")), str(payment.get("state")), 0, "", 0, 0)
    cp = _checkpoint(bundle, checkpoint_key, result)
    entries = _entries(bundle, cp)
    result.entries = len(entries)
    contract, params = _contract(bundle)
    for name in ("payer_wallet_id", "currency", "payment_id", "state"):
        _str(payment.get(name), f"payment: {name}")
    for name in ("escrow_minor", "held_minor", "released_minor", "refunded_minor"):
        _int(payment.get(name), f"payment: {name}")
    wallets = bundle.get("wallets")
    ctx = _Context(
        bundle,
        payment,
        contract,
        params,
        wallets if isinstance(wallets, dict) else {},
        {p.name: params.wallet(p.name) for p in contract.params if p.kind == "wallet"},
    )
    events: dict[int, Event] = {}
    documents = bundle.get("documents")
    if not isinstance(documents, list):
        raise EvidenceError("documents", "missing")
    for doc in documents:
        if not isinstance(doc, dict):
            raise EvidenceError("documents", "not an object")
        event = _document(ctx, doc)
        if event is not None:
            events[_int(doc.get("version"), "attestation: version")] = event
    result.attestations = len(events)
    _entries_accounted(ctx, entries)
    changes = bundle.get("changes")
    if not isinstance(changes, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("version"), int)
        and isinstance(c.get("at_us"), int)
        for c in changes
    ):
        raise EvidenceError("changes", "missing")
    steps, held, state = _replay(ctx, sorted(changes, key=lambda c: c["version"]), events)
    moved = _legs(ctx, steps, entries)
    _figures(ctx, held, state, steps)
    _summary(ctx, moved, result, len(events))
    return result


__all__ = ["FORMAT", "EvidenceError", "Verified", "dumps", "load", "verify_bundle"]
