"""Load through the SDK while the database fails over, and the books kept on it: what was
attempted, acknowledged or refused, by request id, and afterwards, from the database itself,
whether every acknowledged operation is there exactly once.

Shared by the failover test (tests/test_ha_failover.py) and the drill (tests/drills/ha.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from condpay.client import CHANNEL_OPTIONS, Client, RetryPolicy
from condpay.errors import ApiError, from_rpc_error
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.bench.ledger_setup import CURRENCY, INSTITUTION, BenchLedger

AMOUNT_MINOR = 1_00
# Every call rides out a failover on the SDK's own retries (same request id, same bytes): the
# whole call may take this long before it is counted as refused.
DRILL_RETRY = RetryPolicy(deadline_seconds=60.0, attempt_timeout_seconds=10.0)


class AttemptErrors(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts every failed attempt by ``CODE/REASON`` (``CODE`` alone when the server gave no
    reason, e.g. no replica reachable): what the clients saw, retries included, before the SDK
    retried it away."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            reason = from_rpc_error(error).reason
            self.by_reason[f"{error.code().name}/{reason}" if reason else error.code().name] += 1
        return call


def round_robin_channel(
    addresses: Sequence[str], errors: AttemptErrors | None = None
) -> grpc.aio.Channel:
    """One channel over several replicas: gRPC's ``ipv4:`` list with the round_robin policy and
    client-side health checking, so that a replica that answers NOT_SERVING (no primary behind
    it) or is gone gets no calls while another can take them."""
    target = "ipv4:" + ",".join(addresses)
    service_config = (
        '{"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}'
    )
    options = [*CHANNEL_OPTIONS, ("grpc.service_config", service_config)]
    return grpc.aio.insecure_channel(
        target, options=options, interceptors=[errors] if errors is not None else None
    )


@dataclass
class Tally:
    """What the clients saw: per kind of operation, request ids acknowledged, refused (with the
    reason), and the time of each acknowledgement."""

    attempted: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)
    errors_by_reason: Counter[str] = field(default_factory=Counter)
    ack_times: list[float] = field(default_factory=list)  # monotonic
    retries: int = 0
    # Acknowledgements answered from a stored outcome: the call's first attempt committed (on the
    # old primary, reaching the standby) and its answer was lost, so the retry got the replay.
    replayed: int = 0

    def ack(self, kind: str, request_id: str) -> None:
        self.acknowledged.setdefault(kind, []).append(request_id)
        self.ack_times.append(time.monotonic())

    def refuse(self, kind: str, request_id: str, reason: str) -> None:
        self.refused.setdefault(kind, []).append(request_id)
        self.errors_by_reason[reason] += 1

    def first_ack_after(self, moment: float) -> float | None:
        later = [t for t in self.ack_times if t > moment]
        return min(later) if later else None

    def count(self, book: dict[str, list[str]]) -> int:
        return sum(len(v) for v in book.values())


def reason_of(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return error.reason or error.code.name
    return type(error).__name__


class TransferLoad:
    """``workers`` tasks, worker ``i`` paying 1.00 CNY from payer ``i`` to payee ``i`` over and
    over, each transfer under a request id of its own (``<tag>-<i>-<n>``), until stopped."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        ledger: BenchLedger,
        tally: Tally,
        *,
        workers: int,
        tag: str = "t",
    ) -> None:
        self._client = Client("unused", caller=INSTITUTION, channel=channel, retry=DRILL_RETRY)
        self._ledger, self._tally, self._tag = ledger, tally, tag
        self._workers = min(workers, len(ledger.payers))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(i), name=f"transfers-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        """Stop sending new transfers; wait for those in flight to finish."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tally.retries += self._client.retries

    async def _work(self, i: int) -> None:
        payer, payee = self._ledger.payers[i], self._ledger.payees[i]
        n = 0
        while not self._stop.is_set():
            request_id = f"{self._tag}-{i}-{n}"
            n += 1
            self._tally.attempted["transfer"] += 1
            request = self._client.transfer_request(
                payer.key, payer.wallet_id, payee, CURRENCY, AMOUNT_MINOR, request_id=request_id
            )
            try:
                reply = await self._client.send(request)
            except ApiError as error:
                self._tally.refuse("transfer", request_id, reason_of(error))
            else:
                self._tally.ack("transfer", request_id)
                self._tally.replayed += bool(reply.operation.replayed)


class HealthWatch:
    """Polls one server's health every ``period_seconds``: the statuses seen, with their times."""

    def __init__(self, address: str, period_seconds: float = 0.1) -> None:
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self._period_seconds = period_seconds
        self.seen: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-watch")

    async def _run(self) -> None:
        while True:
            try:
                reply = await self._stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                status = error.code().name
            if not self.seen or self.seen[-1][1] != status:
                self.seen.append((time.monotonic(), status))
            await asyncio.sleep(self._period_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()

    def statuses_after(self, moment: float) -> list[str]:
        return [status for t, status in self.seen if t >= moment]


@dataclass(frozen=True)
class Books:
    """What the database holds for the request ids of one caller."""

    lost: list[str]  # acknowledged, no journal entry
    applied_twice: list[str]  # more than one journal entry
    refused_but_applied: list[str]  # the client gave up, the effect is there (once)
    entries: int


async def check_books(dsn: str, caller: str, acknowledged: list[str], refused: list[str]) -> Books:
    """Count the journal entries of each request id of ``caller`` on the primary."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT request_id, count(*) FROM journal_entries WHERE caller = $1 "
            "GROUP BY request_id",
            caller,
        )
    finally:
        await conn.close()
    counts = {r[0]: r[1] for r in rows}
    return Books(
        lost=[r for r in acknowledged if counts.get(r, 0) == 0],
        applied_twice=sorted(r for r, c in counts.items() if c > 1),
        refused_but_applied=[r for r in refused if counts.get(r, 0) >= 1],
        entries=sum(counts.values()),
    )
