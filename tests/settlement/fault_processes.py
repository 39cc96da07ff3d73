"""The PvP fault matrix's machinery (tests/settlement/test_fault_matrix_postgres.py): the bridge and
the core as child processes that die and come back, a PvP workload sent as a client would send
it, and the checks across both ledgers once everything has recovered.

- the bridge is sim_central_bank/bridge_process.py's ``BridgeProcess``: ``python -m bridges
  serve`` on a fixed address and state file, bootstrapped with the core's gateway (``--bank
  CONDPAY``), restartable with another fault plan;
- the core is ``condpay serve`` on PostgreSQL (tests/payments/fleet.py's RestartableServer), whose
  bridge is ``grpc://`` the bridge process;
- :class:`Supervisor`: restarts whichever of the two died, with the environment the cell's policy
  gives for the next incarnation, and counts the deaths by cause (exit 86 = a crash fault);
- :func:`build_world`: the central bank, the bank, the gateway institution and funded parties,
  through gRPC with fixed request ids;
- :class:`Pvp`: one settlement, its SettlePvP request signed once (every retry sends the same
  bytes) and sent until a definite answer;
- :func:`check_both_ledgers`: both-or-neither across the core and the bridge, one HOLD per
  settlement and exactly one PVP or one UNHOLD after it, every balance equal to what the
  outcomes add up to (so no leg applied twice), nothing reserved or in doubt, both audits clean,
  and per currency the gateway's core + bridge position unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
from condpay.client import SettlementsClient
from condpay.errors import ApiError
from condpay.v1 import settlement_pb2, wallet_pb2

from bridges import (
    DEMO_BANK_BALANCE_MINOR,
    AccountKind,
    Identity,
    Kind,
    TransferState,
    checked_public_keys,
    verify_quorum_certificate,
)
from bridges._setup import DEMO_PROVIDER
from bridges.errors import Unavailable
from settlement.ledger.commands import reserve_wallet_id
from settlement.ledger.settlements import derive_settlement_id, transfer_id
from sim_central_bank.bridge_process import BridgeProcess
from tests.payments.fleet import FAST_RECONNECT, TRANSIENT, RestartableServer, audit
from tests.support.harness import central_bank_of
from wallets import OwnerKey, PvPInstruction

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CENTRAL_BANK = "central_bank/pboc"
PLATFORM = "platform/gba-trade"
BANK = "icbc-sz"
GATEWAY = "CONDPAY"  # the core's participant on the bridge (CONDPAY_BRIDGE_GATEWAY)
GATEWAY_WALLET = reserve_wallet_id(GATEWAY)
CURRENCIES = ("CNY", "HKD", "THB", "AED", "SAR")
RESERVE_MINOR = 100_000_000_00  # issued to the bank's and the gateway's reserves, per currency
CRASH_EXIT_STATUS = 86  # both processes' crash faults (settlement/faults.py, bridges/limits.py)
# The core's PvP timing in the matrix: decide within HOLD_MS of preparing; the bridge's reservation
# ends MARGIN_MS before that. Long enough for a restart of either process in between.
HOLD_MS = 15_000
MARGIN_MS = 3_000
PAYERS = 4
PAYEES = 4
PAYER_FUNDING_MINOR = 5_000_000_00  # per currency: far more than a cell's settlements pay
STATE_NAMES = {
    v: k.removeprefix("SETTLEMENT_STATE_")
    for k, v in settlement_pb2.SettlementState.items()  # type: ignore[attr-defined]
}
DONE = frozenset({"FINAL", "ABORTED"})
COMMITTED_STATES = frozenset({"COMMITTED", "FINAL"})
IN_DOUBT = frozenset({"PENDING", "PREPARED", "COMMITTING", "ABORTING"})


def key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b".")[:32])


# -- the bridge as a process -----------------------------------------------------------------------
GATEWAY_IDENTITY = Identity(Kind.BANK, GATEWAY)  # the core's participant identity on the bridge
AUDITOR_IDENTITY = Identity(Kind.AUDITOR, "fault-matrix")


def on_bridge(transfer_id: str) -> str:
    """The bridge's id of the core's transfer ``<settlement id>.<attempt>``: the gateway's."""
    return f"{GATEWAY}:{transfer_id}"


def core_env(bridge: BridgeProcess, *, fault_points: str = "", seed: int = 0) -> dict[str, str]:
    """The environment of one incarnation of the core: the bridge over its development mode's
    link, the validator set pinned from the file the bridge exported."""
    return {
        **bridge.core_env(),
        "CONDPAY_BRIDGE_GATEWAY": GATEWAY,
        "CONDPAY_PVP_HOLD_MS": str(HOLD_MS),
        "CONDPAY_PVP_MARGIN_MS": str(MARGIN_MS),
        "CONDPAY_FAULT_POINTS": fault_points,
        "CONDPAY_FAULT_SEED": str(seed),
        "CONDPAY_LOG_LEVEL": "info",
    }


def core_bridge_retries(core: RestartableServer) -> int:
    """Bridge calls the core retried after no answer (bridge_link.py logs each retry)."""
    return sum(
        log.read_text(errors="replace").count("bridge_retry")
        for log in core.log_dir.glob("server-*.log")
    )


def log_problems(core: RestartableServer, bridge: BridgeProcess) -> list[str]:
    """What neither process should ever log: an error or critical event of the core (a bridge
    refusal the core calls its own bug, a certificate that does not verify, a commit of an
    aborted settlement), a traceback, an error of the bridge."""
    found = core.log_problems()
    for log in sorted(bridge.log_dir.glob("bridge-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "Traceback" in line or " ERROR " in line or "CRITICAL" in line:
                found.append(f"{log.name}: {line[:300]}")
    return found


# -- restarts --------------------------------------------------------------------------------------
@dataclass
class Supervisor:
    """Watches both processes while a run's traffic flows; whichever dies is restarted with what
    the policy gives for its next incarnation. ``core_policy(n)``: the core's environment for
    its n-th restart in this run; ``bridge_policy(n)``: the bridge's (fault specs, seed)."""

    core: RestartableServer
    bridge: BridgeProcess
    core_policy: Callable[[int], Mapping[str, str]]
    bridge_policy: Callable[[int], tuple[Sequence[str], int]]
    deaths: Counter[str] = field(default_factory=Counter)  # "core:86", "bridge:-9", ...
    core_restarts: int = 0
    bridge_restarts: int = 0

    async def watching(self, work: Awaitable[T]) -> T:
        """``work``, while watching; a failure of the watch (a process that cannot start)
        fails the work at once instead of leaving it to retry against nothing."""
        watch = asyncio.create_task(self._watch(), name="fault-matrix-supervisor")
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({watch, task}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                task.cancel()
                watch.result()  # raises what stopped the watch
            return await task
        finally:
            for t in (watch, task):
                t.cancel()
            await asyncio.gather(watch, task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            status = self.bridge.exit_status()
            if status is not None:
                self.deaths[f"bridge:{status}"] += 1
                self.bridge_restarts += 1
                faults, seed = self.bridge_policy(self.bridge_restarts)
                # (Traffic may reach it before it prints its ready line and crash it again.)
                with contextlib.suppress(RuntimeError):
                    await self.bridge.start(faults, seed=seed)
            status = self.core.exit_status()
            if status is not None:
                self.deaths[f"core:{status}"] += 1
                self.core_restarts += 1
                self.core.start_with(self.core_policy(self.core_restarts))
                # A restarted core's sweep may reach a fault point before it answers a health
                # check: then it is dead again, and the next look restarts it.
                with contextlib.suppress(RuntimeError):
                    await self.core.wait_ready()
            await asyncio.sleep(0.05)


# -- the world -------------------------------------------------------------------------------------
def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=list(FAST_RECONNECT))


@dataclass
class World:
    """Parties on the core (wallet ids and keys), the clients, and the balances the settlements
    started from (the core's per wallet, the bridge's gateway and provider)."""

    core_address: str
    bridge: BridgeProcess
    database_url: str
    channel: grpc.aio.Channel
    cb: SettlementsClient
    platform: SettlementsClient
    wallets: dict[str, str] = field(default_factory=dict)
    keys: dict[str, OwnerKey] = field(default_factory=dict)
    core_start: dict[tuple[str, str], int] = field(default_factory=dict)  # available, by wallet
    bridge_start: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @property
    def payers(self) -> list[str]:
        return [f"payer-{i}" for i in range(PAYERS)]

    @property
    def payees(self) -> list[str]:
        return [f"payee-{i}" for i in range(PAYEES)]

    async def close(self) -> None:
        await self.channel.close()


async def build_world(core_address: str, bridge: BridgeProcess, database_url: str) -> World:
    """Institutions (the bank and the gateway, each with a reserve in every currency), payers
    funded in every currency, payees; all with fixed request ids."""
    ch = channel(core_address)
    cb = SettlementsClient(core_address, caller=CENTRAL_BANK, channel=ch)
    world = World(
        core_address,
        bridge,
        database_url,
        ch,
        cb,
        SettlementsClient(core_address, caller=PLATFORM, channel=ch),
    )
    for institution in (BANK, GATEWAY):
        await cb.register_institution(
            institution,
            institution.upper(),
            key(institution).public_key,
            request_id=f"world-{institution}",
        )
        for currency in CURRENCIES:
            await cb.with_caller(central_bank_of(currency)).issue(
                institution, currency, RESERVE_MINOR, request_id=f"world-{institution}-{currency}"
            )
    bank = SettlementsClient(core_address, caller=f"institution/{BANK}", channel=ch)
    for name in world.payers + world.payees:
        world.keys[name] = key(name)
        opened = await bank.open_wallet(
            BANK,
            key(name).public_key,
            kind="ENTERPRISE",
            tier=0,
            display_name=name,
            request_id=f"world-open-{name}",
        )
        world.wallets[name] = opened.wallet.wallet_id
    await asyncio.gather(
        *(
            bank.transfer(
                key(BANK),
                reserve_wallet_id(BANK),
                world.wallets[name],
                currency,
                PAYER_FUNDING_MINOR,
                request_id=f"world-fund-{name}-{currency}",
            )
            for name in world.payers
            for currency in CURRENCIES
        )
    )
    world.core_start = {
        (w, c): available for (w, c), (available, _held) in (await core_balances(world)).items()
    }
    world.bridge_start = await bridge_positions(world)
    return world


async def answered(call: Callable[[], Awaitable[T]], seconds: float = 20.0) -> T:
    """``call()``, retried while the bridge does not answer: the first call of a new channel to a
    bridge just restarted fails fast with UNAVAILABLE on a loaded machine (CI saw it once)."""
    give_up = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except Unavailable:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.1)


async def core_balances(world: World) -> dict[tuple[str, str], tuple[int, int]]:
    """(wallet, currency) -> (available, held), from the database."""
    conn = await asyncpg.connect(world.database_url)
    try:
        rows = await conn.fetch("SELECT wallet_id, currency, available, held FROM balances")
    finally:
        await conn.close()
    return {(r["wallet_id"], r["currency"]): (r["available"], r["held"]) for r in rows}


async def bridge_positions(world: World) -> dict[tuple[str, str, str], int]:
    """(participant, kind, currency) -> balance, for the gateway and the liquidity provider."""
    async with world.bridge.client(AUDITOR_IDENTITY) as bridge:
        found = {}
        for participant in (GATEWAY, DEMO_PROVIDER):
            for b in await bridge.balances(participant):
                found[(participant, b.kind.value, b.currency)] = b.balance_minor
        return found


# -- the workload ----------------------------------------------------------------------------------
@dataclass
class Pvp:
    """One PvP: who pays whom, in which currencies; its quote and its SettlePvP request, both
    made once; what the client got and what the settlement finally was."""

    name: str
    payer: str
    payee: str
    source_currency: str
    target_currency: str
    target_minor: int
    quote: settlement_pb2.FxQuote | None = None
    request: settlement_pb2.SettlePvPRequest | None = None
    answer: str = ""  # the state SettlePvP answered, or the refusal's reason
    refused: str = ""  # a definite refusal of SettlePvP (nothing created)
    final: settlement_pb2.Settlement | None = None

    @property
    def settlement_id(self) -> str:
        return derive_settlement_id(PLATFORM, f"{self.name}.settle")

    @property
    def transfer_id(self) -> str:
        """The bridge transfer of its first attempt (chosen by the core before preparing)."""
        return transfer_id(self.settlement_id, 1)

    @property
    def created(self) -> bool:
        return self.request is not None and not self.refused


def plan_pvps(prefix: str, rng: random.Random, count: int) -> list[Pvp]:
    pvps = []
    for i in range(count):
        source, target = rng.sample(CURRENCIES, 2)
        pvps.append(
            Pvp(
                f"{prefix}-{i}",
                f"payer-{rng.randrange(PAYERS)}",
                f"payee-{rng.randrange(PAYEES)}",
                source,
                target,
                rng.randrange(100_00, 20_000_00),
            )
        )
    return pvps


@dataclass
class Sender:
    """Calls until a definite answer (a reply, or a refusal other than UNAVAILABLE,
    DEADLINE_EXCEEDED, CANCELLED), the same request every time, across restarts."""

    patience_seconds: float = 90.0
    retries: int = 0

    async def call(self, method: Callable[[], object]) -> object:
        give_up = time.monotonic() + self.patience_seconds
        while True:
            try:
                return await method()  # type: ignore[misc]
            except ApiError as error:
                if error.code not in TRANSIENT or time.monotonic() > give_up:
                    raise
                self.retries += 1
                await asyncio.sleep(0.1)


async def take_quote(world: World, pvp: Pvp, sender: Sender) -> None:
    quote = await sender.call(
        lambda: world.platform.quote_fx(
            pvp.source_currency,
            pvp.target_currency,
            target_amount_minor=pvp.target_minor,
            request_id=f"{pvp.name}.quote",
        )
    )
    assert isinstance(quote, settlement_pb2.FxQuote)
    assert quote.target.amount_minor == pvp.target_minor
    pvp.quote = quote


def sign_request(world: World, pvp: Pvp) -> settlement_pb2.SettlePvPRequest:
    assert pvp.quote is not None
    request_id = f"{pvp.name}.settle"  # the settlement id derives from it
    signed = PvPInstruction(
        payer=world.wallets[pvp.payer],
        payee=world.wallets[pvp.payee],
        quote_id=pvp.quote.quote_id,
        pay_currency=pvp.quote.source.currency,
        pay_minor=pvp.quote.source.amount_minor,
        receive_currency=pvp.quote.target.currency,
        receive_minor=pvp.quote.target.amount_minor,
        submitter=PLATFORM,
        request_id=request_id,
        expires_at_us=time.time_ns() // 1000 + 600_000_000,
    ).sign(world.keys[pvp.payer])
    return settlement_pb2.SettlePvPRequest(
        request_id=request_id,
        payer_instruction=wallet_pb2.SignedInstruction(
            payload=signed.payload, signature=signed.signature
        ),
    )


async def settle(world: World, pvp: Pvp, sender: Sender) -> None:
    """SettlePvP until a definite answer; a refusal is recorded, not raised."""
    pvp.request = pvp.request or sign_request(world, pvp)
    request = pvp.request
    client = world.platform
    try:
        reply = await sender.call(lambda: client.api.settlements.settle_pvp(request))
    except ApiError as error:
        if error.code in TRANSIENT:
            raise
        pvp.refused = pvp.answer = error.reason
        return
    assert isinstance(reply, settlement_pb2.SettlePvPResponse)
    pvp.answer = STATE_NAMES[reply.settlement.state]


async def wait_settled(
    world: World,
    pvps: Iterable[Pvp],
    *,
    accept: frozenset[str] = DONE,
    timeout_seconds: float = 60.0,
) -> None:
    """Poll GetSettlement (retried across restarts) until every created settlement is in one of
    ``accept``; keeps the last reading on each."""
    created = [p for p in pvps if p.created]
    give_up = time.monotonic() + timeout_seconds
    while True:
        try:
            found = await asyncio.gather(
                *(world.cb.get_settlement(p.settlement_id) for p in created)
            )
        except ApiError as error:
            if error.code not in TRANSIENT or time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.1)
            continue
        for pvp, settlement in zip(created, found, strict=True):
            pvp.final = settlement
        waiting = [
            f"{p.name} {STATE_NAMES[s.state]}"
            for p, s in zip(created, found, strict=True)
            if STATE_NAMES[s.state] not in accept
        ]
        if not waiting:
            return
        if time.monotonic() > give_up:
            raise AssertionError(f"not settled after {timeout_seconds} s: {waiting}")
        await asyncio.sleep(0.1)


# -- the checks ------------------------------------------------------------------------------------
@dataclass
class Tally:
    settlements: int = 0
    committed: int = 0
    final: int = 0
    aborted: int = 0
    refused: int = 0
    abort_reasons: Counter[str] = field(default_factory=Counter)


async def check_both_ledgers(
    world: World, pvps: Sequence[Pvp], *, awaiting_finality: Collection[str] = ()
) -> Tally:
    """Everything in the module docstring, over every settlement in the database (the cell's
    runs so far). Each is FINAL or ABORTED, except those in ``awaiting_finality`` (committed
    while the bridge's quorum is short), which are COMMITTED, not FINAL, or ABORTED."""
    problems: list[str] = []
    tally = Tally()
    by_id = {p.settlement_id: p for p in pvps if p.created}
    conn = await asyncpg.connect(world.database_url)
    try:
        rows = await conn.fetch(
            "SELECT settlement_id, kind, state, decision, abort_reason, transfer_id, "
            "payer_wallet_id, pay_currency, pay_minor, payee_wallet_id, receive_currency, "
            "receive_minor, spread_minor, provider_id, quote_id, block_height, certificate "
            "FROM settlements"
        )
        postings = await conn.fetch(
            "SELECT e.seq, e.kind, e.memo, p.account_id, p.bucket, p.currency, p.amount "
            "FROM journal_entries e JOIN postings p ON p.seq = e.seq "
            "WHERE e.kind IN ('HOLD', 'UNHOLD', 'PVP', 'DVP')"
        )
    finally:
        await conn.close()
    settled = {r["settlement_id"]: r for r in rows}
    if set(settled) != set(by_id):
        problems.append(
            f"settlements in the database {sorted(set(settled) ^ set(by_id))[:5]} differ from "
            "the ones the clients created"
        )
    for pvp in pvps:
        if pvp.refused and pvp.request is not None and pvp.settlement_id in settled:
            problems.append(f"{pvp.name}: refused ({pvp.refused}) but a settlement exists")
    # The journal, per settlement: entries by kind, and the net of its HELD postings.
    entries: dict[str, Counter[str]] = defaultdict(Counter)
    seen_seq: set[tuple[int, str]] = set()
    held_net: dict[tuple[str, str, str], int] = defaultdict(int)
    for p in postings:
        sid = p["memo"].split()[1]
        if (p["seq"], sid) not in seen_seq:
            seen_seq.add((p["seq"], sid))
            entries[sid][p["kind"]] += 1
        if p["bucket"] == "HELD":
            held_net[(sid, p["account_id"], p["currency"])] += p["amount"]
    problems += [
        f"journal entries for {sid}, which does not exist"
        for sid in entries.keys() - settled.keys()
    ]
    for (sid, account, currency), net in held_net.items():
        if net:
            problems.append(f"{sid}: its HOLD/UNHOLD/PVP leave {net} {currency} held on {account}")
    expected_core: dict[tuple[str, str], int] = defaultdict(int, world.core_start)
    expected_bridge: dict[tuple[str, str, str], int] = defaultdict(int, world.bridge_start)
    async with (
        world.bridge.client(AUDITOR_IDENTITY) as bridge,
        world.bridge.client(GATEWAY_IDENTITY) as gateway,
    ):
        keys = checked_public_keys(await answered(bridge.validators))
        for sid, r in settled.items():
            tally.settlements += 1
            state = r["state"]
            committed = state in COMMITTED_STATES
            pay = (r["pay_currency"], r["pay_minor"])
            receive = (r["receive_currency"], r["receive_minor"])
            if state in IN_DOUBT:
                problems.append(f"{sid}: left {state} (decision {r['decision'] or 'none'})")
                continue
            if sid in awaiting_finality and state == "FINAL":
                problems.append(f"{sid}: FINAL while the bridge's quorum is short")
            if sid not in awaiting_finality and state == "COMMITTED":
                problems.append(f"{sid}: COMMITTED, never FINAL")
            want = Counter({"HOLD": 1, "PVP" if committed else "UNHOLD": 1})
            if entries.get(sid, Counter()) != want:
                problems.append(f"{sid} {state}: journal {dict(entries[sid])}, want {dict(want)}")
            transfer = await gateway.status(on_bridge(r["transfer_id"]))
            if committed != (transfer.state is TransferState.COMMITTED):
                problems.append(f"{sid}: core {state}, bridge {transfer.state.value}")
            if not committed and transfer.state not in (
                TransferState.ABORTED,
                TransferState.EXPIRED,
                TransferState.REJECTED,
            ):
                problems.append(f"{sid}: core {state}, bridge still {transfer.state.value}")
            if committed:
                tally.committed += 1
                terms = transfer.terms
                if terms is None or (
                    terms.quote_id,
                    terms.payer_id,
                    terms.payee_id,
                    (terms.source.currency, terms.source.amount_minor),
                    (terms.target.currency, terms.target.amount_minor),
                    terms.spread.amount_minor,
                ) != (r["quote_id"], GATEWAY, GATEWAY, pay, receive, r["spread_minor"]):
                    problems.append(f"{sid}: the bridge committed other terms: {terms}")
                expected_core[(r["payer_wallet_id"], pay[0])] -= pay[1]
                expected_core[(GATEWAY_WALLET, pay[0])] += pay[1]
                expected_core[(GATEWAY_WALLET, receive[0])] -= receive[1]
                expected_core[(r["payee_wallet_id"], receive[0])] += receive[1]
                expected_bridge[(GATEWAY, "SETTLEMENT", pay[0])] -= pay[1]
                expected_bridge[(GATEWAY, "SETTLEMENT", receive[0])] += receive[1]
                provider = r["provider_id"]
                expected_bridge[(provider, "LIQUIDITY", pay[0])] += pay[1] - r["spread_minor"]
                expected_bridge[(provider, "SPREAD", pay[0])] += r["spread_minor"]
                expected_bridge[(provider, "LIQUIDITY", receive[0])] -= receive[1]
                finality = (
                    await gateway.finality(on_bridge(r["transfer_id"]))
                    if transfer.state is TransferState.COMMITTED
                    else None
                )
                if state == "FINAL":
                    tally.final += 1
                    certificate = json.loads(r["certificate"] or b"{}")
                    if not (
                        finality is not None
                        and finality.final
                        and finality.block is not None
                        and finality.certificate is not None
                        and finality.block.height == r["block_height"] > 0
                        and on_bridge(r["transfer_id"]) in finality.block.transfer_ids
                        and finality.block.hash.hex() == certificate.get("block_hash")
                        and list(finality.certificate.signer_ids) == certificate.get("signer_ids")
                        and verify_quorum_certificate(finality.block, finality.certificate, keys)
                    ):
                        problems.append(f"{sid}: FINAL, but its certificate does not check out")
                elif finality is not None and finality.final:
                    problems.append(f"{sid}: COMMITTED while the bridge says final")
            else:
                tally.aborted += 1
                tally.abort_reasons[r["abort_reason"]] += 1
        gateway_now = {
            (GATEWAY, b.kind.value, b.currency): b for b in await bridge.balances(GATEWAY)
        }
        provider_now = {
            (DEMO_PROVIDER, b.kind.value, b.currency): b
            for b in await bridge.balances(DEMO_PROVIDER)
        }
        report = await bridge.audit()
        supply = await bridge.supply()
    problems += [f"bridge audit: {p}" for p in report.problems]
    problems += [
        f"bridge: {s.reserved_minor} {s.currency} reserved" for s in supply if s.reserved_minor
    ]
    for k, b in {**gateway_now, **provider_now}.items():
        if b.balance_minor != expected_bridge[k]:
            problems.append(f"bridge {k}: {b.balance_minor}, the outcomes say {expected_bridge[k]}")
    balances = await core_balances(world)
    for (wallet, currency), (available, held) in balances.items():
        if held:
            problems.append(f"core {wallet} {currency}: {held} still held")
        want_core = expected_core[(wallet, currency)]
        if available != want_core:
            problems.append(f"core {wallet} {currency}: {available}, the outcomes say {want_core}")
    for currency in CURRENCIES:
        core_side = sum(balances.get((GATEWAY_WALLET, currency), (0, 0)))
        bridge_side = gateway_now[(GATEWAY, AccountKind.SETTLEMENT.value, currency)].balance_minor
        if core_side + bridge_side != RESERVE_MINOR + DEMO_BANK_BALANCE_MINOR:
            problems.append(f"gateway {currency}: core {core_side} + bridge {bridge_side} moved")
    ledger = await audit(world.database_url)
    problems += [f"core audit: {f}" for f in ledger.failures]
    tally.refused = sum(1 for p in pvps if p.refused)
    assert not problems, "cross-system check failed:\n" + "\n".join(problems[:40])
    return tally
