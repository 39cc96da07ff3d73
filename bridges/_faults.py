"""Fault injection for the core's tests and the simulator: a typed plan, deterministic from a seed.

A :class:`FaultPlan` says what goes wrong; :class:`FaultyBridge` puts it between a caller and a
:class:`bridges.Bridge` (the gRPC server puts one in front of its bridge, so the same plan means
the same thing on both transports). Each affected call draws its fate from one
``random.Random(seed)``, always the same number of draws per call, so a seed replays exactly.

==========================  ==============================================================
switch                      effect
==========================  ==============================================================
``latency_ms=N|MIN..MAX``   each affected call waits that long (uniform in MIN..MAX) first
``drop_request[=P]``        the call never arrives: nothing happens, the caller gets
                            Unavailable (UNREACHABLE)
``drop_reply[=P]``          the call takes effect, then the caller gets Unavailable
                            (UNREACHABLE), exactly as for a lost request
``duplicate[=P]``           the call is delivered twice; the caller sees the first answer
``reject[=P]``              prepare is refused with INSUFFICIENT_LIQUIDITY, with a real one's
                            metadata plus injected=true (remembered, as a real refusal:
                            retries are refused alike)
``crash_after_prepare[=P]`` a prepare is durable (the legs reserved) and the bridge dies
                            before answering
``crash_before_commit[=P]`` a commit arrives and the bridge dies before writing it
``crash_after_commit[=P]``  a commit is durable and the bridge dies before answering
``quote_ttl_ms=N``          quotes asked for without a TTL are firm for N ms only (not a
                            per-call fault: every quote; so one can expire mid-flight)
``validators_down=A+B``     those validators stop signing (blocks lack their signatures)
``no_quorum``               the signers are held one short of 2/3: new prepares are refused
                            (QUORUM_UNAVAILABLE), commits stay committed-but-not-final
``on=prepare+commit``       which operations the per-call faults hit (default: quote,
                            prepare, commit, abort)
``seed=N``                  the seed of the draws
==========================  ==============================================================

P is a percentage, 0..100 (default 100). Spelled as one comma-separated string (``serve --fault``,
repeatable, or ``CONDPAY_BRIDGE_FAULTS``; ``CONDPAY_BRIDGE_FAULT_SEED`` sets the seed), e.g.
``drop_reply=30,latency_ms=5..20,on=commit,seed=7``.

A crash in the gRPC server is ``os._exit(86)`` (no cleanup, as SIGKILL). In process, the bridge
is closed on the spot and every later call is Unavailable until :meth:`FaultyBridge.restart`
(which needs a state file: an in-memory bridge cannot be restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Final, NoReturn, TypeVar

from bridges import limits
from bridges._api import commit_then_finality
from bridges._bridge import Bridge
from bridges._model import (
    CENTRAL_BANKS,
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
from bridges.errors import BridgeError, Reason, error

T = TypeVar("T")
ENV_FAULTS: Final = "CONDPAY_BRIDGE_FAULTS"
ENV_SEED: Final = "CONDPAY_BRIDGE_FAULT_SEED"


class Operation(enum.Enum):
    QUOTE = "quote"
    PREPARE = "prepare"
    COMMIT = "commit"
    ABORT = "abort"
    STATUS = "status"
    FINALITY = "finality"
    VALIDATORS = "validators"
    BALANCES = "balances"
    SUPPLY = "supply"


TRANSFER_OPERATIONS: Final = frozenset(
    {Operation.QUOTE, Operation.PREPARE, Operation.COMMIT, Operation.ABORT}
)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    seed: int = 0
    latency_ms_min: int = 0
    latency_ms_max: int = 0
    drop_request_percent: int = 0
    drop_reply_percent: int = 0
    duplicate_percent: int = 0
    reject_percent: int = 0
    crash_before_commit_percent: int = 0
    crash_after_commit_percent: int = 0
    crash_after_prepare_percent: int = 0
    quote_ttl_ms: int = 0
    validators_down: frozenset[str] = frozenset()
    no_quorum: bool = False
    operations: frozenset[Operation] = field(default=TRANSFER_OPERATIONS)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.endswith("_percent") and not 0 <= getattr(self, f.name) <= 100:
                raise ValueError(f"{f.name} must be in 0..100")
        if not 0 <= self.latency_ms_min <= self.latency_ms_max:
            raise ValueError("latency must satisfy 0 <= min <= max")
        if not 0 <= self.quote_ttl_ms <= limits.QUOTE_TTL_MS_MAX:
            raise ValueError(f"quote_ttl_ms must be in 0..{limits.QUOTE_TTL_MS_MAX}")
        unknown = self.validators_down - set(CENTRAL_BANKS)
        if unknown:
            raise ValueError(
                f"unknown validators {sorted(unknown)}; known: {sorted(CENTRAL_BANKS)}"
            )

    @property
    def enabled(self) -> bool:
        return self != FaultPlan(seed=self.seed)

    @classmethod
    def parse(cls, specs: str | Iterable[str], *, seed: int | None = None) -> FaultPlan:
        """``"drop_reply=30,on=commit"`` (or several such strings) -> a plan; ValueError when
        a switch is unknown or malformed."""
        items = [specs] if isinstance(specs, str) else list(specs)
        values: dict[str, object] = {}
        for item in (p.strip() for spec in items for p in spec.split(",")):
            if not item:
                continue
            name, has_value, value = item.partition("=")
            name = name.strip()
            value = value.strip()
            if name == "latency_ms":
                low, _, high = value.partition("..")
                values["latency_ms_min"] = _int(low, name)
                values["latency_ms_max"] = _int(high or low, name)
            elif name == "quote_ttl_ms":
                values["quote_ttl_ms"] = _int(value, name)
            elif name in _PERCENT_SWITCHES:
                values[f"{name}_percent"] = _int(value, name) if has_value else 100
            elif name == "validators_down":
                values["validators_down"] = frozenset(v for v in value.split("+") if v)
            elif name == "no_quorum":
                values["no_quorum"] = not has_value or value.lower() in {"1", "true", "yes"}
            elif name == "on":
                try:
                    values["operations"] = frozenset(Operation(o) for o in value.split("+") if o)
                except ValueError:
                    raise ValueError(
                        f"on={value!r}: operations are {[o.value for o in Operation]}"
                    ) from None
            elif name == "seed":
                values["seed"] = _int(value, name)
            else:
                raise ValueError(f"unknown fault switch {name!r}; known: {sorted(_SWITCHES)}")
        if seed is not None:
            values["seed"] = seed
        return replace(cls(), **values)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FaultPlan:
        env = os.environ if env is None else env
        seed = env.get(ENV_SEED)
        return cls.parse(env.get(ENV_FAULTS, ""), seed=None if seed is None else int(seed))

    def spec(self) -> str:
        """The plan as a spec string that :meth:`parse` reads back to an equal plan."""
        parts: list[str] = []
        if self.latency_ms_max:
            parts.append(f"latency_ms={self.latency_ms_min}..{self.latency_ms_max}")
        for name in _PERCENT_SWITCHES:
            percent = getattr(self, f"{name}_percent")
            if percent:
                parts.append(f"{name}={percent}")
        if self.quote_ttl_ms:
            parts.append(f"quote_ttl_ms={self.quote_ttl_ms}")
        if self.validators_down:
            parts.append("validators_down=" + "+".join(sorted(self.validators_down)))
        if self.no_quorum:
            parts.append("no_quorum")
        if self.operations != TRANSFER_OPERATIONS:
            parts.append("on=" + "+".join(sorted(o.value for o in self.operations)))
        parts.append(f"seed={self.seed}")
        return ",".join(parts)


_PERCENT_SWITCHES: Final = (
    "drop_request",
    "drop_reply",
    "duplicate",
    "reject",
    "crash_before_commit",
    "crash_after_commit",
    "crash_after_prepare",
)
_SWITCHES: Final = {
    *_PERCENT_SWITCHES,
    "latency_ms",
    "quote_ttl_ms",
    "validators_down",
    "no_quorum",
    "on",
    "seed",
}


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not an integer") from None


@dataclass(frozen=True, slots=True)
class Fate:
    """What happens to one call (drawn in this order, all of them every time)."""

    latency_ms: int
    drop_request: bool
    duplicate: bool
    drop_reply: bool
    reject: bool
    crash_before_commit: bool
    crash_after_commit: bool
    crash_after_prepare: bool


def exit_process(point: str) -> NoReturn:
    """The server's crash: no cleanup, no reply, as SIGKILL would."""
    os.write(2, f"condpay bridge: fault {point}: crashing\n".encode())
    os._exit(limits.CRASH_EXIT_STATUS)


class FaultyBridge:
    """A :class:`bridges.Bridge` behind a :class:`FaultPlan`; itself a ``BridgeAdminApi``.

    ``on_crash`` decides what a crash is: by default (in process) the bridge is closed and calls
    answer Unavailable until :meth:`restart`; the server passes :func:`exit_process`."""

    def __init__(
        self,
        inner: Bridge,
        plan: FaultPlan,
        *,
        on_crash: Callable[[str], NoReturn] | None = None,
    ) -> None:
        self._inner = inner
        self._plan = plan
        self._random = random.Random(plan.seed)
        self._on_crash = on_crash
        self._crashed = False
        self.fates: list[tuple[Operation, Fate]] = []

    @classmethod
    async def wrap(
        cls,
        inner: Bridge,
        plan: FaultPlan,
        *,
        on_crash: Callable[[str], NoReturn] | None = None,
    ) -> FaultyBridge:
        """Wrap ``inner`` and apply the plan's validator faults to it."""
        await inner.set_validator_faults(down=plan.validators_down, no_quorum=plan.no_quorum)
        return cls(inner, plan, on_crash=on_crash)

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @property
    def inner(self) -> Bridge:
        return self._inner

    @property
    def crashed(self) -> bool:
        return self._crashed

    async def set_plan(self, plan: FaultPlan) -> None:
        """Switch faults at run time (the draws restart from the new plan's seed)."""
        self._plan = plan
        self._random = random.Random(plan.seed)
        if not self._crashed:
            await self._inner.set_validator_faults(
                down=plan.validators_down, no_quorum=plan.no_quorum
            )

    async def restart(self, plan: FaultPlan | None = None) -> None:
        """The process restart after a crash: reopen the bridge from its state file.
        RuntimeError (and nothing changes) for an in-memory bridge, which has none."""
        if not self._inner.durable:
            raise RuntimeError(
                "cannot restart an in-memory bridge (':memory:'): it has no state file, and "
                "restarting would start an empty ledger; open it on a file to restart it"
            )
        if not self._crashed:
            await self._inner.close()
        self._inner = await self._inner.reopen()
        self._crashed = False
        await self.set_plan(plan if plan is not None else self._plan)

    def _draw(self, operation: Operation) -> Fate:
        r, plan = self._random, self._plan

        def chance(percent: int) -> bool:
            return r.randrange(100) < percent

        fate = Fate(
            latency_ms=r.randint(plan.latency_ms_min, plan.latency_ms_max),
            drop_request=chance(plan.drop_request_percent),
            duplicate=chance(plan.duplicate_percent),
            drop_reply=chance(plan.drop_reply_percent),
            reject=chance(plan.reject_percent) and operation is Operation.PREPARE,
            crash_before_commit=chance(plan.crash_before_commit_percent)
            and operation is Operation.COMMIT,
            crash_after_commit=chance(plan.crash_after_commit_percent)
            and operation is Operation.COMMIT,
            crash_after_prepare=chance(plan.crash_after_prepare_percent)
            and operation is Operation.PREPARE,
        )
        self.fates.append((operation, fate))
        return fate

    def _check_up(self) -> None:
        if self._crashed:
            raise error(Reason.UNREACHABLE, "the bridge is down (crashed; restart it)")

    async def _crash(self, point: str) -> NoReturn:
        if self._on_crash is not None:
            self._on_crash(point)
        self._crashed = True
        await self._inner.close()
        raise error(Reason.UNREACHABLE, "no reply: the bridge crashed")

    async def _deliver(self, operation: Operation, call: Callable[[Fate], Awaitable[T]]) -> T:
        self._check_up()
        if operation not in self._plan.operations:
            return await call(_CLEAR)
        fate = self._draw(operation)
        if fate.latency_ms:
            await asyncio.sleep(fate.latency_ms / 1000)
        if fate.drop_request:
            raise error(Reason.UNREACHABLE, "no reply (the request was lost)")
        if fate.crash_before_commit:
            await self._crash("crash_before_commit")
        outcome: T | None = None
        failure: BridgeError | None = None
        try:
            outcome = await call(fate)
        except BridgeError as exc:
            failure = exc
        if fate.duplicate:  # the second delivery's answer goes nowhere
            with contextlib.suppress(BridgeError):
                await call(fate)
        if fate.crash_after_commit and failure is None:
            await self._crash("crash_after_commit")
        if fate.crash_after_prepare and failure is None:
            await self._crash("crash_after_prepare")
        if fate.drop_reply:
            raise error(Reason.UNREACHABLE, "no reply (the reply was lost)")
        if failure is not None:
            raise failure
        return outcome  # type: ignore[return-value]

    # ---------------------------------------------------------------- BridgeApi

    async def validators(self) -> ValidatorSet:
        return await self._deliver(Operation.VALIDATORS, lambda f: self._inner.validators())

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
        return await self._deliver(
            Operation.QUOTE,
            lambda f: self._inner.quote(
                source_currency,
                target_currency,
                source_amount_minor=source_amount_minor,
                target_amount_minor=target_amount_minor,
                liquidity_provider_id=liquidity_provider_id,
                ttl_ms=ttl_ms or self._plan.quote_ttl_ms,
            ),
        )

    async def prepare(
        self, transfer_id: str, *, quote_id: str, payer_id: str, payee_id: str, timeout_ms: int
    ) -> Transfer:
        return await self._deliver(
            Operation.PREPARE,
            lambda f: self._inner.prepare(
                transfer_id,
                quote_id=quote_id,
                payer_id=payer_id,
                payee_id=payee_id,
                timeout_ms=timeout_ms,
                refuse_with=Reason.INSUFFICIENT_LIQUIDITY if f.reject else None,
            ),
        )

    async def prepare_at_market(
        self,
        transfer_id: str,
        *,
        order: MarketOrder,
        payer_id: str,
        payee_id: str,
        timeout_ms: int,
    ) -> tuple[Quote, Transfer]:
        """A prepare, with its faults (a rejection is the provider's short liquidity)."""
        return await self._deliver(
            Operation.PREPARE,
            lambda f: self._inner.prepare_at_market(
                transfer_id,
                order=order,
                payer_id=payer_id,
                payee_id=payee_id,
                timeout_ms=timeout_ms,
                refuse_with=Reason.INSUFFICIENT_LIQUIDITY if f.reject else None,
            ),
        )

    async def commit(self, transfer_id: str) -> Transfer:
        return await self._deliver(Operation.COMMIT, lambda f: self._inner.commit(transfer_id))

    async def commit_final(self, transfer_id: str) -> tuple[Transfer, Finality]:
        """The two calls, each with its own faults: a commit whose reply is lost is lost here
        too; a finality that fails is answered as not final. Without faults on either (no
        plan, or one on other operations), the inner bridge's own."""
        plan = self._plan
        if not plan.enabled or not {Operation.COMMIT, Operation.FINALITY} & plan.operations:
            self._check_up()
            return await self._inner.commit_final(transfer_id)
        return await commit_then_finality(self, transfer_id)

    async def abort(self, transfer_id: str) -> Transfer:
        return await self._deliver(Operation.ABORT, lambda f: self._inner.abort(transfer_id))

    async def status(self, transfer_id: str) -> Transfer:
        return await self._deliver(Operation.STATUS, lambda f: self._inner.status(transfer_id))

    async def finality(self, transfer_id: str) -> Finality:
        return await self._deliver(Operation.FINALITY, lambda f: self._inner.finality(transfer_id))

    async def balances(self, participant_id: str = "") -> tuple[AccountBalance, ...]:
        return await self._deliver(
            Operation.BALANCES, lambda f: self._inner.balances(participant_id)
        )

    async def supply(self) -> tuple[CurrencySupply, ...]:
        return await self._deliver(Operation.SUPPLY, lambda f: self._inner.supply())

    # ---------------------------------------------------------------- BridgeAdminApi (no faults)

    async def register_bank(self, participant_id: str, *, name: str = "") -> Participant:
        self._check_up()
        return await self._inner.register_bank(participant_id, name=name)

    async def register_liquidity_provider(
        self, participant_id: str, *, spread_ppm: int
    ) -> Participant:
        self._check_up()
        return await self._inner.register_liquidity_provider(participant_id, spread_ppm=spread_ppm)

    async def publish_rate(self, currency: str, value: Rate) -> PublishedRate:
        self._check_up()
        return await self._inner.publish_rate(currency, value)

    async def issue(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        self._check_up()
        return await self._inner.issue(
            request_id, participant_id=participant_id, amount=amount, account_kind=account_kind
        )

    async def redeem(
        self,
        request_id: str,
        *,
        participant_id: str,
        amount: Money,
        account_kind: AccountKind = AccountKind.SETTLEMENT,
    ) -> Issuance:
        self._check_up()
        return await self._inner.redeem(
            request_id, participant_id=participant_id, amount=amount, account_kind=account_kind
        )

    async def audit(self) -> AuditReport:
        self._check_up()
        return await self._inner.audit()

    async def tick(self) -> TickResult:
        self._check_up()
        return await self._inner.tick()

    async def close(self) -> None:
        if not self._crashed:
            await self._inner.close()


_CLEAR: Final = Fate(0, False, False, False, False, False, False, False)
