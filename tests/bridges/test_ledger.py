"""The ledger's invariants after every operation: a hypothesis state machine drives random
quotes, prepares, commits, aborts, retries and clock moves, and audits after each step; plus
the write-side guards, genesis and the lifecycle's one-way doors."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bridges import CENTRAL_BANKS, AccountKind, ManualClock, Money, TransferState
from bridges._ledger import Ledger, _Posting
from bridges.errors import (
    BridgeError,
    InternalError,
    InvalidRequest,
    NotFound,
    QuorumUnavailable,
    Reason,
    TransferAborted,
    TransferCommitted,
    Unavailable,
)
from tests.bridges.conftest import KEY_SEED, RATES

BANKS = ("A", "B", "C")
LP = "LP"
TRANSFER_IDS = tuple(f"t-{i}" for i in range(4))
CURRENCIES = tuple(sorted(RATES))


def new_ledger(path: str = ":memory:", clock: ManualClock | None = None) -> Ledger:
    ledger = Ledger.open(
        path, clock=clock or ManualClock(), rng=random.Random(3), key_seed=KEY_SEED
    )
    for bank in (*BANKS, LP):
        ledger.register_bank(bank)
    ledger.register_liquidity_provider(LP, 3_000)
    for currency, value in RATES.items():
        ledger.publish_rate(currency, value)
        for bank in BANKS:
            ledger.issue(
                f"{bank}-{currency}", bank, Money(currency, 50_000_00), AccountKind.SETTLEMENT
            )
        ledger.issue(f"lp-{currency}", LP, Money(currency, 200_000_00), AccountKind.LIQUIDITY)
    return ledger


class TwoPhaseLifecycle(RuleBasedStateMachine):
    """The model: each transfer id's first terminal state is forever; the audit is clean after
    every step (supply == balances, entries balance, reservations == prepared transfers, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.ledger = new_ledger(clock=self.clock)
        self.quotes: list[str] = []
        self.terminal: dict[str, TransferState] = {}
        self.prepared_terms: dict[str, tuple[str, str, str, int]] = {}

    def teardown(self) -> None:
        self.ledger.close()

    @rule(
        pair=st.sampled_from([(s, t) for s in CURRENCIES for t in CURRENCIES if s != t]),
        amount=st.integers(min_value=1_00, max_value=30_000_00),
        by_target=st.booleans(),
        ttl_ms=st.sampled_from([50, 30_000, 30_000]),
    )
    def quote(self, pair: tuple[str, str], amount: int, by_target: bool, ttl_ms: int) -> None:
        source, target = pair
        kwargs = {"target_amount_minor" if by_target else "source_amount_minor": amount}
        try:
            quote = self.ledger.quote(source, target, ttl_ms=ttl_ms, **kwargs)  # type: ignore[arg-type]
        except BridgeError as exc:
            refusal = exc
        else:
            self.quotes.append(quote.quote_id)
            return
        assert refusal.reason is Reason.AMOUNT_TOO_SMALL

    @precondition(lambda self: self.quotes)
    @rule(
        transfer_id=st.sampled_from(TRANSFER_IDS),
        pick=st.integers(min_value=0),
        payer=st.sampled_from(BANKS),
        payee=st.sampled_from(BANKS),
        timeout_ms=st.sampled_from([1, 100, 10_000, 10_000]),
    )
    def prepare(self, transfer_id: str, pick: int, payer: str, payee: str, timeout_ms: int) -> None:
        terms = self.prepared_terms.get(transfer_id) or (
            self.quotes[pick % len(self.quotes)],
            payer,
            payee,
            timeout_ms,
        )
        quote_id, payer, payee, timeout_ms = terms
        try:
            transfer = self.ledger.prepare(
                transfer_id,
                quote_id=quote_id,
                payer_id=payer,
                payee_id=payee,
                timeout_ms=timeout_ms,
            )
        except BridgeError as exc:
            refusal = exc
        else:
            self.prepared_terms.setdefault(transfer_id, terms)
            self._observe(transfer_id, transfer.state)
            return
        if isinstance(refusal, TransferAborted):  # an abort came first and left a tombstone
            assert refusal.reason is Reason.TRANSFER_ALREADY_ABORTED
            assert self.terminal.get(transfer_id) is TransferState.ABORTED
            assert transfer_id not in self.prepared_terms
            return
        assert refusal.reason in {
            Reason.QUOTE_EXPIRED,
            Reason.QUOTE_ALREADY_USED,
            Reason.INSUFFICIENT_FUNDS,
            Reason.INSUFFICIENT_LIQUIDITY,
        }, refusal
        self.prepared_terms.setdefault(transfer_id, terms)
        self._observe(transfer_id, TransferState.REJECTED)

    @rule(transfer_id=st.sampled_from(TRANSFER_IDS))
    def commit(self, transfer_id: str) -> None:
        known = self.terminal.get(transfer_id)
        try:
            transfer = self.ledger.commit(transfer_id)
        except TransferAborted:
            assert known is not TransferState.COMMITTED
            self._observe(transfer_id, self.ledger.status(transfer_id).state)
            return
        except NotFound:
            assert transfer_id not in self.prepared_terms
            assert known is None
            return
        assert transfer.state is TransferState.COMMITTED
        assert known in {None, TransferState.COMMITTED}
        self._observe(transfer_id, TransferState.COMMITTED)

    @rule(transfer_id=st.sampled_from(TRANSFER_IDS))
    def abort(self, transfer_id: str) -> None:
        known = self.terminal.get(transfer_id)
        try:
            transfer = self.ledger.abort(transfer_id)
        except TransferCommitted:
            assert known is TransferState.COMMITTED
            return
        assert known is not TransferState.COMMITTED
        self._observe(transfer_id, transfer.state)

    @rule(ms=st.sampled_from([1, 60, 150, 20_000]))
    def advance_clock(self, ms: int) -> None:
        self.clock.advance_ms(ms)

    @rule()
    def tick(self) -> None:
        self.ledger.tick()

    def _observe(self, transfer_id: str, state: TransferState) -> None:
        if state.final:
            first = self.terminal.setdefault(transfer_id, state)
            assert first is state, f"{transfer_id} went from {first} to {state}"

    @invariant()
    def audit_is_clean(self) -> None:
        report = self.ledger.audit()
        assert report.problems == (), report.problems

    @invariant()
    def terminal_states_are_forever(self) -> None:
        for transfer_id, state in self.terminal.items():
            assert self.ledger.status(transfer_id).state is state


TwoPhaseLifecycle.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)
test_two_phase_lifecycle = TwoPhaseLifecycle.TestCase


def test_genesis_has_five_central_banks_with_issuance_accounts_and_validators() -> None:
    ledger = Ledger.open(":memory:", clock=ManualClock(), rng=random.Random(0), key_seed=KEY_SEED)
    try:
        assert CENTRAL_BANKS == {
            "PBoC": "CNY",
            "HKMA": "HKD",
            "BOT": "THB",
            "CBUAE": "AED",
            "SAMA": "SAR",
        }
        participants = {p.participant_id: p for p in ledger.participants()}
        assert {i: p.currency for i, p in participants.items()} == CENTRAL_BANKS
        assert participants["PBoC"].name == "People's Bank of China"
        balances = ledger.balances()
        assert {(b.participant_id, b.kind, b.currency) for b in balances} == {
            (bank, AccountKind.ISSUANCE, currency) for bank, currency in CENTRAL_BANKS.items()
        }
        validators = ledger.validators()
        assert [v.validator_id for v in validators.validators] == sorted(CENTRAL_BANKS)
        assert validators.threshold == 4
        assert ledger.audit().ok
    finally:
        ledger.close()


def test_an_unbalanced_entry_is_refused_and_rolled_back() -> None:
    ledger = new_ledger()
    try:
        before = ledger.balances("A")
        account = ledger._account("A", AccountKind.SETTLEMENT, "CNY")[0]
        with pytest.raises(InternalError) as caught, ledger._tx():
            ledger._post("ISSUE", [_Posting(account, "CNY", 1, "holder")], now=0)
        assert caught.value.reason is Reason.INVARIANT_VIOLATED
        assert ledger.balances("A") == before
        assert ledger.audit().ok
    finally:
        ledger.close()


def test_an_overdraft_is_refused_by_the_write_path_and_by_the_schema() -> None:
    ledger = new_ledger()
    try:
        a = ledger._account("A", AccountKind.SETTLEMENT, "CNY")[0]
        b = ledger._account("B", AccountKind.SETTLEMENT, "CNY")[0]
        with pytest.raises(InternalError), ledger._tx():
            ledger._post(
                "TRANSFER",
                [_Posting(a, "CNY", -60_000_00, "payer"), _Posting(b, "CNY", 60_000_00, "payee")],
                now=0,
            )
        with pytest.raises(sqlite3.IntegrityError), ledger._tx():  # the CHECK constraint
            ledger._conn.execute(
                "UPDATE accounts SET balance_minor = -1 WHERE account_id = ?", (a,)
            )
        assert ledger.audit().ok
    finally:
        ledger.close()


def test_supply_is_redeemable_only_up_to_what_is_available() -> None:
    ledger = new_ledger()
    try:
        redeemed = ledger.redeem("r-1", "A", Money("HKD", 50_000_00), AccountKind.SETTLEMENT)
        assert redeemed.account.balance_minor == 0
        hkd = next(s for s in ledger.supply() if s.currency == "HKD")
        assert (hkd.issued_minor, hkd.redeemed_minor) == (3 * 50_000_00 + 200_000_00, 50_000_00)
        assert hkd.held_minor == hkd.outstanding_minor
        with pytest.raises(BridgeError) as caught:
            ledger.redeem("r-2", "A", Money("HKD", 1), AccountKind.SETTLEMENT)
        assert caught.value.reason is Reason.INSUFFICIENT_FUNDS
        with pytest.raises(InvalidRequest):
            ledger.issue("i-x", "HKMA", Money("HKD", 1), AccountKind.SETTLEMENT)  # not a bank
    finally:
        ledger.close()


def test_amounts_beyond_int64_are_refused() -> None:
    ledger = new_ledger()
    try:
        with pytest.raises(BridgeError) as caught:
            ledger.issue("big", "A", Money("CNY", 2**63 - 1), AccountKind.SETTLEMENT)
        assert caught.value.reason is Reason.AMOUNT_OVERFLOW
        with pytest.raises(InvalidRequest):
            ledger.issue("bigger", "A", Money("CNY", 2**63), AccountKind.SETTLEMENT)
        assert ledger.audit().ok
    finally:
        ledger.close()


def test_no_prepare_without_a_quorum_but_aborts_still_work() -> None:
    ledger = new_ledger()
    try:
        quote = ledger.quote("CNY", "HKD", source_amount_minor=100_00)
        ledger.prepare("t-1", quote_id=quote.quote_id, payer_id="A", payee_id="B", timeout_ms=9_000)
        ledger.set_validator_faults(frozenset({"BOT", "SAMA"}), False)
        other = ledger.quote("CNY", "HKD", source_amount_minor=100_00)
        with pytest.raises(QuorumUnavailable):
            ledger.prepare("t-2", quote_id=other.quote_id, payer_id="A", payee_id="B", timeout_ms=9)
        assert ledger.abort("t-1").state is TransferState.ABORTED
        with pytest.raises(ValueError, match="unknown validators"):
            ledger.set_validator_faults(frozenset({"ECB"}), False)
    finally:
        ledger.close()


def test_many_commits_are_batched_into_blocks_of_bounded_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridges import limits

    monkeypatch.setattr(limits, "BLOCK_TRANSFERS_MAX", 3)
    ledger = new_ledger()
    try:
        for i in range(7):
            quote = ledger.quote("THB", "SAR", source_amount_minor=10_00 + i)
            ledger.prepare(
                f"t-{i}", quote_id=quote.quote_id, payer_id="C", payee_id="A", timeout_ms=9_000
            )
            ledger.commit(f"t-{i}")
        # the third and the sixth commit filled a block at once; the seventh waits
        assert [ledger.status(f"t-{i}").block_height for i in range(7)] == [1, 1, 1, 2, 2, 2, 0]
        finality = ledger.finality("t-6")
        assert finality.block is not None
        assert finality.block.transfer_ids == ("t-6",)
        assert ledger.tick().final_height == 3
        assert ledger.audit().ok
    finally:
        ledger.close()


async def test_a_closed_bridge_answers_unavailable(tmp_path: Path) -> None:
    from bridges import Bridge

    bridge = await Bridge.open(tmp_path / "b.db", key_seed=KEY_SEED)
    await bridge.close()
    with pytest.raises(Unavailable):
        await bridge.status("t-1")


def test_an_old_state_files_block_index_is_recreated_to_serve_the_waiting_commits(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bridge.db")
    ledger = new_ledger(path)
    quote = ledger.quote("CNY", "HKD", source_amount_minor=100_00)
    ledger.prepare("t-1", quote_id=quote.quote_id, payer_id="A", payee_id="B", timeout_ms=9_000)
    ledger.commit("t-1")
    # The index as state files were first made: it did not lead with the state.
    ledger._conn.execute("DROP INDEX transfers_by_block")
    ledger._conn.execute("CREATE INDEX transfers_by_block ON transfers (block_height, commit_seq)")
    ledger.close()

    ledger = Ledger.open(path, clock=ManualClock(), rng=random.Random(3), key_seed=KEY_SEED)
    try:
        columns = [r[2] for r in ledger._conn.execute("PRAGMA index_info(transfers_by_block)")]
        assert columns == ["state", "block_height", "commit_seq"]
        plan = " ".join(
            str(row[3])
            for row in ledger._conn.execute(
                "EXPLAIN QUERY PLAN SELECT transfer_id FROM transfers "
                "WHERE state = 'COMMITTED' AND block_height = 0 ORDER BY commit_seq LIMIT 9"
            )
        )
        assert "INDEX transfers_by_block (state=? AND block_height=?)" in plan
        assert "TEMP B-TREE" not in plan  # already in commit order
        assert ledger.finality("t-1").final
        assert ledger.tick().final_height == 1
        assert ledger.audit().ok
    finally:
        ledger.close()


def test_quote_ids_are_numbered_in_sequence_across_refusals_and_reopens(tmp_path: Path) -> None:
    path = str(tmp_path / "bridge.db")
    ledger = new_ledger(path)
    draws = random.Random(3)  # new_ledger's rng: only quotes draw from it
    ids = [ledger.quote("CNY", "HKD", source_amount_minor=100_00).quote_id for _ in range(3)]
    with pytest.raises(BridgeError) as small:  # refused: no number used
        ledger.quote("THB", "CNY", source_amount_minor=1)
    assert small.value.reason is Reason.AMOUNT_TOO_SMALL
    ids.append(ledger.quote("CNY", "HKD", source_amount_minor=100_00).quote_id)
    ledger.close()
    ledger = Ledger.open(path, clock=ManualClock(), rng=draws, key_seed=KEY_SEED)
    try:
        expected_draws = random.Random(3)
        expected = [f"q{n:06d}-{expected_draws.getrandbits(48):012x}" for n in range(1, 5)]
        assert ids == expected
        assert ledger.quote("CNY", "HKD", source_amount_minor=1_00).quote_id.startswith("q000005-")
    finally:
        ledger.close()


@pytest.mark.parametrize("ttl_ms", [1.5, 0.0, 30_000.0, True, "500", -1, 600_001])
def test_a_quote_ttl_must_be_an_integer_in_range(ttl_ms: object) -> None:
    ledger = new_ledger()
    try:
        with pytest.raises(InvalidRequest) as caught:
            ledger.quote("CNY", "HKD", source_amount_minor=100_00, ttl_ms=ttl_ms)  # type: ignore[arg-type]
        assert caught.value.reason is Reason.INVALID_TTL
        assert "1..600000, or 0 for the default" in caught.value.message
    finally:
        ledger.close()


def test_a_quote_ttl_of_zero_is_the_default_and_the_maximum_is_taken() -> None:
    clock = ManualClock()
    ledger = new_ledger(clock=clock)
    try:
        now = clock.now_us()
        default = ledger.quote("CNY", "HKD", source_amount_minor=100_00, ttl_ms=0)
        assert default.expires_at_us == now + 30_000_000
        longest = ledger.quote("CNY", "HKD", source_amount_minor=100_00, ttl_ms=600_000)
        assert longest.expires_at_us == now + 600_000_000
    finally:
        ledger.close()


def test_a_conflicting_prepare_names_the_terms_that_differ() -> None:
    ledger = new_ledger()
    try:
        quote = ledger.quote("CNY", "HKD", source_amount_minor=100_00)
        ledger.prepare("t-1", quote_id=quote.quote_id, payer_id="A", payee_id="B", timeout_ms=9_000)
        with pytest.raises(BridgeError) as caught:
            ledger.prepare(
                "t-1", quote_id=quote.quote_id, payer_id="C", payee_id="B", timeout_ms=5_000
            )
        assert caught.value.reason is Reason.TRANSFER_EXISTS_WITH_DIFFERENT_TERMS
        assert caught.value.metadata == {"transfer_id": "t-1", "fields": "payer_id,timeout_ms"}
        assert caught.value.message.endswith("exists with different terms: payer_id, timeout_ms")
        with pytest.raises(BridgeError) as other:
            ledger.prepare("t-1", quote_id="q-other", payer_id="A", payee_id="B", timeout_ms=9_000)
        assert other.value.metadata["fields"] == "quote_id"
    finally:
        ledger.close()


def test_a_commit_stands_when_sealing_the_full_block_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bridges import limits

    monkeypatch.setattr(limits, "BLOCK_TRANSFERS_MAX", 1)
    ledger = new_ledger()
    try:
        quote = ledger.quote("CNY", "HKD", source_amount_minor=100_00)
        ledger.prepare("t-1", quote_id=quote.quote_id, payer_id="A", payee_id="B", timeout_ms=9_000)

        def certify_fails(*args: object) -> bool:
            raise InternalError(Reason.INTERNAL, "a validator fell over")

        with monkeypatch.context() as patch:
            patch.setattr(ledger, "_certify", certify_fails)
            with caplog.at_level("ERROR", logger="bridges._ledger"):
                committed = ledger.commit("t-1")  # durable: no error for it
        assert (committed.state, committed.replayed) == (TransferState.COMMITTED, False)
        assert "transfer t-1 committed; sealing the full block failed" in caplog.text
        assert ledger.status("t-1").block_height == 0  # the failed seal was rolled back
        finality = ledger.finality("t-1")  # sealing is left to the next tick or finality()
        assert finality.final
        assert finality.block is not None
        assert finality.block.transfer_ids == ("t-1",)
        assert ledger.audit().ok
    finally:
        ledger.close()
