"""What one simulator run produced: the measurements the runner records, the auditor's verdicts,
and what the report renders. Plain data, no I/O, so the runner, the auditor and the report can be
built and tested apart.

Money here is integer minor units keyed by currency code; latencies and times are measurements
(floats in milliseconds and seconds), never money.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

#: The outcome of an accepted operation; a refused one carries its ErrorInfo reason instead.
ACCEPTED: Final = "ACCEPTED"
#: The core's participant on the bridge (an institution in the core, a bank on the bridge): its
#: core reserve ``w_reserve.CONDPAY`` is the gateway for cross-currency legs.
GATEWAY: Final = "CONDPAY"


@dataclass(frozen=True, slots=True)
class CallSample:
    """One RPC as the simulator saw it."""

    rpc: str  # e.g. "LockPayment"
    started_s: float  # seconds since the run started
    latency_ms: float
    outcome: str  # ACCEPTED or the refusal's reason (e.g. "SIGNATURE_INVALID", "UNAVAILABLE")


@dataclass(frozen=True, slots=True)
class TimelineSample:
    """The ledger as the auditor read it at one moment of the run."""

    at_s: float
    #: What RunRecord.settlements_total counted when the sample was taken.
    settlements_total: int
    escrow_held_minor: dict[str, int]  # currency -> held in open escrows
    supply_minor: dict[str, int]  # currency -> issued - redeemed (core)


@dataclass(frozen=True, slots=True)
class InvariantResult:
    name: str  # stable snake_case, e.g. "supply_equals_balances"
    passed: bool
    detail: str  # what was compared; on failure, the first offending items
    when: str = "final"  # "final" or "round N"


@dataclass(slots=True)
class RunRecord:
    scenario: str
    seed: int
    server: str  # the address driven
    database: str  # "sqlite", "postgresql" or "external"
    started_at: str = ""  # ISO 8601 UTC
    duration_s: float = 0.0
    #: (operation, outcome) -> count, e.g. ("attestation.forged", "SIGNATURE_INVALID") -> 12.
    operations: Counter[tuple[str, str]] = field(default_factory=Counter)
    calls: list[CallSample] = field(default_factory=list)
    timeline: list[TimelineSample] = field(default_factory=list)
    invariants: list[InvariantResult] = field(default_factory=list)
    #: fault -> times injected, e.g. "server_kill" -> 2, "bridge:drop_reply" -> 7.
    faults: Counter[str] = field(default_factory=Counter)
    #: Settlements so far: orders whose payment reached its end (terminal) with every payout
    #: through the bridge FINAL, plus direct DvPs that reached FINAL (trading.Trader counts them).
    settlements_total: int = 0
    #: SHA-256 over every party's and reserve's final balances and every order's payment state
    #: and amounts (runner.fingerprint; not the title holders): equal for equal seeds.
    ledger_fingerprint: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.invariants) and all(result.passed for result in self.invariants)

    @property
    def settlements_per_second(self) -> float:
        return self.settlements_total / self.duration_s if self.duration_s > 0 else 0.0

    def count(self, operation: str, outcome: str) -> None:
        self.operations[(operation, outcome)] += 1


@dataclass(frozen=True, slots=True)
class RefusedAttestation:
    """An attestation the simulator sent knowing it must be refused."""

    payment_id: str
    event_id: str
    kind: str  # "forged" (bad signature or unregistered signer) or "replayed" (seen before)
    outcome: str  # what the server answered: a reason, or ACCEPTED (which the auditor fails)


@dataclass(slots=True)
class Expectations:
    """What the runner knows that the ledger cannot say by itself, for the auditor."""

    currencies: tuple[str, ...]
    #: The core's participant on the bridge; its core reserve wallet is ``w_reserve.<id>``.
    gateway: str = GATEWAY
    refused_attestations: list[RefusedAttestation] = field(default_factory=list)
    #: payment id -> why it may still be open at the end (e.g. an attestation withheld on purpose).
    pending_reasons: dict[str, str] = field(default_factory=dict)
