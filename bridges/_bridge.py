"""The in-process bridge: the ledger behind an async interface (:class:`bridges.BridgeAdminApi`).

Every call runs on one dedicated worker thread, in order, so the event loop never waits on
SQLite's fsync and the ledger never sees two calls at once. The transfer path (quote, prepare,
commit, abort, status, finality, tick) is group-committed: the calls that arrive while the
worker is busy run next as one group, in arrival order, in one transaction with a savepoint
each (:meth:`bridges._ledger.Ledger.run_group`), and are answered after its one COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from bridges import limits
from bridges._api import commit_then_finality, with_finality
from bridges._clock import Clock, SystemClock
from bridges._identity import CURRENT
from bridges._ledger import IN_MEMORY, CertifiedBlock, Ledger
from bridges._model import (
    AccountBalance,
    AccountKind,
    AuditReport,
    CurrencySupply,
    Finality,
    Issuance,
    MarketOrder,
    Money,
    Participant,
    PublishedRate,
    Quote,
    Rate,
    TickResult,
    Transfer,
    ValidatorSet,
)
from bridges.errors import Reason, error

T = TypeVar("T")


class Bridge:
    """The bridge, in this process. Open with :meth:`open`; ``close`` when done."""

    def __init__(
        self,
        ledger: Ledger,
        executor: ThreadPoolExecutor,
        reopen: Callable[[], Ledger],
        *,
        durable: bool = True,
    ) -> None:
        self._ledger = ledger
        self._executor = executor
        self._reopen = reopen
        self._durable = durable
        self._closed = False
        self._block_timer_ms: int | None = None
        # Group commit: calls waiting for the worker, and whether a drain is queued for them.
        self._lock = threading.Lock()
        self._waiting: list[tuple[Callable[[], object], asyncio.Future[object]]] = []
        self._drain_queued = False
        self._closing = False
        self._ledger_closed = False  # on the worker
        self._ticked: _Tick | None = None  # the tick in progress, or the next one

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        key_seed: bytes | None = None,
        chain_id: str = "condpay-mbridge",
    ) -> Bridge:
        """Open (or create) the bridge whose state is the SQLite file ``path`` (``":memory:"``
        for a throwaway one). ``seed`` makes quote ids reproducible; ``key_seed`` (32+ bytes)
        fixes the validator keys of a new state."""
        clock = clock or SystemClock()
        rng = random.Random(seed)

        def opener() -> Ledger:
            return Ledger.open(
                str(path), clock=clock, rng=rng, key_seed=key_seed, chain_id=chain_id
            )

        return await _open_with(opener, durable=str(path) not in IN_MEMORY)

    @property
    def durable(self) -> bool:
        """Whether the state is a file that outlives this Bridge (not ``":memory:"``), so that
        :meth:`reopen` finds it again."""
        return self._durable

    @property
    def block_timer_ms(self) -> int | None:
        """The interval of the block timer that ticks this bridge (the server's), or None when
        nothing ticks it on a timer: then :meth:`finality` seals waiting commits itself."""
        return self._block_timer_ms

    @block_timer_ms.setter
    def block_timer_ms(self, interval_ms: int | None) -> None:
        self._block_timer_ms = interval_ms
        self._tick_done()  # a finality call waiting on the old timer asks again

    async def reopen(self) -> Bridge:
        """A new Bridge over the same state file, as after a restart (this one must be closed).
        RuntimeError for an in-memory bridge: its state is gone, and reopening would start an
        empty ledger."""
        if not self._durable:
            raise RuntimeError(
                "an in-memory bridge (':memory:') cannot be reopened: it has no state file, and "
                "reopening would start an empty ledger; open it on a file to restart it"
            )
        bridge = await _open_with(self._reopen, durable=True)
        bridge.block_timer_ms = self._block_timer_ms
        return bridge

    async def _run(self, function: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        if self._closed:
            raise error(Reason.UNREACHABLE, "the bridge is closed")
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _grouped(self, function: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """As :meth:`_run`, group-committed with the calls that arrive while the worker is busy."""
        if self._closed or self._closing:
            raise error(Reason.UNREACHABLE, "the bridge is closed")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[object] = loop.create_future()
        with self._lock:
            self._waiting.append((functools.partial(function, *args, **kwargs), answer))
            queue_drain, self._drain_queued = not self._drain_queued, True
        if queue_drain:
            self._executor.submit(self._drain, loop)
        return await answer  # type: ignore[return-value]

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the worker: every call waiting now, as one group."""
        with self._lock:
            group, self._waiting = self._waiting, []
            self._drain_queued = False
        if not group:
            return
        if self._ledger_closed:
            results: list[tuple[bool, object]] = [
                (False, error(Reason.UNREACHABLE, "the bridge is closed"))
            ] * len(group)
        else:
            results = self._ledger.run_group([call for call, _ in group])
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(_answer, [answer for _, answer in group], results)

    def _close_ledger(self) -> None:
        self._ledger_closed = True
        self._ledger.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closing = True  # no new group; those queued before run first (one worker, FIFO)
        await self._run(self._close_ledger)
        self._closed = True
        self._executor.shutdown(wait=True)

    # ---------------------------------------------------------------- BridgeApi

    async def validators(self) -> ValidatorSet:
        return await self._run(self._ledger.validators)

    async def quote(
        self,
        source_currency: str,
        target_currency: str,
        *,
        source_amount_minor: int | None = None,
        target_amount_minor: int | None = None,
        liquidity_provider_id: str = "",
        ttl_ms: int = 0,
    ) -> Quote:
        return await self._grouped(
            self._ledger.quote,
            source_currency,
            target_currency,
            source_amount_minor=source_amount_minor,
            target_amount_minor=target_amount_minor,
            liquidity_provider_id=liquidity_provider_id,
            ttl_ms=ttl_ms,
            requested_by=_requester(),
        )

    async def prepare(
        self,
        transfer_id: str,
        *,
        quote_id: str,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
        refuse_with: Reason | None = None,
    ) -> Transfer:
        """``refuse_with`` is for fault injection: refuse (and remember) with that reason."""
        return await self._grouped(
            self._ledger.prepare,
            transfer_id,
            quote_id=quote_id,
            payer_id=payer_id,
            payee_id=payee_id,
            timeout_ms=timeout_ms,
            refuse_with=refuse_with,
            requested_by=_requester(),
        )

    async def prepare_at_market(
        self,
        transfer_id: str,
        *,
        order: MarketOrder,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
        refuse_with: Reason | None = None,
    ) -> tuple[Quote, Transfer]:
        """``refuse_with`` is for fault injection, as :meth:`prepare`'s."""
        return await self._grouped(
            self._ledger.prepare_at_market,
            transfer_id,
            order=order,
            payer_id=payer_id,
            payee_id=payee_id,
            timeout_ms=timeout_ms,
            refuse_with=refuse_with,
            requested_by=_requester(),
        )

    async def commit(self, transfer_id: str) -> Transfer:
        return await self._grouped(self._ledger.commit, transfer_id)

    async def commit_final(self, transfer_id: str) -> tuple[Transfer, Finality]:
        """With a block timer, the commit's block is waited for without reading first: a
        commit just written is in no block yet (the tick to wait for is the first that ends
        after the commit began)."""
        if self._block_timer_ms is None:
            return await commit_then_finality(self, transfer_id)
        ticked = self._next_tick()
        transfer = await self.commit(transfer_id)
        # (a replayed commit may be in a block already: read first)
        wait = None if transfer.replayed else ticked
        return await with_finality(transfer, self._finality_after(transfer_id, wait))

    async def abort(self, transfer_id: str) -> Transfer:
        return await self._grouped(self._ledger.abort, transfer_id)

    async def status(self, transfer_id: str) -> Transfer:
        return await self._grouped(self._ledger.status, transfer_id)

    async def finality(self, transfer_id: str) -> Finality:
        """Without a block timer: waiting commits are sealed and certified now. With one: the
        answer waits for the block the timer seals next (at most ``FINALITY_WAIT_MS``), so a
        block is certified once for every commit that waited for it; it is answered at once
        when final, and when the quorum is short (no block can be certified until it is back).
        Not final within the bound: answered as it is (the caller asks again)."""
        if self._block_timer_ms is None:
            return await self._grouped(self._ledger.finality, transfer_id)
        return await self._finality_after(transfer_id, None)

    async def _finality_after(self, transfer_id: str, ticked: _Tick | None) -> Finality:
        """The timer's finality: read, and while not final wait for the next tick and read
        again, within ``FINALITY_WAIT_MS``; a tick that certified the transfer's block answers
        without reading. ``ticked``: a tick to wait for before the first read (one armed before
        a commit that no block can hold yet)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + limits.FINALITY_WAIT_MS / 1000
        while True:
            if ticked is None:
                ticked = self._next_tick()  # before reading: a tick ending after the read counts
                answer = await self._grouped(self._ledger.finality, transfer_id, seal=False)
                if answer.final or not self._ledger.quorum_available():
                    return answer
            remaining = give_up - loop.time()
            if remaining <= 0:
                return await self._grouped(self._ledger.finality, transfer_id, seal=False)
            try:
                async with asyncio.timeout(remaining):  # (not wait_for: never swallows a cancel)
                    await ticked.ended.wait()
            except TimeoutError:
                return await self._grouped(self._ledger.finality, transfer_id, seal=False)
            block = ticked.certified.get(transfer_id)
            if block is not None:
                return block.finality(transfer_id)
            ticked = None

    def _next_tick(self) -> _Tick:
        if self._ticked is None:
            self._ticked = _Tick()
        return self._ticked

    def _tick_done(self, certified: Iterable[CertifiedBlock] = ()) -> None:
        ticked, self._ticked = self._ticked, None
        if ticked is not None:
            ticked.end(certified)

    async def balances(self, participant_id: str = "") -> tuple[AccountBalance, ...]:
        return await self._run(self._ledger.balances, participant_id)

    async def supply(self) -> tuple[CurrencySupply, ...]:
        return await self._run(self._ledger.supply)

    # ---------------------------------------------------------------- BridgeAdminApi

    async def register_bank(self, participant_id: str, *, name: str = "") -> Participant:
        return await self._run(self._ledger.register_bank, participant_id, name)

    async def register_liquidity_provider(
        self, participant_id: str, *, spread_ppm: int
    ) -> Participant:
        return await self._run(self._ledger.register_liquidity_provider, participant_id, spread_ppm)

    async def publish_rate(self, currency: str, value: Rate) -> PublishedRate:
        return await self._run(self._ledger.publish_rate, currency, value)

    async def issue(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        return await self._run(self._ledger.issue, request_id, participant_id, amount, account_kind)

    async def redeem(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        return await self._run(
            self._ledger.redeem, request_id, participant_id, amount, account_kind
        )

    async def audit(self) -> AuditReport:
        return await self._run(self._ledger.audit)

    async def tick(self) -> TickResult:
        """The blocks it certifies answer the commits waiting for them, once they are durable
        (a tick that fails tells them nothing: they read)."""
        certified: list[CertifiedBlock] = []
        try:
            result = await self._grouped(self._ledger.tick, certified)
        except BaseException:
            self._tick_done()
            raise
        self._tick_done(certified)
        return result

    # ---------------------------------------------------------------- the simulated platform

    async def participants(self) -> tuple[Participant, ...]:
        return await self._run(self._ledger.participants)

    async def set_validator_faults(
        self, *, down: Iterable[str] = (), no_quorum: bool = False
    ) -> None:
        """Take validators down (they stop signing), or hold the signers one short of a quorum.
        In memory only: a restart brings every validator back unless told otherwise."""
        await self._run(self._ledger.set_validator_faults, frozenset(down), no_quorum)


class _Tick:
    """One tick of the block timer, as the finality calls waiting for it see it: whether it
    ended, and the blocks it certified, by the transfers they hold."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.certified: dict[str, CertifiedBlock] = {}

    def end(self, certified: Iterable[CertifiedBlock]) -> None:
        for block in certified:
            self.certified.update(dict.fromkeys(block.header.transfer_ids, block))
        self.ended.set()


def _answer(answers: list[asyncio.Future[object]], results: list[tuple[bool, object]]) -> None:
    for answer, (ok, value) in zip(answers, results, strict=True):
        if answer.done():  # its caller gave up (cancelled)
            continue
        if ok:
            answer.set_result(value)
        else:
            assert isinstance(value, BaseException)
            answer.set_exception(value)


def _requester() -> str:
    """The participant the gRPC server is calling for (bridges/_identity.py), "" in process."""
    caller = CURRENT.get()
    return "" if caller is None else str(caller)


async def _open_with(opener: Callable[[], Ledger], *, durable: bool) -> Bridge:
    executor = ThreadPoolExecutor(1, thread_name_prefix="bridge-ledger")
    try:
        ledger = await asyncio.get_running_loop().run_in_executor(executor, opener)
    except BaseException:
        executor.shutdown(wait=False)
        raise
    return Bridge(ledger, executor, opener, durable=durable)
