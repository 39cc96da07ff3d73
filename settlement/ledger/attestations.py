"""Attestation verification: pure (no I/O, no clock, no randomness; ``now_us`` is passed in).

An attestation is a ``condpay.attestation.v1`` statement (wallets/instructions.py), the event's
attributes as canonical JSON (the payload), and signatures over the statement bytes exactly:
Ed25519 ``(signer_id, signature)`` pairs and/or one BLS12-381 aggregate ``(signer_ids,
signature)``. :func:`verify_attestation` returns the verified :class:`contracts_dsl.Event` and
the signers that counted, or raises :class:`SettlementError`.

Checks, in this order; the first that fails is the answer (cheap and request-shaped first, then
routing, then time, then keys, then cryptography):

1. ``ATTESTATION_MALFORMED``: the statement is not exactly a canonical ``condpay.attestation.v1``
   document; or the signatures are not a well-formed set (more than ``signatures_count_max``
   entries, a BLS aggregate without signer ids).
2. ``ATTESTATION_WRONG_PAYMENT``: the statement names another payment id, or another contract
   hash, than the payment it is submitted for (a valid signature moved to another payment).
3. ``ORACLE_NOT_IN_CONTRACT``: the contract routes no event of this type, or not from this
   attester (``contract.attesters_by_event_type()``; the attester is an oracle name or a wallet
   parameter name).
4. ``PAYLOAD_MALFORMED``: the payload is not canonical JSON of an attributes object
   (:func:`condpay.attest.canonical_payload`), or exceeds the event limits;
   ``PAYLOAD_MISMATCH``: its SHA-256 is not the statement's ``payload_sha256``.
5. ``ORACLE_SET_CHANGED``: the statement's ``oracle_set_version`` is not the current one.
6. Time, against ``now_us``: ``ATTESTATION_FROM_FUTURE`` (issued after ``now + skew``),
   ``ATTESTATION_STALE`` (issued before ``now - window``), ``ATTESTATION_TIMES_INVALID``
   (observed after issued), ``ATTESTATION_EXPIRED`` (``expires_at <= now``),
   ``ATTESTATION_TIMES_INVALID`` (``expires_at <= issued_at`` or a lifetime beyond the maximum).
7. Signers, each in the order listed (Ed25519 list, then the BLS signer ids):
   - an oracle attester: ``SIGNER_NOT_ALLOWED`` unless the signer is one of the oracle's
     ``sources``; ``ORACLE_NOT_FOUND`` unless registered; ``ORACLE_REVOKED`` if its key is
     revoked; ``SIGNATURE_INVALID`` if its key is of the other scheme;
   - a party attester (``by buyer``): ``SIGNER_NOT_ALLOWED`` for a BLS aggregate or any signer
     but the wallet the parameter names; ``WALLET_NOT_FOUND`` if that wallet has no key.
8. ``QUORUM_NOT_MET``: fewer distinct signers than the oracle's threshold (1 for a single source
   and for a party). A signer listed twice, in one list or in both, counts once. Checked before
   any signature is verified: a short quorum costs no cryptography.
9. ``SIGNATURE_INVALID``: each distinct Ed25519 ``(signer, signature)`` verified once, in the
   order listed, with the signer's current key (a key rotated out no longer verifies); then the
   BLS aggregate, once, with ``fast_aggregate_verify`` over the listed signers' current keys (a
   signer id listed twice in the aggregate means its signature is in it twice). Any invalid
   signature refuses the whole attestation, naming the signer (or the aggregate's signers).

Not checked here: replay. The event id must be recorded in the same transaction that applies the
event, and a second attestation with an event id seen before answered ``ALREADY_EXISTS`` without
effect (same or different payload); only the database can do that atomically. Nor whether the
attributes satisfy the contract's clauses: a verified event that matches nothing is recorded and
releases nothing (the evaluator decides).

Keys: the caller passes each oracle's *current* key (:class:`OracleSet`), and the wallet keys it
may need. BLS keys must have passed :func:`check_registration` (proof of possession) before they
are ever passed here: fast aggregate verification is only sound for such keys (a rogue key
``g1·x − pk_honest`` would let one signer forge a quorum; tests/test_attestation_verify.py shows
it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, NoReturn

from condpay.attest import INT64_MIN, AttributeValue, canonical_payload

from contracts_dsl import CompiledContract, Event
from contracts_dsl import limits as dsl_limits
from settlement.errors import Reason as CoreReason
from settlement.errors import SettlementError
from wallets import bls
from wallets.currencies import INT64_MAX
from wallets.errors import BadSignature, MalformedInstruction
from wallets.instructions import AttestationStatement
from wallets.keys import SIGNATURE_BYTES, check_public_key, ed25519_backend
from wallets.loan_documents import CollateralStatement

__all__ = [
    "BLS12_381",
    "DEFAULT_LIMITS",
    "ED25519",
    "AttestationLimits",
    "OracleKey",
    "OracleSet",
    "PaymentBinding",
    "Reason",
    "Scheme",
    "Submission",
    "VerifiedAttestation",
    "canonical_payload",
    "check_registration",
    "check_times",
    "decode_statement",
    "parse_payload",
    "verify_attestation",
    "verify_oracle_signatures",
]

Reason = CoreReason


def _refuse(reason: Reason, message: str, **metadata: object) -> NoReturn:
    raise SettlementError(reason, message, metadata={k: str(v) for k, v in metadata.items()})


# -- inputs and outputs -------------------------------------------------------------------------

Scheme = Literal["ED25519", "BLS12_381"]
ED25519: Final = "ED25519"
BLS12_381: Final = "BLS12_381"
_SCHEMES: Final = (ED25519, BLS12_381)


@dataclass(frozen=True, slots=True)
class AttestationLimits:
    """Every limit of attestation verification, in one place. Times in microseconds."""

    freshness_window_us: int = 300_000_000
    """How old ``issued_at`` may be: 5 minutes."""
    future_skew_us_max: int = 30_000_000
    """How far ``issued_at`` may run ahead of our clock: 30 seconds."""
    lifetime_us_max: int = 86_400_000_000
    """Longest ``expires_at - issued_at``: 1 day."""
    payload_bytes_max: int = 64 * 1024
    """Largest payload, checked before it is parsed."""
    signatures_count_max: int = dsl_limits.LIST_ITEMS_MAX
    """Most signer entries (Ed25519 plus BLS ids) in one submission: a quorum has at most
    LIST_ITEMS_MAX members."""


DEFAULT_LIMITS: Final = AttestationLimits()


@dataclass(frozen=True, slots=True)
class OracleKey:
    """An oracle's current key as registered (``key_version`` counts its rotations). BLS keys are
    registered only after :func:`check_registration` accepted their proof of possession."""

    oracle_id: str
    scheme: str  # ED25519 | BLS12_381 (another value never verifies)
    public_key: bytes
    key_version: int
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class OracleSet:
    """The registry as of ``version``: each registered oracle id's *current* key (rotated-out
    keys are not passed). The caller may pass only the oracles it needs."""

    version: int
    keys: Mapping[str, OracleKey]

    def __post_init__(self) -> None:
        for oracle_id, key in self.keys.items():
            if key.oracle_id != oracle_id:
                raise ValueError(f"key of {key.oracle_id!r} filed under {oracle_id!r}")


@dataclass(frozen=True, slots=True)
class PaymentBinding:
    """The payment an attestation is submitted for: its id, its compiled contract (whose
    ``hash`` is the payment's contract hash), its bound wallet parameters (parameter name →
    wallet id) and the Ed25519 public keys of the wallets a party attestation may need
    (wallet id → raw 32-byte key)."""

    payment_id: str
    contract: CompiledContract
    wallet_params: Mapping[str, str]
    wallet_keys: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submission:
    """What was transmitted: statement bytes, payload bytes and the signatures over the
    statement (``condpay.attest`` builds them)."""

    statement: bytes
    payload: bytes
    ed25519_signatures: Sequence[tuple[str, bytes]] = ()
    bls_aggregate: tuple[Sequence[str], bytes] | None = None


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """A verified event (``event.oracle`` is the attester's name in the contract), the distinct
    signers that counted, sorted, and for oracle signers the key version each signed under."""

    event: Event
    statement: AttestationStatement
    signer_ids: tuple[str, ...]
    key_versions: tuple[tuple[str, int], ...]


# -- the pieces ---------------------------------------------------------------------------------


def decode_statement(statement: bytes) -> AttestationStatement:
    """The decoded statement, or ATTESTATION_MALFORMED (naming the field where it can). Use it
    to find the payment an attestation is for before loading it."""
    try:
        return AttestationStatement.from_bytes(statement)
    except MalformedInstruction as error:
        extra = {} if error.field is None else {"field": error.field}
        _refuse(Reason.ATTESTATION_MALFORMED, f"statement: {error}", **extra)


class _NotCanonical(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _NotCanonical("an attribute name appears twice")
    return result


def _no_float(text: str) -> object:
    raise _NotCanonical(f"{text} is not an integer: attribute numbers are integers or strings")


def _no_constant(text: str) -> object:
    raise _NotCanonical(f"{text} is not JSON")


def parse_payload(
    payload: bytes, limits: AttestationLimits = DEFAULT_LIMITS
) -> dict[str, AttributeValue]:
    """The attributes, if ``payload`` is exactly their canonical encoding and within the event
    limits of the contract language; PAYLOAD_MALFORMED otherwise."""
    if len(payload) > limits.payload_bytes_max:
        _refuse(
            Reason.PAYLOAD_MALFORMED,
            f"the payload is {len(payload)} bytes; at most {limits.payload_bytes_max}",
        )
    try:
        data = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError:
        _refuse(Reason.PAYLOAD_MALFORMED, "the payload is not UTF-8")
    except _NotCanonical as error:
        _refuse(Reason.PAYLOAD_MALFORMED, f"the payload is not canonical: {error}")
    except (ValueError, RecursionError):  # JSONDecodeError, or an integer of > 4300 digits
        _refuse(Reason.PAYLOAD_MALFORMED, "the payload is not JSON")
    if not isinstance(data, dict):
        _refuse(Reason.PAYLOAD_MALFORMED, "the payload must be a JSON object of attributes")
    if len(data) > dsl_limits.EVENT_ATTRIBUTES_MAX:
        _refuse(
            Reason.PAYLOAD_MALFORMED,
            f"{len(data)} attributes; at most {dsl_limits.EVENT_ATTRIBUTES_MAX}",
        )
    attributes: dict[str, AttributeValue] = {}
    for name, value in data.items():
        if isinstance(value, str):
            if len(value) > dsl_limits.EVENT_ATTRIBUTE_TEXT_CHARS_MAX:
                _refuse(
                    Reason.PAYLOAD_MALFORMED,
                    f"attribute {name!r} is longer than "
                    f"{dsl_limits.EVENT_ATTRIBUTE_TEXT_CHARS_MAX} characters",
                    attribute=name,
                )
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                _refuse(Reason.PAYLOAD_MALFORMED, f"attribute {name!r} is beyond int64")
        else:
            _refuse(
                Reason.PAYLOAD_MALFORMED,
                f"attribute {name!r}: values are strings, integers or booleans",
                attribute=name,
            )
        attributes[name] = value
    try:
        canonical = canonical_payload(attributes)
    except ValueError:  # a lone surrogate from a \ud800 escape
        _refuse(Reason.PAYLOAD_MALFORMED, "the payload is not valid Unicode")
    if canonical != payload:
        _refuse(
            Reason.PAYLOAD_MALFORMED,
            "the payload is not in canonical form (sorted keys, no whitespace, minimal escapes)",
        )
    return attributes


def _bls_key_valid(public_key: bytes) -> bool:
    """IETF KeyValidate: a canonical compressed G1 point, in the subgroup, not the identity.
    py-ecc (≈ 8 ms; registration is rare), imported on first use by wallets.bls (which keeps the
    recursion limit) and never on the verification path."""
    return bls.key_validate(public_key)


def check_registration(scheme: str, public_key: bytes, proof_of_possession: bytes) -> None:
    """For RegisterOracle and RotateOracleKey: raise unless ``public_key`` may be registered.

    - ED25519: a canonical 32-byte point of the prime-order subgroup (small-order keys would
      accept forgeries), else INVALID_PUBLIC_KEY; an Ed25519 key takes no proof, so a non-empty
      ``proof_of_possession`` is PROOF_OF_POSSESSION_INVALID.
    - BLS12_381: a valid 48-byte compressed G1 point, not the identity (KeyValidate), else
      INVALID_PUBLIC_KEY; and a valid proof of possession (PopVerify), else
      PROOF_OF_POSSESSION_INVALID. Without it a rogue key could forge quorum aggregates.
    - any other scheme: INVALID_PUBLIC_KEY."""
    if scheme == ED25519:
        try:
            check_public_key(public_key)
        except BadSignature as error:
            _refuse(Reason.INVALID_PUBLIC_KEY, str(error), scheme=scheme)
        if proof_of_possession:
            _refuse(
                Reason.PROOF_OF_POSSESSION_INVALID,
                "an Ed25519 key is registered without a proof of possession",
                scheme=scheme,
            )
        return
    if scheme == BLS12_381:
        if len(public_key) != bls.PUBLIC_KEY_BYTES or not _bls_key_valid(public_key):
            _refuse(
                Reason.INVALID_PUBLIC_KEY,
                f"not a valid BLS12-381 public key ({bls.PUBLIC_KEY_BYTES}-byte compressed G1 "
                "point of the prime-order subgroup, not the identity)",
                scheme=scheme,
            )
        if not bls.backend().pop_verify(public_key, proof_of_possession):
            _refuse(
                Reason.PROOF_OF_POSSESSION_INVALID,
                "the proof of possession does not verify for this BLS key",
                scheme=scheme,
            )
        return
    _refuse(
        Reason.INVALID_PUBLIC_KEY,
        f"unknown key scheme {scheme[:32]!r}; expected one of {', '.join(_SCHEMES)}",
        scheme=scheme[:32],
    )


# -- verification -------------------------------------------------------------------------------


def _check_shape(submission: Submission, limits: AttestationLimits) -> None:
    count = len(submission.ed25519_signatures)
    if submission.bls_aggregate is not None:
        signer_ids, _ = submission.bls_aggregate
        if isinstance(signer_ids, str) or not signer_ids:
            _refuse(
                Reason.ATTESTATION_MALFORMED,
                "a BLS aggregate names its signers",
                field="bls_signer_ids",
            )
        count += len(signer_ids)
    if count > limits.signatures_count_max:
        _refuse(
            Reason.ATTESTATION_MALFORMED,
            f"{count} signer entries; at most {limits.signatures_count_max}",
            field="signatures",
        )


def check_times(
    statement: AttestationStatement | CollateralStatement, now_us: int, limits: AttestationLimits
) -> None:
    issued, expires = statement.issued_at_us, statement.expires_at_us
    if issued > now_us + limits.future_skew_us_max:
        _refuse(
            Reason.ATTESTATION_FROM_FUTURE,
            f"issued {issued - now_us} µs in the future; at most {limits.future_skew_us_max}",
            issued_at_us=issued,
            now_us=now_us,
        )
    if issued < now_us - limits.freshness_window_us:
        _refuse(
            Reason.ATTESTATION_STALE,
            f"issued {now_us - issued} µs ago; at most {limits.freshness_window_us}",
            issued_at_us=issued,
            now_us=now_us,
        )
    if statement.observed_at_us > issued:
        _refuse(
            Reason.ATTESTATION_TIMES_INVALID,
            "observed_at_us is after issued_at_us",
            field="observed_at_us",
        )
    if expires <= now_us:
        _refuse(
            Reason.ATTESTATION_EXPIRED,
            f"expired {now_us - expires} µs ago",
            expires_at_us=expires,
            now_us=now_us,
        )
    if expires <= issued or expires - issued > limits.lifetime_us_max:
        _refuse(
            Reason.ATTESTATION_TIMES_INVALID,
            f"expires_at_us - issued_at_us must be in (0, {limits.lifetime_us_max}] µs",
            field="expires_at_us",
        )


def _attester_kind(contract: CompiledContract, event_type: str, attester: str) -> str:
    routes = contract.attesters_by_event_type()
    if event_type not in routes:
        _refuse(
            Reason.ORACLE_NOT_IN_CONTRACT,
            f"the contract has no clause for events of type {event_type!r}",
            oracle=attester,
            event_type=event_type,
        )
    if attester not in routes[event_type]:
        _refuse(
            Reason.ORACLE_NOT_IN_CONTRACT,
            f"the contract takes {event_type!r} only from {', '.join(routes[event_type])}",
            oracle=attester,
            event_type=event_type,
        )
    return next(
        p.attester_kind
        for p in contract.patterns
        if p.event_type == event_type and p.attester == attester
    )


def _signers(submission: Submission) -> list[tuple[str, Scheme]]:
    listed: list[tuple[str, Scheme]] = [(s, ED25519) for s, _ in submission.ed25519_signatures]
    if submission.bls_aggregate is not None:
        listed.extend((s, BLS12_381) for s in submission.bls_aggregate[0])
    return listed


def _quorum(
    needed: int, counted: set[str], attester: str, distinct_keys: int | None = None
) -> None:
    """QUORUM_NOT_MET unless ``needed`` distinct signers signed, each with a distinct public key
    (``distinct_keys``: registration refuses a key under two ids, and this holds even if a
    registry were to hold one, so one secret never counts twice)."""
    signed = len(counted) if distinct_keys is None else min(len(counted), distinct_keys)
    if signed < needed:
        _refuse(
            Reason.QUORUM_NOT_MET,
            f"{attester} needs {needed} distinct signers with distinct keys; {signed} signed",
            oracle=attester,
            needed=needed,
            counted=signed,
        )


def _verify_ed25519(
    message: bytes, signatures: Sequence[tuple[str, bytes]], keys: Mapping[str, bytes]
) -> None:
    backend = ed25519_backend()
    seen: set[tuple[str, bytes]] = set()
    for signer_id, signature in signatures:
        if (signer_id, signature) in seen:
            continue
        seen.add((signer_id, signature))
        if len(signature) != SIGNATURE_BYTES or not backend.verify(
            keys[signer_id], signature, message
        ):
            _refuse(
                Reason.SIGNATURE_INVALID,
                f"the Ed25519 signature of {signer_id!r} does not verify over the statement",
                signer_id=signer_id,
            )


def _oracle_keys(
    submission: Submission, sources: Sequence[str], oracles: OracleSet
) -> dict[str, OracleKey]:
    """Step 7 for an oracle attester: each listed signer's current key, checked for use."""
    found: dict[str, OracleKey] = {}
    for signer_id, scheme in _signers(submission):
        if signer_id not in sources:
            _refuse(
                Reason.SIGNER_NOT_ALLOWED,
                f"{signer_id!r} is not one of the oracle's sources",
                signer_id=signer_id,
            )
        key = oracles.keys.get(signer_id)
        if key is None:
            _refuse(
                Reason.ORACLE_NOT_FOUND,
                f"oracle {signer_id!r} is not registered",
                signer_id=signer_id,
            )
        if key.revoked:
            _refuse(Reason.ORACLE_REVOKED, f"oracle {signer_id!r} is revoked", signer_id=signer_id)
        if key.scheme != scheme:
            _refuse(
                Reason.SIGNATURE_INVALID,
                f"oracle {signer_id!r} holds a {key.scheme} key; it cannot sign as {scheme}",
                signer_id=signer_id,
                scheme=scheme,
            )
        found[signer_id] = key
    return found


def verify_oracle_signatures(
    submission: Submission,
    sources: Sequence[str],
    threshold: int,
    oracles: OracleSet,
    attester: str,
) -> dict[str, OracleKey]:
    """Steps 7-9 for an oracle attester of ``sources`` with quorum ``threshold``: every listed
    signer allowed, registered, unrevoked and of its scheme; enough distinct signers with
    distinct keys; every signature valid over the statement. Returns the counted signers' keys."""
    message = submission.statement
    keys = _oracle_keys(submission, sources, oracles)
    _quorum(threshold, set(keys), attester, len({k.public_key for k in keys.values()}))
    _verify_ed25519(
        message,
        submission.ed25519_signatures,
        {s: k.public_key for s, k in keys.items()},
    )
    if submission.bls_aggregate is not None:
        signer_ids, signature = submission.bls_aggregate
        public_keys = [keys[s].public_key for s in signer_ids]
        if not bls.backend().fast_aggregate_verify(public_keys, message, signature):
            _refuse(
                Reason.SIGNATURE_INVALID,
                f"the BLS aggregate does not verify over the statement for {', '.join(signer_ids)}",
                signer_ids=",".join(signer_ids),
            )
    return keys


def verify_attestation(
    submission: Submission,
    payment: PaymentBinding,
    oracles: OracleSet,
    now_us: int,
    limits: AttestationLimits = DEFAULT_LIMITS,
) -> VerifiedAttestation:
    """Verify an attestation for ``payment`` (the checks and their order: the module docstring).
    Returns the verified event and its signers; raises SettlementError otherwise."""
    # 1. shape
    statement = decode_statement(submission.statement)
    _check_shape(submission, limits)
    # 2. bound to this payment and contract
    if statement.payment_id != payment.payment_id:
        _refuse(
            Reason.ATTESTATION_WRONG_PAYMENT,
            "the statement names another payment",
            field="payment_id",
        )
    if statement.contract_hash != payment.contract.hash:
        _refuse(
            Reason.ATTESTATION_WRONG_PAYMENT,
            "the statement names another contract than the payment's",
            field="contract_hash",
        )
    # 3. routed by the contract
    attester = statement.oracle
    kind = _attester_kind(payment.contract, statement.event_type, attester)
    # 4. payload
    attributes = parse_payload(submission.payload, limits)
    digest = hashlib.sha256(submission.payload).hexdigest()
    if digest != statement.payload_sha256:
        _refuse(
            Reason.PAYLOAD_MISMATCH,
            "the payload's SHA-256 is not the statement's payload_sha256",
            payload_sha256=digest,
        )
    # 5. oracle set
    if statement.oracle_set_version != oracles.version:
        _refuse(
            Reason.ORACLE_SET_CHANGED,
            f"signed for oracle set version {statement.oracle_set_version}; the current one is "
            f"{oracles.version}",
            statement_version=statement.oracle_set_version,
            current_version=oracles.version,
        )
    # 6. time
    check_times(statement, now_us, limits)
    # 7-9. signers, quorum, signatures
    message = submission.statement
    key_versions: tuple[tuple[str, int], ...] = ()
    if kind == "party":
        wallet_id, wallet_key = _party_wallet(submission, payment, attester)
        counted = {s for s, _ in submission.ed25519_signatures}
        _quorum(1, counted, attester)
        _verify_ed25519(message, submission.ed25519_signatures, {wallet_id: wallet_key})
    else:
        spec = payment.contract.oracle(attester)
        if spec is None:  # the compiler never routes to an undeclared oracle
            raise ValueError(f"contract {payment.contract.hash} routes to undeclared {attester}")
        keys = verify_oracle_signatures(submission, spec.sources, spec.threshold, oracles, attester)
        counted = set(keys)
        key_versions = tuple((s, keys[s].key_version) for s in sorted(counted))
    event = Event(
        event_id=statement.event_id,
        event_type=statement.event_type,
        oracle=attester,
        attributes=attributes,
        observed_at_us=statement.observed_at_us,
    )
    return VerifiedAttestation(event, statement, tuple(sorted(counted)), key_versions)


def _party_wallet(
    submission: Submission, payment: PaymentBinding, attester: str
) -> tuple[str, bytes]:
    """Step 7 for a party attester: the wallet its parameter names is the only allowed signer;
    that wallet and its key."""
    wallet_id = payment.wallet_params.get(attester)
    if wallet_id is None:  # bind_params requires every parameter before a payment exists
        raise ValueError(f"payment {payment.payment_id} has no wallet bound to {attester!r}")
    if submission.bls_aggregate is not None:
        _refuse(
            Reason.SIGNER_NOT_ALLOWED,
            f"{attester} signs with its wallet key (Ed25519), not in a BLS aggregate",
            signer_ids=",".join(submission.bls_aggregate[0]),
        )
    for signer_id, _ in submission.ed25519_signatures:
        if signer_id != wallet_id:
            _refuse(
                Reason.SIGNER_NOT_ALLOWED,
                f"only {attester}'s wallet may sign this attestation",
                signer_id=signer_id,
            )
    key = payment.wallet_keys.get(wallet_id)
    if key is None:
        _refuse(Reason.WALLET_NOT_FOUND, f"wallet {wallet_id!r} has no key", wallet_id=wallet_id)
    return wallet_id, key
