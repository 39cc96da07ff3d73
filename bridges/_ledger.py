"""The bridge ledger: SQLite, synchronous, one transaction per call.

Only one thread touches a Ledger (the in-process Bridge runs every call on one worker thread), so
there are no concurrent writers to reason about. Durability: WAL, ``synchronous=FULL``, and each
call is one ``BEGIN IMMEDIATE ... COMMIT``, or a savepoint of a group's (:meth:`Ledger.run_group`,
group commit, answered only after the group's COMMIT); a crash loses at most the calls in flight,
never part of one, and none that was answered.

Invariants, asserted when writing (every journal entry sums to zero per currency; no balance but
an issuance account's below zero; reserved within the balance; per currency
``issued - redeemed == sum of the non-issuance balances == -issuance balance`` at every commit)
and re-derived from the journal by :meth:`Ledger.audit`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import secrets
import sqlite3
import struct
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from bridges import _state_lock as state_lock
from bridges import limits
from bridges._clock import Clock
from bridges._fx import (
    check_spread,
    check_value,
    convert_source,
    convert_target,
    cross_rate,
)
from bridges._model import (
    CENTRAL_BANK_NAMES,
    CENTRAL_BANKS,
    AccountBalance,
    AccountKind,
    AuditReport,
    BlockHeader,
    CurrencySupply,
    Finality,
    Issuance,
    MarketOrder,
    Money,
    Participant,
    ParticipantKind,
    PublishedRate,
    QuorumCertificate,
    Quote,
    Rate,
    TickResult,
    Transfer,
    TransferState,
    TransferTerms,
    ValidatorInfo,
    ValidatorSet,
)
from bridges._quorum import (
    ZERO_HASH,
    TransferRecord,
    Validator,
    checked_public_keys,
    header_hash,
    quorum_signature,
    quorum_threshold,
    transfers_digest,
    verify_quorum_certificate,
)
from bridges._verified_chain import CertificateDigest, VerifiedPrefix
from bridges.errors import BridgeError, Reason, error
from wallets.currencies import CURRENCIES, CURRENCY_CODES

T = TypeVar("T")
_log = logging.getLogger(__name__)
SCHEMA_VERSION: Final = 1
_ID: Final = re.compile(rf"[A-Za-z0-9._:-]{{1,{limits.ID_LENGTH_MAX}}}")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS participants (
    participant_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('CENTRAL_BANK', 'BANK')),
    name TEXT NOT NULL,
    currency TEXT NOT NULL DEFAULT '',
    liquidity_provider INTEGER NOT NULL DEFAULT 0,
    spread_ppm INTEGER NOT NULL DEFAULT 0,
    registered_at_us INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS validators (
    validator_id TEXT PRIMARY KEY REFERENCES participants (participant_id),
    public_key BLOB NOT NULL,
    proof_of_possession BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS accounts (
    account_id INTEGER PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants (participant_id),
    kind TEXT NOT NULL CHECK (kind IN ('ISSUANCE', 'SETTLEMENT', 'LIQUIDITY', 'SPREAD')),
    currency TEXT NOT NULL,
    balance_minor INTEGER NOT NULL DEFAULT 0,
    reserved_minor INTEGER NOT NULL DEFAULT 0,
    UNIQUE (participant_id, kind, currency),
    CHECK (reserved_minor >= 0),
    CHECK (kind = 'ISSUANCE' OR (balance_minor >= 0 AND reserved_minor <= balance_minor)),
    CHECK (kind <> 'ISSUANCE' OR (balance_minor <= 0 AND reserved_minor = 0))
) STRICT;
CREATE TABLE IF NOT EXISTS supply (
    currency TEXT PRIMARY KEY,
    issued_minor INTEGER NOT NULL DEFAULT 0,
    redeemed_minor INTEGER NOT NULL DEFAULT 0,
    CHECK (0 <= redeemed_minor AND redeemed_minor <= issued_minor)
) STRICT;
CREATE TABLE IF NOT EXISTS rates (
    currency TEXT PRIMARY KEY,
    numerator INTEGER NOT NULL CHECK (numerator > 0),
    denominator INTEGER NOT NULL CHECK (denominator > 0),
    published_at_us INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS quotes (
    quote_id TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL,
    source_currency TEXT NOT NULL,
    source_minor INTEGER NOT NULL,
    net_minor INTEGER NOT NULL,
    spread_minor INTEGER NOT NULL,
    target_currency TEXT NOT NULL,
    target_minor INTEGER NOT NULL,
    rate_numerator INTEGER NOT NULL,
    rate_denominator INTEGER NOT NULL,
    spread_ppm INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    used_by TEXT
) STRICT;
-- Who asked for a quote over the gRPC server (the authenticated participant): only that
-- participant may prepare with it, to anyone else the quote does not exist. A table of its own,
-- so a state file made before it gains it on open. Quotes made in process have no row.
CREATE TABLE IF NOT EXISTS quote_requesters (
    quote_id TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS transfers (
    transfer_id TEXT PRIMARY KEY,
    state TEXT NOT NULL
        CHECK (state IN ('PREPARED', 'COMMITTED', 'ABORTED', 'EXPIRED', 'REJECTED')),
    quote_id TEXT,
    payer_id TEXT,
    payee_id TEXT,
    provider_id TEXT,
    source_currency TEXT,
    source_minor INTEGER,
    net_minor INTEGER,
    spread_minor INTEGER,
    target_currency TEXT,
    target_minor INTEGER,
    timeout_ms INTEGER,
    prepared_at_us INTEGER NOT NULL DEFAULT 0,
    expires_at_us INTEGER NOT NULL DEFAULT 0,
    resolved_at_us INTEGER NOT NULL DEFAULT 0,
    rejection_reason TEXT NOT NULL DEFAULT '',
    rejection_message TEXT NOT NULL DEFAULT '',
    rejection_metadata TEXT NOT NULL DEFAULT '{}',
    commit_seq INTEGER UNIQUE,
    block_height INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS transfers_by_expiry ON transfers (state, expires_at_us);
CREATE TABLE IF NOT EXISTS entries (
    entry_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('ISSUE', 'REDEEM', 'TRANSFER')),
    transfer_id TEXT,
    request_id TEXT,
    at_us INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS postings (
    posting_id INTEGER PRIMARY KEY,
    entry_id INTEGER NOT NULL REFERENCES entries (entry_id),
    account_id INTEGER NOT NULL REFERENCES accounts (account_id),
    currency TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor <> 0),
    role TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS postings_by_entry ON postings (entry_id);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    balance_minor INTEGER NOT NULL,
    reserved_minor INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    previous_hash BLOB NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    sealed_at_us INTEGER NOT NULL,
    transfer_ids TEXT NOT NULL,
    transfers_digest BLOB NOT NULL,
    qc_signers TEXT,
    qc_signature BLOB,
    certified_at_us INTEGER
) STRICT;
"""

#: The commits waiting for a block (state = 'COMMITTED' AND block_height = 0, in commit order)
#: and each block's transfers. Created by _initialize, which also migrates state files made with
#: the index's first form, (block_height, commit_seq), which did not serve the waiting query.
_BLOCK_INDEX: Final = "transfers_by_block"
_BLOCK_INDEX_COLUMNS: Final = ("state", "block_height", "commit_seq")

#: What a block commits to about each transfer (bridges._quorum.TransferRecord), in its order.
_RECORD_COLUMNS: Final = (
    "transfer_id, payer_id, payee_id, provider_id, source_currency, source_minor, "
    "net_minor, spread_minor, target_currency, target_minor"
)

_TRANSFER_COLUMNS: Final = (
    "transfer_id, state, quote_id, payer_id, payee_id, provider_id, source_currency, "
    "source_minor, net_minor, spread_minor, target_currency, target_minor, timeout_ms, "
    "prepared_at_us, expires_at_us, resolved_at_us, rejection_reason, rejection_message, "
    "rejection_metadata, commit_seq, block_height"
)


def check_id(value: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise error(Reason.MISSING_FIELD, f"{field} is required", field=field)
    if _ID.fullmatch(value) is None:
        raise error(
            Reason.INVALID_ID,
            f"{field} must be 1..{limits.ID_LENGTH_MAX} characters of [A-Za-z0-9._:-]",
            field=field,
        )
    return value


def check_currency(code: str, field: str = "currency") -> str:
    if not code:
        raise error(Reason.MISSING_FIELD, f"{field} is required", field=field)
    if code not in CURRENCIES:
        raise error(
            Reason.UNSUPPORTED_CURRENCY,
            f"{field} {code!r} is not a bridge currency",
            field=field,
            currency=code[:8],
        )
    return code


def check_amount(amount_minor: int, field: str = "amount_minor") -> int:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise error(Reason.INVALID_AMOUNT, f"{field} must be an integer", field=field)
    if not 0 < amount_minor <= limits.AMOUNT_MINOR_MAX:
        raise error(
            Reason.INVALID_AMOUNT,
            f"{field} must be in 1..{limits.AMOUNT_MINOR_MAX}, got {amount_minor}",
            field=field,
        )
    return amount_minor


def _checked_order(order: MarketOrder, ttl_ms: int) -> int:
    """Refuse a malformed quote request; returns its time to live (0: the default)."""
    check_currency(order.source_currency, "source_currency")
    check_currency(order.target_currency, "target_currency")
    if order.source_currency == order.target_currency:
        raise error(Reason.SAME_CURRENCY, "a quote converts between two currencies")
    if (order.source_amount_minor is None) == (order.target_amount_minor is None):
        raise error(
            Reason.MISSING_FIELD,
            "give exactly one of source_amount_minor and target_amount_minor",
            field="amount",
        )
    if order.source_amount_minor is not None:
        check_amount(order.source_amount_minor, "source_amount_minor")
    if order.target_amount_minor is not None:
        check_amount(order.target_amount_minor, "target_amount_minor")
    if order.liquidity_provider_id:
        check_id(order.liquidity_provider_id, "liquidity_provider_id")
    if (
        isinstance(ttl_ms, bool)
        or not isinstance(ttl_ms, int)
        or not 0 <= ttl_ms <= limits.QUOTE_TTL_MS_MAX
    ):
        raise error(
            Reason.INVALID_TTL,
            f"ttl_ms must be an integer in 1..{limits.QUOTE_TTL_MS_MAX}, or 0 for the default",
        )
    return ttl_ms or limits.QUOTE_TTL_MS_DEFAULT


def _fills(order: MarketOrder, quote: Quote) -> bool:
    """Whether ``quote`` is what ``order`` asks for."""
    amount = (
        quote.source.amount_minor == order.source_amount_minor
        if order.source_amount_minor is not None
        else quote.target.amount_minor == order.target_amount_minor
    )
    return (
        amount
        and (quote.source.currency, quote.target.currency)
        == (order.source_currency, order.target_currency)
        and order.liquidity_provider_id in ("", quote.liquidity_provider_id)
    )


def _check_prepare(transfer_id: str, payer_id: str, payee_id: str, timeout_ms: int) -> None:
    check_id(transfer_id, "transfer_id")
    check_id(payer_id, "payer_id")
    check_id(payee_id, "payee_id")
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise error(Reason.INVALID_TIMEOUT, "timeout_ms must be an integer")
    if not limits.TRANSFER_TIMEOUT_MS_MIN <= timeout_ms <= limits.TRANSFER_TIMEOUT_MS_MAX:
        raise error(
            Reason.INVALID_TIMEOUT,
            f"timeout_ms must be in {limits.TRANSFER_TIMEOUT_MS_MIN}.."
            f"{limits.TRANSFER_TIMEOUT_MS_MAX}",
        )


def _overflow(what: str) -> BridgeError:
    return error(Reason.AMOUNT_OVERFLOW, f"{what} would exceed int64 minor units")


@dataclass(frozen=True, slots=True)
class _Posting:
    account_id: int
    currency: str
    amount_minor: int
    role: str


@dataclass(frozen=True, slots=True)
class _Holdings:
    """One currency's sums over the accounts."""

    held_minor: int  # the non-issuance balances
    issuance_minor: int  # the issuance account's balance (minus what is outstanding)
    reserved_minor: int  # all reservations


_NO_HOLDINGS: Final = _Holdings(0, 0, 0)


@dataclass(frozen=True, slots=True)
class _Leg:
    """One posting of a committed transfer, by its role: whose account, which, how much."""

    role: str
    participant_id: str
    kind: AccountKind
    currency: str
    amount_minor: int


def _transfer_legs(
    payer_id: str,
    payee_id: str,
    provider_id: str,
    source: Money,
    net_minor: int,
    spread_minor: int,
    target: Money,
) -> tuple[_Leg, ...]:
    """The postings of a commit (docs/bridge.md, "Postings"); zero amounts are left out, as the
    journal leaves them out."""
    legs = (
        _Leg("payer", payer_id, AccountKind.SETTLEMENT, source.currency, -source.amount_minor),
        _Leg("provider_liquidity", provider_id, AccountKind.LIQUIDITY, source.currency, net_minor),
        _Leg("provider_spread", provider_id, AccountKind.SPREAD, source.currency, spread_minor),
        _Leg("provider", provider_id, AccountKind.LIQUIDITY, target.currency, -target.amount_minor),
        _Leg("payee", payee_id, AccountKind.SETTLEMENT, target.currency, target.amount_minor),
    )
    return tuple(leg for leg in legs if leg.amount_minor != 0)


#: State "paths" that are no file: a throwaway in-memory state, which nothing else can open.
IN_MEMORY: Final = frozenset({":memory:", ""})


@dataclass(frozen=True, slots=True)
class CertifiedBlock:
    """A block that a tick certified, with its certificate: what finality answers for each
    transfer it holds."""

    header: BlockHeader
    certificate: QuorumCertificate

    def finality(self, transfer_id: str) -> Finality:
        return Finality(transfer_id, self.header, self.certificate)


#: No prepared transfer: no expiry is due before this (beyond any clock's microseconds).
_NEVER: Final = 2**63


class _Memo:
    """Rows the write path would otherwise read again on every call, kept as the transaction
    sees them (:meth:`Ledger._tx`). Each entry is either read from the database or written
    through by the statement that changed the row, after that statement ran; the whole memo is
    dropped (a new one) whenever a call or a group fails or is rolled back, whenever a write
    that is not the ledger's own is seen (another connection's commit, or a statement on this
    connection between the ledger's calls), so it never says what a rolled-back write said nor
    hides what someone else wrote. Nothing is kept here that the ledger does not also write."""

    __slots__ = (
        "account_ids",
        "accounts",
        "best_provider",
        "holdings",
        "next_commit_seq",
        "next_expiry",
        "next_quote",
        "participants",
        "rates",
        "supply",
        "waiting",
    )

    def __init__(self) -> None:
        self.participants: dict[str, Participant] = {}
        self.best_provider: str | None = None  # the cheapest liquidity provider's id
        self.account_ids: dict[tuple[str, str, str], int] = {}  # (participant, kind, currency)
        self.accounts: dict[int, AccountBalance] = {}
        self.rates: dict[str, Rate] = {}
        self.supply: dict[str, tuple[int, int]] = {}  # currency: (issued, redeemed)
        # currency: [held, issuance], the sums _check_supply compares, kept by _post's postings
        self.holdings: dict[str, list[int]] = {}
        self.next_quote: int | None = None  # the next quote's sequence number
        self.next_commit_seq: int | None = None
        # No prepared transfer expires before this (a lower bound: _expire_due reads only then).
        self.next_expiry: int | None = None
        self.waiting: int | None = None  # the commits waiting for a block


class Ledger:
    """The bridge's state and every operation on it. Synchronous; see the module docstring."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock, rng: random.Random) -> None:
        self._conn = conn
        self._clock = clock
        self._rng = rng
        self.validators_down: frozenset[str] = frozenset()
        self.no_quorum = False
        self.chain_id = ""
        self._validators: dict[str, Validator] = {}
        self._public_keys: dict[str, bytes] = {}
        # The certified blocks the last clean audit verified (bridges/_verified_chain.py).
        self._verified: VerifiedPrefix | None = None
        self._grouped = False  # in run_group: each call's transaction is a savepoint
        self.groups_committed = 0  # run_group's COMMITs (group commit, for tests and profiles)
        self._locked: str | None = None  # the state file this ledger holds (_state_lock)
        self._memo = _Memo()
        # What the memo has seen: this connection's row changes when the last call ended, and
        # the database's data_version (other connections' commits) when a transaction began.
        self._changes_seen = -1
        self._data_version: int | None = None

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str,
        *,
        clock: Clock,
        rng: random.Random,
        key_seed: bytes | None = None,
        chain_id: str = "condpay-mbridge",
    ) -> Ledger:
        """Open the state file, creating the genesis state (central banks, their issuance
        accounts and validators) if it is new. ``key_seed`` (32+ bytes) fixes the validator keys
        of a new state; by default they are random, and stored with the state."""
        locked = path if path not in IN_MEMORY else None
        if locked is not None:
            state_lock.acquire(locked)  # StateFileBusy while another process has it
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except BaseException:
            if locked is not None:
                state_lock.release(locked)
            raise
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            ledger = cls(conn, clock, rng)
            ledger._locked = locked
            ledger._initialize(key_seed, chain_id)
        except BaseException:
            conn.close()
            if locked is not None:
                state_lock.release(locked)
            raise
        return ledger

    def close(self) -> None:
        self._conn.close()
        if self._locked is not None:
            state_lock.release(self._locked)
            self._locked = None

    def _initialize(self, key_seed: bytes | None, chain_id: str) -> None:
        with self._tx():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._index_blocks()
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                seed = key_seed if key_seed is not None else secrets.token_bytes(32)
                meta = {
                    "schema_version": str(SCHEMA_VERSION).encode(),
                    "chain_id": chain_id.encode(),
                    "key_seed": seed,
                }
                self._conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
                self._genesis(seed)
            if int(bytes(meta["schema_version"])) != SCHEMA_VERSION:
                raise RuntimeError(f"bridge state schema {meta['schema_version']!r} unsupported")
            self.chain_id = bytes(meta["chain_id"]).decode()
            self._load_validators(bytes(meta["key_seed"]))

    def _index_blocks(self) -> None:
        """(Re)create the block index as (state, block_height, commit_seq): dropped and created
        again only when a state file has another form of it, so an open does not rebuild it."""
        columns = tuple(row[2] for row in self._conn.execute(f"PRAGMA index_info({_BLOCK_INDEX})"))
        if columns != _BLOCK_INDEX_COLUMNS:
            self._conn.execute(f"DROP INDEX IF EXISTS {_BLOCK_INDEX}")
            self._conn.execute(
                f"CREATE INDEX {_BLOCK_INDEX} ON transfers ({', '.join(_BLOCK_INDEX_COLUMNS)})"
            )

    def _genesis(self, key_seed: bytes) -> None:
        now = self._clock.now_us()
        for bank_id, currency in sorted(CENTRAL_BANKS.items()):
            self._conn.execute(
                "INSERT INTO participants (participant_id, kind, name, currency, "
                "registered_at_us) VALUES (?, 'CENTRAL_BANK', ?, ?, ?)",
                (bank_id, CENTRAL_BANK_NAMES.get(bank_id, bank_id), currency, now),
            )
            self._conn.execute(
                "INSERT INTO accounts (participant_id, kind, currency) VALUES (?, 'ISSUANCE', ?)",
                (bank_id, currency),
            )
            self._conn.execute("INSERT INTO supply (currency) VALUES (?)", (currency,))
            validator = Validator(bank_id, key_seed)
            self.register_validator(
                validator.validator_id, validator.public_key, validator.proof_of_possession
            )

    def register_validator(self, validator_id: str, public_key: bytes, proof: bytes) -> None:
        """Admit a validator key only with a proof of possession that verifies (genesis)."""
        info = ValidatorInfo(validator_id, public_key, proof)
        checked_public_keys(ValidatorSet((info,), 1))  # raises PROOF_OF_POSSESSION_INVALID
        self._conn.execute(
            "INSERT INTO validators VALUES (?, ?, ?)", (validator_id, public_key, proof)
        )

    def _load_validators(self, key_seed: bytes) -> None:
        rows = self._conn.execute(
            "SELECT validator_id, public_key, proof_of_possession FROM validators "
            "ORDER BY validator_id"
        ).fetchall()
        infos = tuple(ValidatorInfo(r[0], bytes(r[1]), bytes(r[2])) for r in rows)
        # Re-check the stored proofs: a tampered key must not count towards a quorum.
        self._public_keys = checked_public_keys(ValidatorSet(infos, quorum_threshold(len(infos))))
        self._validators = {}
        for info in infos:
            node = Validator(info.validator_id, key_seed)
            if node.public_key != info.public_key:
                raise RuntimeError(f"validator {info.validator_id}: key seed does not match")
            self._validators[info.validator_id] = node

    # ---------------------------------------------------------------- plumbing

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One call's transaction; inside a group (:meth:`run_group`), a savepoint of the
        group's transaction, so a call that fails undoes its own writes only. Whatever fails
        drops the memo (:class:`_Memo`) before anything is rolled back."""
        if self._grouped:
            self._check_memo()
            self._conn.execute("SAVEPOINT call")
            try:
                yield
            except BaseException:
                self._forget()
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK TO call")
                    self._conn.execute("RELEASE call")
                raise
            finally:
                self._changes_seen = self._conn.total_changes
            self._conn.execute("RELEASE call")
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._check_data_version()
            self._check_memo()
            yield
        except BaseException:
            self._forget()
            self._conn.execute("ROLLBACK")
            raise
        finally:
            self._changes_seen = self._conn.total_changes
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            self._forget()
            raise

    def _forget(self) -> None:
        """Drop the memo: the next read of each row goes to the database."""
        self._memo = _Memo()

    def _check_memo(self) -> None:
        """Between two calls, no row changes on this connection but by the ledger's own calls;
        if some did (a statement run behind the ledger's back), the memo may be stale."""
        if self._conn.total_changes != self._changes_seen:
            self._forget()
            self._changes_seen = self._conn.total_changes

    def _check_data_version(self) -> None:
        """At the start of a transaction: another connection that committed to the state file
        (a ledger reopened in this process after a simulated crash, a tool) makes the memo
        stale. The state lock keeps other processes out; this is the guard behind it."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._forget()
            self._data_version = version

    def run_group(self, calls: Sequence[Callable[[], object]]) -> list[tuple[bool, object]]:
        """Group commit: ``calls`` (ledger methods) in order, in one transaction, each in a
        savepoint of its own, then one COMMIT (one fsync) for all of them. Each call's outcome,
        as (True, its answer) or (False, what it raised), exactly as if it had run alone: a
        call's failure undoes its own writes only, and what it committed before raising (a
        remembered refusal) stays. Nothing is answered before the COMMIT, so every answer is
        durable. Should SQLite roll the group's transaction back, or the COMMIT fail, the calls
        of that transaction answer Unavailable (nothing of theirs was written; each is
        idempotent, so the caller asks again)."""
        results: list[tuple[bool, object]] = []
        start = 0  # the first call of the group's current transaction
        committed = False
        self._conn.execute("BEGIN IMMEDIATE")
        self._grouped = True
        try:
            self._check_data_version()
            for call in calls:
                try:
                    results.append((True, call()))
                except Exception as exc:  # the call's own answer: it stands alone
                    results.append((False, exc))
                if not self._conn.in_transaction:  # SQLite rolled the whole group back
                    self._forget()
                    _lost(results, start, "rolled back")
                    start = len(results)
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._check_data_version()
            self._conn.execute("COMMIT")
            committed = True
            self.groups_committed += 1
        except Exception:
            _log.exception("a group of %d calls failed to commit", len(results) - start)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            _lost(results, start, "not committed")
            results.extend((False, _lost_error("not run")) for _ in calls[len(results) :])
        finally:
            self._grouped = False
            if not committed:  # the memo may hold the group's writes: none of them stands
                self._forget()
        return results

    def _call(self, body: Callable[[int], T]) -> T:
        """One call, one transaction: expire what is due, then ``body(now_us)``."""
        now = self._clock.now_us()
        with self._tx():
            self._expire_due(now)
            return body(now)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params).fetchone()

    # ---------------------------------------------------------------- participants

    def _participant(self, participant_id: str) -> Participant:
        known = self._memo.participants.get(participant_id)
        if known is not None:
            return known
        row = self._one(
            "SELECT participant_id, kind, name, currency, liquidity_provider, spread_ppm "
            "FROM participants WHERE participant_id = ?",
            (participant_id,),
        )
        if row is None:
            raise error(
                Reason.PARTICIPANT_NOT_FOUND,
                f"participant {participant_id!r} is not registered",
                participant_id=participant_id,
            )
        participant = Participant(
            row[0], ParticipantKind(row[1]), row[2], row[3], bool(row[4]), row[5]
        )
        self._memo.participants[participant_id] = participant
        return participant

    def _bank(self, participant_id: str, field: str) -> Participant:
        participant = self._participant(participant_id)
        if participant.kind is not ParticipantKind.BANK:
            raise error(
                Reason.NOT_A_BANK,
                f"{field} {participant_id!r} is a central bank, not a participating bank",
                field=field,
                participant_id=participant_id,
            )
        return participant

    def register_bank(self, participant_id: str, name: str = "") -> Participant:
        check_id(participant_id, "participant_id")
        name = name or participant_id

        def body(now: int) -> Participant:
            row = self._one(
                "SELECT kind, name FROM participants WHERE participant_id = ?", (participant_id,)
            )
            if row is not None:
                if (row[0], row[1]) != ("BANK", name):
                    raise error(
                        Reason.PARTICIPANT_EXISTS,
                        f"participant {participant_id!r} exists with other details",
                        participant_id=participant_id,
                    )
                return _replayed(self._participant(participant_id))
            self._conn.execute(
                "INSERT INTO participants (participant_id, kind, name, registered_at_us) "
                "VALUES (?, 'BANK', ?, ?)",
                (participant_id, name, now),
            )
            self._open_accounts(participant_id, AccountKind.SETTLEMENT)
            return self._participant(participant_id)

        return self._call(body)

    def register_liquidity_provider(self, participant_id: str, spread_ppm: int) -> Participant:
        check_id(participant_id, "participant_id")
        check_spread(spread_ppm)

        def body(now: int) -> Participant:
            bank = self._bank(participant_id, "participant_id")
            if bank.liquidity_provider and bank.spread_ppm == spread_ppm:
                return _replayed(bank)
            if not bank.liquidity_provider:
                self._open_accounts(participant_id, AccountKind.LIQUIDITY)
                self._open_accounts(participant_id, AccountKind.SPREAD)
            self._conn.execute(
                "UPDATE participants SET liquidity_provider = 1, spread_ppm = ? "
                "WHERE participant_id = ?",
                (spread_ppm, participant_id),
            )
            self._memo.participants.pop(participant_id, None)
            self._memo.best_provider = None
            return self._participant(participant_id)

        return self._call(body)

    def _open_accounts(self, participant_id: str, kind: AccountKind) -> None:
        self._conn.executemany(
            "INSERT INTO accounts (participant_id, kind, currency) VALUES (?, ?, ?)",
            [(participant_id, kind.value, code) for code in CURRENCY_CODES],
        )

    def participants(self) -> tuple[Participant, ...]:
        def body(now: int) -> tuple[Participant, ...]:
            ids = [r[0] for r in self._conn.execute("SELECT participant_id FROM participants")]
            return tuple(self._participant(i) for i in sorted(ids))

        return self._call(body)

    # ---------------------------------------------------------------- accounts and postings

    def _account(
        self, participant_id: str, kind: AccountKind, currency: str
    ) -> tuple[int, int, int]:
        """(account_id, balance, reserved)."""
        memo = self._memo
        account_id = memo.account_ids.get((participant_id, kind.value, currency))
        if account_id is not None:
            balance = self._balance(account_id)
            return account_id, balance.balance_minor, balance.reserved_minor
        row = self._one(
            "SELECT account_id, balance_minor, reserved_minor FROM accounts "
            "WHERE participant_id = ? AND kind = ? AND currency = ?",
            (participant_id, kind.value, currency),
        )
        if row is not None:  # accounts are never deleted, nor moved to another owner
            memo.account_ids[participant_id, kind.value, currency] = int(row[0])
            memo.accounts[int(row[0])] = AccountBalance(
                participant_id, kind, currency, int(row[1]), int(row[2])
            )
        if row is None:
            raise error(
                Reason.INVALID_ACCOUNT_KIND,
                f"{participant_id} has no {kind.value} account in {currency}",
                participant_id=participant_id,
                account_kind=kind.value,
                currency=currency,
            )
        return int(row[0]), int(row[1]), int(row[2])

    def _balance(self, account_id: int) -> AccountBalance:
        known = self._memo.accounts.get(account_id)
        if known is not None:
            return known
        row = self._one(
            "SELECT participant_id, kind, currency, balance_minor, reserved_minor FROM accounts "
            "WHERE account_id = ?",
            (account_id,),
        )
        balance = AccountBalance(row[0], AccountKind(row[1]), row[2], row[3], row[4])
        self._memo.accounts[account_id] = balance
        return balance

    def _post(
        self,
        kind: str,
        postings: Sequence[_Posting],
        *,
        now: int,
        transfer_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """One journal entry. Asserted here: it sums to zero per currency; no account but an
        issuance account goes below zero or below its reservations; nothing exceeds int64."""
        postings = [p for p in postings if p.amount_minor != 0]
        sums: dict[str, int] = defaultdict(int)
        for p in postings:
            sums[p.currency] += p.amount_minor
        if any(sums.values()):
            raise error(Reason.INVARIANT_VIOLATED, f"entry does not balance: {dict(sums)}")
        entry_id = self._conn.execute(
            "INSERT INTO entries (kind, transfer_id, request_id, at_us) VALUES (?, ?, ?, ?)",
            (kind, transfer_id, request_id, now),
        ).lastrowid
        # Each posting checked against the balance as the ones before it left it (the memo is
        # written through as it goes), then all of them written: one statement for the
        # balances, one for the postings. A refusal part way leaves the call to fail, which
        # rolls its writes back and drops the memo (_tx).
        memo = self._memo
        balances: list[tuple[int, int]] = []  # (new balance, account), in the postings' order
        for p in postings:
            balance = self._balance(p.account_id)
            new_balance = balance.balance_minor + p.amount_minor
            if balance.kind is not AccountKind.ISSUANCE and new_balance < balance.reserved_minor:
                raise error(Reason.INVARIANT_VIOLATED, f"posting overdraws {balance}")
            if not -limits.AMOUNT_MINOR_MAX <= new_balance <= limits.AMOUNT_MINOR_MAX:
                raise _overflow(f"the {balance.kind.value} balance of {balance.participant_id}")
            memo.accounts[p.account_id] = AccountBalance(
                balance.participant_id,
                balance.kind,
                balance.currency,
                new_balance,
                balance.reserved_minor,
            )
            # [held, issuance] in the account's currency, as the accounts were before this
            # entry (its balances are written below), moved by the posting
            sums_of = self._holdings_sums(balance.currency)
            sums_of[balance.kind is AccountKind.ISSUANCE] += p.amount_minor
            balances.append((new_balance, p.account_id))
        self._conn.executemany(
            "UPDATE accounts SET balance_minor = ? WHERE account_id = ?", balances
        )
        self._conn.executemany(
            "INSERT INTO postings (entry_id, account_id, currency, amount_minor, role) "
            "VALUES (?, ?, ?, ?, ?)",
            [(entry_id, p.account_id, p.currency, p.amount_minor, p.role) for p in postings],
        )
        for currency in sums:
            self._check_supply(currency)

    def _holdings(self, currency: str | None = None) -> dict[str, _Holdings]:
        """Per currency (one, or all): the sum of the non-issuance balances, the issuance
        balance and the reservations, from the accounts' running balances."""
        rows = self._conn.execute(
            "SELECT currency, "
            "COALESCE(SUM(CASE WHEN kind <> 'ISSUANCE' THEN balance_minor END), 0), "
            "COALESCE(SUM(CASE WHEN kind = 'ISSUANCE' THEN balance_minor END), 0), "
            "COALESCE(SUM(reserved_minor), 0) "
            "FROM accounts WHERE ?1 IS NULL OR currency = ?1 GROUP BY currency",
            (currency,),
        ).fetchall()
        return {row[0]: _Holdings(int(row[1]), int(row[2]), int(row[3])) for row in rows}

    def _holdings_sums(self, currency: str) -> list[int]:
        """[held, issuance] of :meth:`_holdings` for one currency, summed from the accounts
        when the memo has not got them; then kept by :meth:`_post`, which changes them."""
        sums = self._memo.holdings.get(currency)
        if sums is None:
            holdings = self._holdings(currency).get(currency, _NO_HOLDINGS)
            sums = self._memo.holdings[currency] = [holdings.held_minor, holdings.issuance_minor]
        return sums

    def _supply_row(self, currency: str) -> tuple[int, int]:
        """(issued, redeemed) of a currency."""
        row = self._memo.supply.get(currency)
        if row is None:
            issued, redeemed = self._one(
                "SELECT issued_minor, redeemed_minor FROM supply WHERE currency = ?", (currency,)
            )
            row = self._memo.supply[currency] = (issued, redeemed)
        return row

    def _check_supply(self, currency: str) -> None:
        """issued - redeemed == sum of the holders' balances == -issuance balance. The sums
        are the memo's (:meth:`_holdings_sums`): each posting moves them by its amount, as it
        moves its account's balance; summed again from the accounts whenever the memo was
        dropped, so this compares the supply with the balances as written."""
        issued, redeemed = self._supply_row(currency)
        held, issuance = self._holdings_sums(currency)
        if not issued - redeemed == held == -issuance:
            raise error(
                Reason.INVARIANT_VIOLATED,
                f"{currency}: issued {issued} - redeemed {redeemed} != held {held} "
                f"(issuance account {issuance})",
            )

    def _reserve(self, account_id: int, delta: int) -> None:
        balance = self._balance(account_id)
        reserved = balance.reserved_minor + delta
        if not 0 <= reserved <= balance.balance_minor:
            raise error(Reason.INVARIANT_VIOLATED, f"reservation out of range on {balance}")
        self._conn.execute(
            "UPDATE accounts SET reserved_minor = ? WHERE account_id = ?", (reserved, account_id)
        )
        self._memo.accounts[account_id] = AccountBalance(
            balance.participant_id, balance.kind, balance.currency, balance.balance_minor, reserved
        )

    # ---------------------------------------------------------------- issuance

    def issue(
        self, request_id: str, participant_id: str, amount: Money, account_kind: AccountKind
    ) -> Issuance:
        return self._issue_or_redeem("ISSUE", request_id, participant_id, amount, account_kind)

    def redeem(
        self, request_id: str, participant_id: str, amount: Money, account_kind: AccountKind
    ) -> Issuance:
        return self._issue_or_redeem("REDEEM", request_id, participant_id, amount, account_kind)

    def _issue_or_redeem(
        self,
        method: str,
        request_id: str,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind,
    ) -> Issuance:
        check_id(request_id, "request_id")
        check_id(participant_id, "participant_id")
        currency = check_currency(amount.currency)
        check_amount(amount.amount_minor)
        allowed = {AccountKind.SETTLEMENT, AccountKind.LIQUIDITY}
        if method == "REDEEM":
            allowed.add(AccountKind.SPREAD)
        if account_kind not in allowed:
            raise error(
                Reason.INVALID_ACCOUNT_KIND,
                f"{method.lower()} into or from {sorted(k.value for k in allowed)} accounts only",
                account_kind=account_kind.value,
            )
        fingerprint = json.dumps(
            [participant_id, account_kind.value, currency, amount.amount_minor]
        )

        def body(now: int) -> Issuance:
            seen = self._one(
                "SELECT method, fingerprint, account_id, balance_minor, reserved_minor "
                "FROM requests WHERE request_id = ?",
                (request_id,),
            )
            if seen is not None:
                if (seen[0], seen[1]) != (method, fingerprint):
                    raise error(
                        Reason.REQUEST_ID_REUSED,
                        f"request id {request_id!r} was used for a different request",
                        request_id=request_id,
                    )
                account = self._balance(seen[2])
                account = replace(account, balance_minor=seen[3], reserved_minor=seen[4])
                return Issuance(request_id, account, replayed=True)
            self._bank(participant_id, "participant_id")
            account_id, balance, reserved = self._account(participant_id, account_kind, currency)
            issuer = next(b for b, c in CENTRAL_BANKS.items() if c == currency)
            issuance_id = self._account(issuer, AccountKind.ISSUANCE, currency)[0]
            value = amount.amount_minor
            issued, redeemed = self._supply_row(currency)
            if method == "ISSUE":
                if issued + value > limits.AMOUNT_MINOR_MAX:
                    raise _overflow(f"{currency} issuance")
                self._conn.execute(
                    "UPDATE supply SET issued_minor = ? WHERE currency = ?",
                    (issued + value, currency),
                )
                self._memo.supply[currency] = (issued + value, redeemed)
                postings = [
                    _Posting(issuance_id, currency, -value, "issuance"),
                    _Posting(account_id, currency, value, "holder"),
                ]
            else:
                if balance - reserved < value:
                    raise _insufficient(
                        Reason.INSUFFICIENT_FUNDS,
                        participant_id,
                        account_kind,
                        currency,
                        value,
                        balance - reserved,
                    )
                self._conn.execute(
                    "UPDATE supply SET redeemed_minor = ? WHERE currency = ?",
                    (redeemed + value, currency),
                )
                self._memo.supply[currency] = (issued, redeemed + value)
                postings = [
                    _Posting(account_id, currency, -value, "holder"),
                    _Posting(issuance_id, currency, value, "issuance"),
                ]
            self._post(method, postings, now=now, request_id=request_id)
            after = self._balance(account_id)
            self._conn.execute(
                "INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?)",
                (
                    request_id,
                    method,
                    fingerprint,
                    account_id,
                    after.balance_minor,
                    after.reserved_minor,
                ),
            )
            return Issuance(request_id, after)

        return self._call(body)

    # ---------------------------------------------------------------- rates and quotes

    def publish_rate(self, currency: str, value: Rate) -> PublishedRate:
        check_currency(currency)
        value = check_value(value)

        def body(now: int) -> PublishedRate:
            self._conn.execute(
                "INSERT INTO rates VALUES (?, ?, ?, ?) ON CONFLICT (currency) DO UPDATE SET "
                "numerator = excluded.numerator, denominator = excluded.denominator, "
                "published_at_us = excluded.published_at_us",
                (currency, value.numerator, value.denominator, now),
            )
            self._memo.rates.pop(currency, None)  # read again from the row as written
            return PublishedRate(currency, value, now)

        return self._call(body)

    def _value(self, currency: str) -> Rate:
        known = self._memo.rates.get(currency)
        if known is not None:
            return known
        row = self._one("SELECT numerator, denominator FROM rates WHERE currency = ?", (currency,))
        if row is None:
            raise error(
                Reason.RATE_NOT_PUBLISHED,
                f"no rate published for {currency}",
                currency=currency,
            )
        rate = self._memo.rates[currency] = Rate(row[0], row[1])
        return rate

    def quote(
        self,
        source_currency: str,
        target_currency: str,
        *,
        source_amount_minor: int | None = None,
        target_amount_minor: int | None = None,
        liquidity_provider_id: str = "",
        ttl_ms: int = 0,
        requested_by: str = "",
    ) -> Quote:
        """``requested_by``: the authenticated participant asking (the gRPC server's caller);
        only it may then prepare with the quote. Empty in process."""
        order = MarketOrder(
            source_currency,
            target_currency,
            source_amount_minor,
            target_amount_minor,
            liquidity_provider_id,
        )
        ttl_ms = _checked_order(order, ttl_ms)
        return self._call(lambda now: self._new_quote(now, order, ttl_ms, requested_by))

    def _new_quote(self, now: int, order: MarketOrder, ttl_ms: int, requested_by: str) -> Quote:
        return self._new_quote_row(now, order, ttl_ms, requested_by)[0]

    def _new_quote_row(
        self, now: int, order: MarketOrder, ttl_ms: int, requested_by: str
    ) -> tuple[Quote, tuple[Any, ...]]:
        """A new quote, and what :meth:`_prepare_new` reads of its row (so a prepare at market
        does not read back the quote it has just written)."""
        provider = self._provider(order.liquidity_provider_id)
        source_currency, target_currency = order.source_currency, order.target_currency
        rate = cross_rate(self._value(source_currency), self._value(target_currency))
        conversion = (
            convert_source(order.source_amount_minor, rate, provider.spread_ppm)
            if order.source_amount_minor is not None
            else convert_target(_known(order.target_amount_minor), rate, provider.spread_ppm)
        )
        if conversion.target_minor <= 0:
            raise error(
                Reason.AMOUNT_TOO_SMALL,
                f"{conversion.source_minor} {source_currency} minor units convert to nothing",
            )
        if conversion.source_minor > limits.AMOUNT_MINOR_MAX:
            raise _overflow("the quote's source amount")
        if conversion.target_minor > limits.AMOUNT_MINOR_MAX:
            raise _overflow("the quote's target amount")
        # Quotes are never deleted, so rowids run 1, 2, 3, ...: the next one is the count + 1
        # (as the ids have always been numbered), read off the end of the table.
        sequence = self._memo.next_quote
        if sequence is None:
            sequence = self._one("SELECT COALESCE(MAX(rowid), 0) + 1 FROM quotes")[0]
        quote_id = f"q{sequence:06d}-{self._rng.getrandbits(48):012x}"
        quote = Quote(
            quote_id=quote_id,
            liquidity_provider_id=provider.participant_id,
            source=Money(source_currency, conversion.source_minor),
            target=Money(target_currency, conversion.target_minor),
            spread=Money(source_currency, conversion.spread_minor),
            rate=rate,
            spread_ppm=provider.spread_ppm,
            created_at_us=now,
            expires_at_us=now + ttl_ms * 1000,
        )
        terms = (
            provider.participant_id,
            source_currency,
            conversion.source_minor,
            conversion.net_minor,
            conversion.spread_minor,
            target_currency,
            conversion.target_minor,
        )
        self._conn.execute(
            "INSERT INTO quotes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                quote_id,
                *terms,
                rate.numerator,
                rate.denominator,
                provider.spread_ppm,
                now,
                quote.expires_at_us,
            ),
        )
        self._memo.next_quote = sequence + 1
        if requested_by:
            self._conn.execute(
                "INSERT INTO quote_requesters VALUES (?, ?)", (quote_id, requested_by)
            )
        return quote, (*terms, quote.expires_at_us, None)  # None: used by no transfer yet

    def _stored_quote(self, quote_id: str) -> Quote | None:
        row = self._one(
            "SELECT provider_id, source_currency, source_minor, spread_minor, target_currency, "
            "target_minor, rate_numerator, rate_denominator, spread_ppm, created_at_us, "
            "expires_at_us FROM quotes WHERE quote_id = ?",
            (quote_id,),
        )
        if row is None:
            return None
        provider, source_currency, source, spread, target_currency, target = row[:6]
        return Quote(
            quote_id=quote_id,
            liquidity_provider_id=provider,
            source=Money(source_currency, source),
            target=Money(target_currency, target),
            spread=Money(source_currency, spread),
            rate=Rate(row[6], row[7]),
            spread_ppm=row[8],
            created_at_us=row[9],
            expires_at_us=row[10],
        )

    def _provider(self, participant_id: str) -> Participant:
        if participant_id:
            provider = self._bank(participant_id, "liquidity_provider_id")
            if not provider.liquidity_provider:
                raise error(
                    Reason.NOT_A_LIQUIDITY_PROVIDER,
                    f"{participant_id} is not a liquidity provider",
                    participant_id=participant_id,
                )
            return provider
        best = self._memo.best_provider
        if best is None:
            row = self._one(
                "SELECT participant_id FROM participants WHERE liquidity_provider = 1 "
                "ORDER BY spread_ppm, participant_id LIMIT 1"
            )
            if row is None:
                raise error(Reason.NO_LIQUIDITY_PROVIDER, "no liquidity provider is registered")
            best = self._memo.best_provider = row[0]
        return self._participant(best)

    # ---------------------------------------------------------------- two-phase transfers

    def prepare(
        self,
        transfer_id: str,
        *,
        quote_id: str,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
        refuse_with: Reason | None = None,
        requested_by: str = "",
    ) -> Transfer:
        """``requested_by`` (the gRPC server's authenticated caller): a quote someone else
        asked for, or one asked for in process, answers QUOTE_NOT_FOUND like a missing one.

        Reserve the payer's source amount and the provider's target amount until
        ``now + timeout_ms``. Idempotent by ``transfer_id``; a refusal is remembered (the transfer
        is REJECTED) and every retry is refused alike. ``refuse_with`` is for fault injection."""
        check_id(transfer_id, "transfer_id")
        check_id(quote_id, "quote_id")
        _check_prepare(transfer_id, payer_id, payee_id, timeout_ms)

        def body(now: int, refusal: list[BridgeError]) -> Transfer:
            existing = self._transfer(transfer_id)
            if existing is not None:
                return self._prepare_again(existing, quote_id, payer_id, payee_id, timeout_ms)
            return self._prepare_new(
                now,
                transfer_id,
                quote_id,
                payer_id,
                payee_id,
                timeout_ms,
                refuse_with,
                requested_by,
                refusal,
            )

        return self._call_remembering(body)

    def prepare_at_market(
        self,
        transfer_id: str,
        *,
        order: MarketOrder,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
        refuse_with: Reason | None = None,
        requested_by: str = "",
    ) -> tuple[Quote, Transfer]:
        """A quote for ``order`` and the prepare with it, in one transaction: the quote is
        used at once, so it is never a round trip of its own, and never left unused.

        Idempotent by ``transfer_id``: the same order again answers the transfer as it is and
        the quote it converts at (its refusal, if it was refused); another order, or a transfer
        prepared with a quote of its own, is TRANSFER_EXISTS_WITH_DIFFERENT_TERMS. Refusals of
        the quote (no provider, an amount that converts to nothing...) are the call's and leave
        nothing; refusals of the prepare are remembered, as :meth:`prepare`'s are."""
        _check_prepare(transfer_id, payer_id, payee_id, timeout_ms)
        ttl_ms = _checked_order(order, 0)

        def body(now: int, refusal: list[BridgeError]) -> tuple[Quote, Transfer]:
            existing = self._transfer(transfer_id)
            if existing is not None:
                terms = existing.terms
                quote = self._stored_quote(terms.quote_id) if terms is not None else None
                if terms is not None and (quote is None or not _fills(order, quote)):
                    raise error(
                        Reason.TRANSFER_EXISTS_WITH_DIFFERENT_TERMS,
                        f"transfer {transfer_id} exists with different terms: order",
                        transfer_id=transfer_id,
                        fields="order",
                    )
                again = self._prepare_again(
                    existing, terms.quote_id if terms else "", payer_id, payee_id, timeout_ms
                )
                return _known(quote), again
            quote, row = self._new_quote_row(now, order, ttl_ms, requested_by)
            transfer = self._prepare_new(
                now,
                transfer_id,
                quote.quote_id,
                payer_id,
                payee_id,
                timeout_ms,
                refuse_with,
                requested_by,
                refusal,
                quoted=row,  # requested by ``requested_by``, as the prepare would check
            )
            return quote, transfer

        return self._call_remembering(body)

    def _call_remembering(self, body: Callable[[int, list[BridgeError]], T]) -> T:
        """:meth:`_call` of a body that may refuse by appending the refusal to its second
        argument: the refusal is committed (remembered) with the transaction, then raised."""
        refusal: list[BridgeError] = []
        answer = self._call(lambda now: body(now, refusal))
        if refusal:
            raise refusal[0]
        return answer

    def _prepare_new(
        self,
        now: int,
        transfer_id: str,
        quote_id: str,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
        refuse_with: Reason | None,
        requested_by: str,
        refusal: list[BridgeError],
        *,
        quoted: Sequence[Any] | None = None,
    ) -> Transfer:
        """A new transfer's row, PREPARED with both reservations, or REJECTED with the refusal
        appended to ``refusal`` (to raise once the transaction has kept it). ``quoted``: the
        quote's row, when this call has just written it for ``requested_by``."""
        # Who before what: a payer that is no bank is refused before its quote is looked at.
        self._bank(payer_id, "payer_id")
        self._bank(payee_id, "payee_id")
        quote = quoted
        if quote is None:
            quote = self._one(
                "SELECT provider_id, source_currency, source_minor, net_minor, spread_minor, "
                "target_currency, target_minor, expires_at_us, used_by FROM quotes "
                "WHERE quote_id = ?",
                (quote_id,),
            )
        if quoted is None and quote is not None and requested_by:
            owner = self._one(
                "SELECT participant_id FROM quote_requesters WHERE quote_id = ?", (quote_id,)
            )
            if owner is None or owner[0] != requested_by:
                quote = None  # another's quote: exactly as if it did not exist
        if quote is None:
            raise error(
                Reason.QUOTE_NOT_FOUND, f"quote {quote_id!r} does not exist", quote_id=quote_id
            )
        provider, source_currency, source, net, spread, target_currency, target = quote[:7]
        expires_at, used_by = quote[7], quote[8]
        expires_at_us = now + timeout_ms * 1000
        self._conn.execute(
            "INSERT INTO transfers (transfer_id, state, quote_id, payer_id, payee_id, "
            "provider_id, source_currency, source_minor, net_minor, spread_minor, "
            "target_currency, target_minor, timeout_ms, prepared_at_us, expires_at_us) "
            "VALUES (?, 'PREPARED', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                transfer_id,
                quote_id,
                payer_id,
                payee_id,
                provider,
                source_currency,
                source,
                net,
                spread,
                target_currency,
                target,
                timeout_ms,
                now,
                expires_at_us,
            ),
        )
        memo = self._memo
        if memo.next_expiry is not None:  # a new prepared transfer: perhaps the first to expire
            memo.next_expiry = min(memo.next_expiry, expires_at_us)
        (
            (payer_account, payer_balance, payer_reserved),
            (lp_account, lp_balance, lp_reserved),
        ) = self._leg_accounts(payer_id, source_currency, provider, target_currency)
        # Precedence, as TigerBeetle's result codes: the first that applies is the answer.
        problem: BridgeError | None = None
        if now >= expires_at:
            problem = error(Reason.QUOTE_EXPIRED, f"quote {quote_id} expired", quote_id=quote_id)
        elif used_by is not None:
            problem = error(
                Reason.QUOTE_ALREADY_USED,
                f"quote {quote_id} was used by transfer {used_by}",
                quote_id=quote_id,
            )
        elif not self.quorum_available():
            problem = error(
                Reason.QUORUM_UNAVAILABLE,
                "fewer than 2/3 of the validators are up: the bridge takes no new transfers",
            )
        elif payer_balance - payer_reserved < source:
            problem = _insufficient(
                Reason.INSUFFICIENT_FUNDS,
                payer_id,
                AccountKind.SETTLEMENT,
                source_currency,
                source,
                payer_balance - payer_reserved,
            )
        elif lp_balance - lp_reserved < target:
            problem = _insufficient(
                Reason.INSUFFICIENT_LIQUIDITY,
                provider,
                AccountKind.LIQUIDITY,
                target_currency,
                target,
                lp_balance - lp_reserved,
            )
        elif refuse_with is Reason.INSUFFICIENT_FUNDS:
            problem = _injected(
                _insufficient(
                    refuse_with,
                    payer_id,
                    AccountKind.SETTLEMENT,
                    source_currency,
                    source,
                    payer_balance - payer_reserved,
                )
            )
        elif refuse_with is Reason.INSUFFICIENT_LIQUIDITY:
            problem = _injected(
                _insufficient(
                    refuse_with,
                    provider,
                    AccountKind.LIQUIDITY,
                    target_currency,
                    target,
                    lp_balance - lp_reserved,
                )
            )
        elif refuse_with is not None:
            problem = error(
                refuse_with,
                f"refused by fault injection ({refuse_with.value})",
                injected="true",
            )
        if problem is not None:
            self._conn.execute(
                "UPDATE transfers SET state = 'REJECTED', resolved_at_us = ?, "
                "expires_at_us = 0, rejection_reason = ?, rejection_message = ?, "
                "rejection_metadata = ? WHERE transfer_id = ?",
                (
                    now,
                    problem.reason.value,
                    problem.message,
                    json.dumps(problem.metadata, sort_keys=True),
                    transfer_id,
                ),
            )
            refusal.append(problem)
        else:
            self._reserve(payer_account, source)
            self._reserve(lp_account, target)
            self._conn.execute(
                "UPDATE quotes SET used_by = ? WHERE quote_id = ?", (transfer_id, quote_id)
            )
        # The row as written above, without reading it back (_transfer_of's reading of it).
        terms = _terms(
            quote_id,
            payer_id,
            payee_id,
            provider,
            Money(source_currency, source),
            Money(target_currency, target),
            spread,
            timeout_ms,
        )
        prepared = Transfer(
            transfer_id=transfer_id,
            state=TransferState.PREPARED,
            terms=terms,
            prepared_at_us=now,
            expires_at_us=expires_at_us,
        )
        if problem is None:
            return prepared
        return replace(
            prepared,
            state=TransferState.REJECTED,
            expires_at_us=0,
            resolved_at_us=now,
            rejection_reason=problem.reason.value,
        )

    def _prepare_again(
        self, existing: Transfer, quote_id: str, payer_id: str, payee_id: str, timeout_ms: int
    ) -> Transfer:
        terms = existing.terms
        if terms is None:
            raise error(
                Reason.TRANSFER_ALREADY_ABORTED,
                f"transfer {existing.transfer_id} was aborted before it was prepared",
                transfer_id=existing.transfer_id,
                state=existing.state.value,
            )
        differ = [
            name
            for name, stored, asked in (
                ("quote_id", terms.quote_id, quote_id),
                ("payer_id", terms.payer_id, payer_id),
                ("payee_id", terms.payee_id, payee_id),
                ("timeout_ms", terms.timeout_ms, timeout_ms),
            )
            if stored != asked
        ]
        if differ:
            raise error(
                Reason.TRANSFER_EXISTS_WITH_DIFFERENT_TERMS,
                f"transfer {existing.transfer_id} exists with different terms: {', '.join(differ)}",
                transfer_id=existing.transfer_id,
                fields=",".join(differ),
            )
        if existing.state is TransferState.REJECTED:
            raise self._stored_refusal(existing.transfer_id)
        return _replayed_transfer(existing)

    def _stored_refusal(self, transfer_id: str) -> BridgeError:
        reason, message, metadata = self._one(
            "SELECT rejection_reason, rejection_message, rejection_metadata FROM transfers "
            "WHERE transfer_id = ?",
            (transfer_id,),
        )
        return error(Reason(reason), message, **json.loads(metadata))

    def commit(self, transfer_id: str) -> Transfer:
        check_id(transfer_id, "transfer_id")

        def body(now: int) -> Transfer:
            transfer = self._require(transfer_id)
            if transfer.state is TransferState.COMMITTED:
                return _replayed_transfer(transfer)
            if transfer.state is not TransferState.PREPARED:
                raise _cannot_commit(transfer)
            terms = _known(transfer.terms)
            self._release_legs(terms)
            legs = _transfer_legs(
                terms.payer_id,
                terms.payee_id,
                terms.liquidity_provider_id,
                terms.source,
                terms.source.amount_minor - terms.spread.amount_minor,  # the net, as quoted
                terms.spread.amount_minor,
                terms.target,
            )
            self._post(
                "TRANSFER",
                [
                    _Posting(
                        self._account(leg.participant_id, leg.kind, leg.currency)[0],
                        leg.currency,
                        leg.amount_minor,
                        leg.role,
                    )
                    for leg in legs
                ],
                now=now,
                transfer_id=transfer_id,
            )
            memo = self._memo
            sequence = memo.next_commit_seq
            if sequence is None:
                sequence = self._one("SELECT COALESCE(MAX(commit_seq), 0) + 1 FROM transfers")[0]
            self._conn.execute(
                "UPDATE transfers SET state = 'COMMITTED', resolved_at_us = ?, commit_seq = ? "
                "WHERE transfer_id = ?",
                (now, sequence, transfer_id),
            )
            memo.next_commit_seq = sequence + 1
            if memo.waiting is not None:
                memo.waiting += 1
            # The row as updated (it was PREPARED: in no block, no refusal).
            return replace(transfer, state=TransferState.COMMITTED, resolved_at_us=now)

        transfer = self._call(body)
        # The commit is durable: whatever sealing does now, the answer is that it committed.
        try:
            if self._waiting_commits() >= limits.BLOCK_TRANSFERS_MAX:
                self.tick()
        except Exception:
            _log.exception(
                "transfer %s committed; sealing the full block failed, left to the block timer "
                "and the next finality()",
                transfer_id,
            )
        return transfer

    def abort(self, transfer_id: str) -> Transfer:
        check_id(transfer_id, "transfer_id")

        def body(now: int) -> Transfer:
            transfer = self._transfer(transfer_id)
            if transfer is None:
                # Presumed abort: remember it, so that a prepare arriving late is refused.
                self._conn.execute(
                    "INSERT INTO transfers (transfer_id, state, resolved_at_us) "
                    "VALUES (?, 'ABORTED', ?)",
                    (transfer_id, now),
                )
                return _known(self._transfer(transfer_id))
            if transfer.state is TransferState.COMMITTED:
                raise error(
                    Reason.TRANSFER_ALREADY_COMMITTED,
                    f"transfer {transfer_id} committed; it cannot be aborted",
                    transfer_id=transfer_id,
                    state=transfer.state.value,
                )
            if transfer.state is not TransferState.PREPARED:
                return _replayed_transfer(transfer)
            self._release(transfer, TransferState.ABORTED, now)
            return _known(self._transfer(transfer_id))

        return self._call(body)

    def status(self, transfer_id: str) -> Transfer:
        check_id(transfer_id, "transfer_id")
        return self._call(lambda now: self._require(transfer_id))

    def _leg_accounts(
        self, payer_id: str, source_currency: str, provider_id: str, target_currency: str
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """The two accounts a prepare reserves on, as (account_id, balance, reserved): the
        payer's SETTLEMENT account in the source currency, the provider's LIQUIDITY account in
        the target currency."""
        return (
            self._account(payer_id, AccountKind.SETTLEMENT, source_currency),
            self._account(provider_id, AccountKind.LIQUIDITY, target_currency),
        )

    def _release_legs(self, terms: TransferTerms) -> None:
        """Release the two reservations of a prepared transfer."""
        payer, lp = self._leg_accounts(
            terms.payer_id,
            terms.source.currency,
            terms.liquidity_provider_id,
            terms.target.currency,
        )
        self._reserve(payer[0], -terms.source.amount_minor)
        self._reserve(lp[0], -terms.target.amount_minor)

    def _release(self, transfer: Transfer, state: TransferState, now: int) -> None:
        self._release_legs(_known(transfer.terms))
        self._conn.execute(
            "UPDATE transfers SET state = ?, resolved_at_us = ? WHERE transfer_id = ?",
            (state.value, now, transfer.transfer_id),
        )

    def _expire_due(self, now: int) -> int:
        """Expire the prepared transfers due at ``now``. Most calls come before the first
        expiry, which the memo bounds from below: then there is nothing to read."""
        memo = self._memo
        if memo.next_expiry is not None and now < memo.next_expiry:
            return 0
        due = [
            r[0]
            for r in self._conn.execute(
                "SELECT transfer_id FROM transfers WHERE state = 'PREPARED' AND expires_at_us <= ? "
                "ORDER BY expires_at_us, transfer_id",
                (now,),
            )
        ]
        for transfer_id in due:
            self._release(_known(self._transfer(transfer_id)), TransferState.EXPIRED, now)
        first = self._one("SELECT MIN(expires_at_us) FROM transfers WHERE state = 'PREPARED'")[0]
        self._memo.next_expiry = _NEVER if first is None else int(first)
        return len(due)

    def _require(self, transfer_id: str) -> Transfer:
        transfer = self._transfer(transfer_id)
        if transfer is None:
            raise error(
                Reason.TRANSFER_NOT_FOUND,
                f"transfer {transfer_id!r} does not exist",
                transfer_id=transfer_id,
            )
        return transfer

    def _transfer(self, transfer_id: str) -> Transfer | None:
        row = self._one(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = ?", (transfer_id,)
        )
        return None if row is None else _transfer_of(row)

    # ---------------------------------------------------------------- blocks and finality

    def set_validator_faults(self, down: frozenset[str], no_quorum: bool) -> None:
        unknown = down - set(self._validators)
        if unknown:
            raise ValueError(
                f"unknown validators {sorted(unknown)}; known: {sorted(self._validators)}"
            )
        self.validators_down = down
        self.no_quorum = no_quorum

    def _signers(self) -> list[Validator]:
        """The validators that sign now: the online ones; under no_quorum, one short of it."""
        online = [v for i, v in sorted(self._validators.items()) if i not in self.validators_down]
        if self.no_quorum:
            online = online[: quorum_threshold(len(self._validators)) - 1]
        return online

    def quorum_available(self) -> bool:
        return len(self._signers()) >= quorum_threshold(len(self._validators))

    def validators(self) -> ValidatorSet:
        signing = {v.validator_id for v in self._signers()}
        rows = self._conn.execute(
            "SELECT validator_id, public_key, proof_of_possession FROM validators "
            "ORDER BY validator_id"
        ).fetchall()
        infos = tuple(ValidatorInfo(r[0], bytes(r[1]), bytes(r[2]), r[0] in signing) for r in rows)
        return ValidatorSet(infos, quorum_threshold(len(infos)))

    def _waiting_commits(self) -> int:
        memo = self._memo
        if memo.waiting is None:
            memo.waiting = int(
                self._one(
                    "SELECT COUNT(*) FROM transfers WHERE state = 'COMMITTED' AND block_height = 0"
                )[0]
            )
        return memo.waiting

    def tick(self, certified: list[CertifiedBlock] | None = None) -> TickResult:
        """What the block timer does: expire due transfers, then seal and certify blocks. The
        tip must be final before the next block is sealed, so a missing quorum holds every later
        commit pending (committed, not final) until the quorum is back. ``certified``: told
        each block this tick certifies, with its certificate (the commits waiting for it are
        then answered without reading them back)."""
        now = self._clock.now_us()
        with self._tx():
            expired = self._expire_due(now)
        while True:
            with self._tx():
                progressed = self._advance_chain(self._clock.now_us(), certified)
            if not progressed:
                break
        tip = self._one("SELECT COALESCE(MAX(height), 0) FROM blocks")[0]
        # Read backwards from the tip; it stops at the first certified block (the tip, or the
        # one below it: the tip must be final before the next block is sealed).
        final = self._one(
            "SELECT height FROM blocks WHERE qc_signature IS NOT NULL ORDER BY height DESC LIMIT 1"
        )
        return TickResult(expired, int(tip), 0 if final is None else int(final[0]))

    def _advance_chain(self, now: int, certified: list[CertifiedBlock] | None) -> bool:
        """One step: certify the tip if it lacks a certificate, else seal the next block."""
        tip = self._one(
            "SELECT height, hash, qc_signature FROM blocks ORDER BY height DESC LIMIT 1"
        )
        if tip is not None and tip[2] is None:
            return self._certify(int(tip[0]), bytes(tip[1]), now, certified)
        waiting = self._conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM transfers "
            "WHERE state = 'COMMITTED' AND block_height = 0 ORDER BY commit_seq LIMIT ?",
            (limits.BLOCK_TRANSFERS_MAX,),
        ).fetchall()
        if not waiting:
            return False
        records = [TransferRecord(*row) for row in waiting]
        height = 1 if tip is None else int(tip[0]) + 1
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            previous_hash=ZERO_HASH if tip is None else bytes(tip[1]),
            sealed_at_us=now,
            transfer_ids=tuple(r.transfer_id for r in records),
            transfers_digest=transfers_digest(records),
        )
        block_hash = header_hash(header)
        self._conn.execute(
            "INSERT INTO blocks (height, previous_hash, hash, sealed_at_us, transfer_ids, "
            "transfers_digest) VALUES (?, ?, ?, ?, ?, ?)",
            (
                height,
                header.previous_hash,
                block_hash,
                now,
                json.dumps(list(header.transfer_ids)),
                header.transfers_digest,
            ),
        )
        self._conn.executemany(
            "UPDATE transfers SET block_height = ? WHERE transfer_id = ?",
            [(height, r.transfer_id) for r in records],
        )
        if self._memo.waiting is not None:
            self._memo.waiting -= len(records)
        self._certify(height, block_hash, now, certified)
        return True

    def _certify(
        self, height: int, block_hash: bytes, now: int, certified: list[CertifiedBlock] | None
    ) -> bool:
        """Collect the signing validators' signatures; store a certificate if they are a quorum
        (and tell ``certified``)."""
        signers = self._signers()
        if len(signers) < quorum_threshold(len(self._validators)):
            return False
        qc = QuorumCertificate(
            block_hash=block_hash,
            signer_ids=tuple(v.validator_id for v in signers),
            aggregate_signature=quorum_signature(signers, block_hash),
        )
        header = self._header(height)
        # The signature needs no pairing check here: each signer's key was checked against its
        # stored public key when the ledger opened (_load_validators), so it verifies by
        # construction. What can go wrong is the block signed not being the block stored.
        if header_hash(header) != block_hash:
            raise error(Reason.INVARIANT_VIOLATED, f"block {height}: stored header differs")
        self._conn.execute(
            "UPDATE blocks SET qc_signers = ?, qc_signature = ?, certified_at_us = ? "
            "WHERE height = ?",
            (json.dumps(list(qc.signer_ids)), qc.aggregate_signature, now, height),
        )
        if certified is not None:
            certified.append(CertifiedBlock(header, qc))
        return True

    def _header(self, height: int) -> BlockHeader:
        row = self._one(
            "SELECT height, previous_hash, sealed_at_us, transfer_ids, transfers_digest "
            "FROM blocks WHERE height = ?",
            (height,),
        )
        return BlockHeader(
            chain_id=self.chain_id,
            height=int(row[0]),
            previous_hash=bytes(row[1]),
            sealed_at_us=int(row[2]),
            transfer_ids=tuple(json.loads(row[3])),
            transfers_digest=bytes(row[4]),
        )

    def _certificate(self, height: int) -> QuorumCertificate | None:
        row = self._one(
            "SELECT hash, qc_signers, qc_signature FROM blocks WHERE height = ?", (height,)
        )
        if row is None or row[2] is None:
            return None
        return QuorumCertificate(bytes(row[0]), tuple(json.loads(row[1])), bytes(row[2]))

    def finality(self, transfer_id: str, *, seal: bool = True) -> Finality:
        """The block holding a committed transfer and its certificate once final. ``seal``:
        asking seals waiting commits into a block (and certifies it, quorum permitting) at once;
        otherwise it only reads (the block timer seals: :meth:`bridges.Bridge.finality`)."""
        check_id(transfer_id, "transfer_id")
        transfer = self._call(lambda now: self._require(transfer_id))
        if transfer.state is not TransferState.COMMITTED:
            raise error(
                Reason.TRANSFER_NOT_COMMITTED,
                f"transfer {transfer_id} is {transfer.state.value}, not committed",
                transfer_id=transfer_id,
                state=transfer.state.value,
            )
        if seal:
            self.tick()
        height = _known(self._transfer(transfer_id)).block_height
        if height == 0:
            return Finality(transfer_id, None, None)
        return Finality(transfer_id, self._header(height), self._certificate(height))

    # ---------------------------------------------------------------- reads and the audit

    def balances(self, participant_id: str = "") -> tuple[AccountBalance, ...]:
        if participant_id:
            check_id(participant_id, "participant_id")

        def body(now: int) -> tuple[AccountBalance, ...]:
            if participant_id:
                self._participant(participant_id)
            rows = self._conn.execute(
                "SELECT participant_id, kind, currency, balance_minor, reserved_minor "
                "FROM accounts WHERE ? = '' OR participant_id = ? "
                "ORDER BY participant_id, kind, currency",
                (participant_id, participant_id),
            ).fetchall()
            return tuple(AccountBalance(r[0], AccountKind(r[1]), r[2], r[3], r[4]) for r in rows)

        return self._call(body)

    def supply(self) -> tuple[CurrencySupply, ...]:
        return self._call(lambda now: self._supply())

    def _supply(self) -> tuple[CurrencySupply, ...]:
        holdings = self._holdings()
        supply = []
        for currency, issued, redeemed in self._conn.execute(
            "SELECT currency, issued_minor, redeemed_minor FROM supply ORDER BY currency"
        ).fetchall():
            sums = holdings.get(currency, _NO_HOLDINGS)
            supply.append(
                CurrencySupply(currency, issued, redeemed, sums.held_minor, sums.reserved_minor)
            )
        return tuple(supply)

    def audit(self) -> AuditReport:
        return self._call(lambda now: AuditReport(self._supply(), tuple(self._problems())))

    def _problems(self) -> Iterator[str]:
        """Everything re-derived from the journal and the transfers, independent of the
        running balances the write path maintains."""
        balances: dict[int, int] = defaultdict(int)
        entry_sums: dict[tuple[int, str], int] = defaultdict(int)
        for entry_id, account_id, currency, amount in self._conn.execute(
            "SELECT entry_id, account_id, currency, amount_minor FROM postings"
        ):
            balances[account_id] += amount
            entry_sums[entry_id, currency] += amount
        for (entry_id, currency), total in sorted(entry_sums.items()):
            if total:
                yield f"entry {entry_id} does not balance in {currency}: {total}"
        reserved: dict[tuple[str, str, str], int] = defaultdict(int)
        for payer, provider, source_currency, source, target_currency, target in self._conn.execute(
            "SELECT payer_id, provider_id, source_currency, source_minor, target_currency, "
            "target_minor FROM transfers WHERE state = 'PREPARED'"
        ):
            reserved[payer, "SETTLEMENT", source_currency] += source
            reserved[provider, "LIQUIDITY", target_currency] += target
        for account_id, participant, kind, currency, balance, held in self._conn.execute(
            "SELECT account_id, participant_id, kind, currency, balance_minor, reserved_minor "
            "FROM accounts"
        ):
            name = f"{participant}/{kind}/{currency}"
            if balance != balances.get(account_id, 0):
                yield f"{name}: balance {balance} but its postings sum to {balances[account_id]}"
            if kind != "ISSUANCE" and not 0 <= held <= balance:
                yield f"{name}: reserved {held} outside 0..{balance}"
            if kind == "ISSUANCE" and balance > 0:
                yield f"{name}: an issuance account above zero ({balance})"
            holds = reserved.get((participant, kind, currency), 0)
            if held != holds:
                yield f"{name}: reserved {held} but prepared transfers hold {holds}"
        yield from self._supply_problems()
        yield from self._transfer_problems()
        yield from self._chain_problems()

    def _supply_problems(self) -> Iterator[str]:
        """issued and redeemed per currency, re-derived from the ISSUE and REDEEM entries (their
        postings on the issuance account), against the supply table; and, as at every write,
        issued - redeemed == held == -(the issuance balance)."""
        journal: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for kind, currency, amount in self._conn.execute(
            "SELECT e.kind, p.currency, p.amount_minor FROM entries e "
            "JOIN postings p ON p.entry_id = e.entry_id "
            "JOIN accounts a ON a.account_id = p.account_id "
            "WHERE e.kind IN ('ISSUE', 'REDEEM') AND a.kind = 'ISSUANCE'"
        ):
            # ISSUE: issuance -x, holder +x. REDEEM: holder -x, issuance +x.
            if kind == "ISSUE":
                journal[currency][0] -= amount
            else:
                journal[currency][1] += amount
        holdings = self._holdings()
        supply = self._supply()
        for s in supply:
            issued, redeemed = journal.get(s.currency, (0, 0))
            if (s.issued_minor, s.redeemed_minor) != (issued, redeemed):
                yield (
                    f"{s.currency}: supply says issued {s.issued_minor}, redeemed "
                    f"{s.redeemed_minor}; the ISSUE/REDEEM entries say issued {issued}, "
                    f"redeemed {redeemed}"
                )
            issuance = holdings.get(s.currency, _NO_HOLDINGS).issuance_minor
            if not s.outstanding_minor == s.held_minor == -issuance:
                yield (
                    f"{s.currency}: issued {s.issued_minor} - redeemed {s.redeemed_minor} "
                    f"!= held {s.held_minor} (issuance account {issuance})"
                )
        for currency in sorted(journal.keys() - {s.currency for s in supply}):
            yield f"{currency}: ISSUE/REDEEM entries but no supply row"

    def _transfer_problems(self) -> Iterator[str]:
        """Each transfer's entries, and each committed transfer's postings, role by role,
        against its record."""
        entries: dict[str, int] = defaultdict(int)
        for (transfer_id,) in self._conn.execute(
            "SELECT transfer_id FROM entries WHERE kind = 'TRANSFER'"
        ):
            entries[transfer_id] += 1
        posted: dict[str, list[_Leg]] = defaultdict(list)
        for transfer_id, role, participant, kind, currency, amount in self._conn.execute(
            "SELECT e.transfer_id, p.role, a.participant_id, a.kind, p.currency, p.amount_minor "
            "FROM entries e JOIN postings p ON p.entry_id = e.entry_id "
            "JOIN accounts a ON a.account_id = p.account_id WHERE e.kind = 'TRANSFER'"
        ):
            posted[transfer_id].append(_Leg(role, participant, AccountKind(kind), currency, amount))
        for row in self._conn.execute(
            "SELECT transfer_id, state, block_height, quote_id, payer_id, payee_id, provider_id, "
            "source_currency, source_minor, net_minor, spread_minor, target_currency, "
            "target_minor FROM transfers"
        ):
            transfer_id, state, block_height, quote_id = row[:4]
            payer, payee, provider, source_currency, source, net, spread = row[4:11]
            target_currency, target = row[11:]
            expected = 1 if state == "COMMITTED" else 0
            if entries.get(transfer_id, 0) != expected:
                yield f"transfer {transfer_id} ({state}) has {entries.get(transfer_id, 0)} entries"
            if block_height and state != "COMMITTED":
                yield f"transfer {transfer_id} ({state}) is in block {block_height}"
            if quote_id is None:
                continue  # a tombstone: no terms
            if net + spread != source:
                yield f"transfer {transfer_id}: net {net} + spread {spread} != source {source}"
            if state != "COMMITTED" or entries.get(transfer_id, 0) != 1:
                continue
            legs = _transfer_legs(
                payer,
                payee,
                provider,
                Money(source_currency, source),
                net,
                spread,
                Money(target_currency, target),
            )
            differ = _differing_roles(legs, posted.get(transfer_id, []))
            if differ:
                yield (
                    f"transfer {transfer_id}: postings disagree with its record "
                    f"({'; '.join(differ)})"
                )

    def _chain_problems(self) -> Iterator[str]:
        previous = ZERO_HASH
        expected_height = 1
        in_blocks: dict[str, int] = {}
        # Certificates a previous audit verified are verified again only if they changed
        # (bridges/_verified_chain.py); ``pending``: those not yet known to be unchanged.
        keys = tuple(sorted(self._public_keys.items()))
        memo = self._verified
        trusted_to = memo.height if memo is not None and memo.public_keys == keys else 0
        certificates = CertificateDigest()
        pending: list[tuple[int, BlockHeader, QuorumCertificate]] = []
        verified: VerifiedPrefix | None = None
        clean = True
        for (height,) in self._conn.execute("SELECT height FROM blocks ORDER BY height").fetchall():
            header = self._header(height)
            stored_hash = bytes(self._one("SELECT hash FROM blocks WHERE height = ?", (height,))[0])
            if height != expected_height:
                yield f"block heights skip to {height}"
            if header.previous_hash != previous:
                yield f"block {height} does not link to its predecessor"
            recomputed = header_hash(header)
            if recomputed != stored_hash:
                yield f"block {height}: stored hash is not the header's hash"
            qc = self._certificate(height)
            if qc is not None:
                certificates.add(height, recomputed, qc)
                pending.append((height, header, qc))
            # Up to the height verified before, wait for the digest there; above it, verify.
            if height >= trusted_to:
                if height > trusted_to or memo is None or certificates.digest() != memo.digest:
                    for problem in self._certificate_problems(pending):
                        clean = False
                        yield problem
                pending.clear()
            if qc is not None:
                verified = VerifiedPrefix(height, certificates.digest(), keys)
            records: list[TransferRecord] = []
            for transfer_id in header.transfer_ids:
                if transfer_id in in_blocks:
                    yield f"transfer {transfer_id} in blocks {in_blocks[transfer_id]} and {height}"
                in_blocks[transfer_id] = height
                row = self._one(
                    f"SELECT {_RECORD_COLUMNS}, block_height FROM transfers WHERE transfer_id = ?",
                    (transfer_id,),
                )
                if row is None or row[-1] != height:
                    yield f"block {height} lists {transfer_id}, which does not point back"
                if row is not None:
                    records.append(TransferRecord(*row[:-1]))
            if len(records) == len(header.transfer_ids):
                try:
                    digest = transfers_digest(records)
                except (struct.error, TypeError, ValueError):  # e.g. a negative amount
                    digest = b""
                if digest != header.transfers_digest:
                    yield f"block {height}: transfers_digest does not match its transfers' records"
            previous, expected_height = stored_hash, height + 1
        # The chain ends below the height verified before (blocks removed): check what is left.
        for problem in self._certificate_problems(pending):
            clean = False
            yield problem
        if clean:
            self._verified = verified
        for transfer_id, block_height in self._conn.execute(
            "SELECT transfer_id, block_height FROM transfers "
            "WHERE state = 'COMMITTED' AND block_height > 0"
        ):
            if in_blocks.get(transfer_id) != block_height:
                yield (
                    f"transfer {transfer_id} points to block {block_height}, which does not list it"
                )

    def _certificate_problems(
        self, blocks: Sequence[tuple[int, BlockHeader, QuorumCertificate]]
    ) -> Iterator[str]:
        for height, header, qc in blocks:
            if not verify_quorum_certificate(header, qc, self._public_keys):
                yield f"block {height}: the quorum certificate does not verify"


def _lost_error(what: str) -> BridgeError:
    return error(Reason.UNREACHABLE, f"the bridge's write was {what}: nothing of it was applied")


def _lost(results: list[tuple[bool, object]], start: int, what: str) -> None:
    """The calls from ``start`` on lost their writes with their group's transaction."""
    for i in range(start, len(results)):
        results[i] = (False, _lost_error(what))


def _insufficient(
    reason: Reason,
    participant_id: str,
    kind: AccountKind,
    currency: str,
    needed: int,
    available: int,
) -> BridgeError:
    return error(
        reason,
        f"{participant_id} has {available} {currency} minor units available in its "
        f"{kind.value} account, needs {needed}",
        participant_id=participant_id,
        account_kind=kind.value,
        currency=currency,
        needed_minor=str(needed),
        available_minor=str(available),
    )


def _injected(refusal: BridgeError) -> BridgeError:
    """A refusal made by fault injection: as the real one, marked ``injected=true``."""
    return error(
        refusal.reason,
        f"{refusal.message} (refused by fault injection)",
        **refusal.metadata,
        injected="true",
    )


def _differing_roles(expected: Sequence[_Leg], posted: Sequence[_Leg]) -> list[str]:
    """The roles whose postings are not as expected, each with what was posted and expected."""
    by_role: dict[str, tuple[list[_Leg], list[_Leg]]] = defaultdict(lambda: ([], []))
    for leg in expected:
        by_role[leg.role][0].append(leg)
    for leg in posted:
        by_role[leg.role][1].append(leg)

    def shown(legs: list[_Leg]) -> str:
        return (
            ", ".join(
                f"{leg.participant_id}/{leg.kind.value}/{leg.currency} {leg.amount_minor:+d}"
                for leg in legs
            )
            or "nothing"
        )

    return [
        f"{role}: posted {shown(posted_legs)}, the record says {shown(expected_legs)}"
        for role, (expected_legs, posted_legs) in sorted(by_role.items())
        if sorted(expected_legs, key=repr) != sorted(posted_legs, key=repr)
    ]


def _cannot_commit(transfer: Transfer) -> BridgeError:
    reason = {
        TransferState.ABORTED: Reason.TRANSFER_ALREADY_ABORTED,
        TransferState.EXPIRED: Reason.TRANSFER_EXPIRED,
        TransferState.REJECTED: Reason.TRANSFER_REJECTED,
    }[transfer.state]
    return error(
        reason,
        f"transfer {transfer.transfer_id} is {transfer.state.value}; it can never commit",
        transfer_id=transfer.transfer_id,
        state=transfer.state.value,
    )


def _terms(
    quote_id: str,
    payer_id: str,
    payee_id: str,
    provider_id: str,
    source: Money,
    target: Money,
    spread_minor: int,
    timeout_ms: int,
) -> TransferTerms:
    """A transfer's terms as its row records them (the spread is in the source currency)."""
    return TransferTerms(
        quote_id=quote_id,
        payer_id=payer_id,
        payee_id=payee_id,
        liquidity_provider_id=provider_id,
        source=source,
        target=target,
        spread=Money(source.currency, spread_minor),
        timeout_ms=timeout_ms,
    )


def _transfer_of(row: Sequence[Any]) -> Transfer:
    (
        transfer_id,
        state,
        quote_id,
        payer_id,
        payee_id,
        provider_id,
        source_currency,
        source_minor,
        _net_minor,
        spread_minor,
        target_currency,
        target_minor,
        timeout_ms,
        prepared_at_us,
        expires_at_us,
        resolved_at_us,
        rejection_reason,
        _message,
        _metadata,
        _commit_seq,
        block_height,
    ) = row
    terms = (
        None
        if quote_id is None
        else _terms(
            quote_id,
            payer_id,
            payee_id,
            provider_id,
            Money(source_currency, source_minor),
            Money(target_currency, target_minor),
            spread_minor,
            timeout_ms,
        )
    )
    return Transfer(
        transfer_id=transfer_id,
        state=TransferState(state),
        terms=terms,
        prepared_at_us=prepared_at_us,
        expires_at_us=expires_at_us,
        resolved_at_us=resolved_at_us,
        rejection_reason=rejection_reason,
        block_height=block_height,
    )


def _replayed_transfer(transfer: Transfer) -> Transfer:
    return replace(transfer, replayed=True)


def _replayed(participant: Participant) -> Participant:
    return replace(participant, replayed=True)


def _known(value: T | None) -> T:
    if value is None:
        raise error(Reason.INVARIANT_VIOLATED, "a row the ledger just wrote is missing")
    return value
