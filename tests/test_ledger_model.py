"""The ledger against a simple model: random operation sequences through the real server.

Hypothesis draws sequences of issue, redeem, open-wallet and transfer operations over a few
wallets of different tiers. A plain Python model predicts each outcome (OK or the refusal reason)
and the balances; the server must agree on every reply and on every final balance, and the audit
must pass.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from condpay.errors import ApiError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement.clock import ManualClock
from settlement.ledger.audit import audit_ledger
from tests.support.harness import start_harness
from wallets import LIMITS, OwnerKey, WalletKind

TIERS = [
    (WalletKind.PERSONAL, 4),
    (WalletKind.PERSONAL, 3),
    (WalletKind.PERSONAL, 1),
    (WalletKind.ENTERPRISE, 0),
]
_examples = itertools.count()

# Amounts on several scales, so that sequences meet every cap and also succeed.
amounts = st.one_of(
    st.integers(1, 3_000_00), st.integers(1, 200_000_00), st.integers(1, 20_000_000_00)
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), amounts),
        st.tuples(st.just("redeem"), amounts),
        st.tuples(st.just("fund"), st.integers(0, 3), amounts),
        st.tuples(st.just("transfer"), st.integers(0, 3), st.integers(0, 3), amounts),
    ),
    min_size=1,
    max_size=25,
)


@dataclass
class Model:
    reserve: int = 0
    circulation: int = 0
    balances: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    spent: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def pay(self, source: int | None, target: int, amount: int) -> str:
        """source None is the institution's reserve (no caps)."""
        if source is not None:
            limits = LIMITS[(*TIERS[source], "CNY")]
            if (
                limits.single_payment_cap_minor is not None
                and amount > limits.single_payment_cap_minor
            ):
                return "LIMIT_EXCEEDED"
            if (
                limits.daily_cap_minor is not None
                and self.spent[source] + amount > limits.daily_cap_minor
            ):
                return "LIMIT_EXCEEDED"
        available = self.reserve if source is None else self.balances[source]
        if available < amount:
            return "INSUFFICIENT_FUNDS"
        cap = LIMITS[(*TIERS[target], "CNY")].balance_cap_minor
        if cap is not None and self.balances[target] + amount > cap:
            return "LIMIT_EXCEEDED"
        if source is None:
            self.reserve -= amount
        else:
            self.balances[source] -= amount
            self.spent[source] += amount
        self.balances[target] += amount
        return "OK"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_server_agrees_with_the_model(database_url: str, ops: list[tuple]) -> None:
    # Mid-day in Shenzhen, so the daily caps cannot roll over during an example.
    clock = ManualClock((int(time.time()) // 86_400 * 86_400 + 4 * 3600) * 1_000_000)
    # The client signs expiries from the wall clock; sign them 5 min after the server's clock
    # instead, or the examples run before 04:00 UTC would be refused as expired.
    ttl = clock.now_us() / 1e6 - time.time() + 300
    async with start_harness(database_url, clock=clock) as h:
        n = next(_examples)
        institution = f"bank-{n}"
        bank_key = await h.institution(institution)
        reserve = f"w_reserve.{institution}"
        cb, bank = h.client(), h.client(f"institution/{institution}")
        keys = [OwnerKey.generate() for _ in TIERS]
        wallets = [
            (
                await bank.open_wallet(institution, key.public_key, kind=kind.value, tier=tier)
            ).wallet.wallet_id
            for key, (kind, tier) in zip(keys, TIERS, strict=True)
        ]
        model = Model()
        (before,) = (await cb.get_supply("CNY")).supplies  # the database outlives one example
        for op in ops:
            try:
                if op[0] == "issue":
                    await cb.issue(institution, "CNY", op[1])
                elif op[0] == "redeem":
                    await cb.redeem(institution, "CNY", op[1])
                elif op[0] == "fund":
                    await bank.transfer(
                        bank_key, reserve, wallets[op[1]], "CNY", op[2], expires_in_seconds=ttl
                    )
                else:
                    _, source, target, amount = op
                    await bank.transfer(
                        keys[source],
                        wallets[source],
                        wallets[target],
                        "CNY",
                        amount,
                        expires_in_seconds=ttl,
                    )
                got = "OK"
            except ApiError as error:
                got = error.reason
            expected = apply(model, op)
            assert got == expected, (op, model)
        for wallet_id, expected_balance in zip(wallets, model.balances, strict=True):
            wallet = await bank.get_wallet(wallet_id)
            cny = next(b for b in wallet.balances if b.available.currency == "CNY")
            assert cny.available.amount_minor == expected_balance
        (line,) = (await cb.get_supply("CNY")).supplies
        circulation = line.in_circulation.amount_minor - before.in_circulation.amount_minor
        assert circulation == model.circulation
        assert line.consistent
        report = await audit_ledger(h.runtime.sql)
        assert report.ok, report.failures


def apply(model: Model, op: tuple) -> str:
    if op[0] == "issue":
        model.reserve += op[1]
        model.circulation += op[1]
        return "OK"
    if op[0] == "redeem":
        if model.reserve < op[1]:
            return "INSUFFICIENT_FUNDS"
        model.reserve -= op[1]
        model.circulation -= op[1]
        return "OK"
    if op[0] == "fund":
        return model.pay(None, op[1], op[2])
    _, source, target, amount = op
    if source == target:
        return "SAME_SOURCE_AND_TARGET"
    return model.pay(source, target, amount)
