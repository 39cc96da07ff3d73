"""Property (hypothesis, derandomized): whatever the contract — checked or not, built straight in
compiled form — and whatever the events, a `deliver_title` leg is always preceded, in the same
clause firing, by a `pay` leg to another wallet of exactly the amount asked, and every money
action of that firing paid exactly what it asked."""

from __future__ import annotations

from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from contracts_dsl import CompiledContract, ContractState, Escrow, Event, evaluate
from contracts_dsl.compiled import (
    ActionSpec,
    Amount,
    ClauseSpec,
    CondSpec,
    DeadlineSpec,
    EscrowSpec,
    ParamSpec,
    PatternSpec,
    Ref,
    number_patterns,
)
from contracts_dsl.params import BoundParams, Money, escrow_minor

from ._support import PROPERTY_SETTINGS

T0 = 1_780_000_000_000_000  # 2026-05-29
DAY = 86_400_000_000
PARTIES = ("buyer", "seller", "agent")
PATTERNS = (
    PatternSpec("receipt.signed", "buyer", "party", (), ()),
    PatternSpec("iot.arrived", "seller", "party", (), ()),
    PatternSpec("customs.cleared", "agent", "party", (), ()),
)

amounts = st.one_of(
    st.builds(lambda bp: Amount("percent", bp=bp), st.integers(1, 10_000)),
    st.builds(lambda m: Amount("fixed", money=Ref(literal=m)), st.integers(1, 20_000)),
    st.just(Amount("fixed", money=Ref(param="fee"))),
    st.just(Amount("remainder")),
)
money_actions = st.one_of(
    st.builds(ActionSpec, st.sampled_from(["pay", "penalty"]), st.sampled_from(PARTIES), amounts),
    st.builds(lambda amount: ActionSpec("refund", "buyer", amount), amounts),
)
deliveries = st.builds(
    lambda party, title: ActionSpec("deliver_title", party, title=title),
    st.sampled_from(PARTIES),
    st.sampled_from(["bol", "receipt_title"]),
)
action_lists = st.lists(st.one_of(money_actions, deliveries), min_size=1, max_size=4).map(tuple)
conditions = st.one_of(
    st.sampled_from(PATTERNS),
    st.builds(
        lambda kind, items: CondSpec(kind, tuple(items)),
        st.sampled_from(["all", "any"]),
        st.lists(st.sampled_from(PATTERNS), min_size=2, max_size=3, unique=True),
    ),
)


@st.composite
def contracts(draw: st.DrawFn) -> CompiledContract:
    clauses = []
    for number in range(draw(st.integers(1, 5))):
        group = draw(st.sampled_from([None, None, "one_of#1"]))
        clauses.append(ClauseSpec(f"c{number}", group, draw(conditions), draw(action_lists)))
    deadline = None
    if draw(st.booleans()):
        deadline = DeadlineSpec(Ref(literal=T0 + 30 * DAY), draw(action_lists))
    escrow = EscrowSpec(
        "CNY", draw(st.sampled_from([Ref(literal=10_000), Ref(param="price")])), "buyer"
    )
    params = (
        ParamSpec("agent", "wallet"),
        ParamSpec("bol", "title"),
        ParamSpec("buyer", "wallet"),
        ParamSpec("fee", "money", "CNY"),
        ParamSpec("price", "money", "CNY"),
        ParamSpec("receipt_title", "title"),
        ParamSpec("seller", "wallet"),
    )
    return number_patterns(
        CompiledContract("random", 1, params, (), (), escrow, deadline, tuple(clauses))
    )


@st.composite
def bound(draw: st.DrawFn, contract: CompiledContract) -> BoundParams:
    """Values bound without `bind_params` (so without PV009/PV010): wallets may coincide."""
    wallets = st.sampled_from(["w-1", "w-2", "w-3"])
    values: dict[str, str | Money] = {
        "agent": draw(wallets),
        "buyer": draw(wallets),
        "seller": draw(wallets),
        "bol": "EBL-1",
        "receipt_title": "WR-1",
        "fee": Money("CNY", draw(st.integers(1, 20_000))),
        "price": Money("CNY", draw(st.integers(1, 20_000))),
    }
    kinds = {p.name: p.kind for p in contract.params}
    return BoundParams(contract.hash, MappingProxyType(kinds), MappingProxyType(values))


@st.composite
def event_lists(draw: st.DrawFn) -> list[Event]:
    found = []
    for number in range(draw(st.integers(0, 6))):
        pattern = draw(st.sampled_from(PATTERNS))
        attester = draw(st.sampled_from([pattern.attester, "buyer"]))
        at = T0 + draw(st.integers(0, 40 * DAY))
        found.append(Event(f"e{number}", pattern.event_type, attester, {}, at))
    return found


def _money_actions(contract: CompiledContract, clause_id: str) -> list[int]:
    if clause_id == "deadline":
        assert contract.deadline is not None
        actions = contract.deadline.actions
    else:
        actions = next(c for c in contract.clauses if c.id == clause_id).actions
    return [i for i, a in enumerate(actions) if a.kind != "deliver_title"]


@PROPERTY_SETTINGS
@given(contracts(), st.data())
def test_a_title_leg_always_follows_its_payment_in_full(
    contract: CompiledContract, data: st.DataObject
) -> None:
    params = data.draw(bound(contract))
    events = data.draw(event_lists())
    funded = escrow_minor(contract, params)
    escrow = Escrow("CNY", funded, funded)
    state: ContractState | None = None
    now = T0
    for _ in range(data.draw(st.integers(1, 3))):
        now = data.draw(st.integers(now, T0 + 45 * DAY))
        result = evaluate(contract, params, escrow, events, now, state)
        assert result.rejected == ()
        for position, leg in enumerate(result.legs):
            if leg.kind != "deliver_title":
                continue
            firing = [x for x in result.legs[:position] if x.clause == leg.clause]
            money = [x for x in firing if x.kind != "deliver_title"]
            assert any(
                x.kind == "pay" and x.wallet != leg.wallet and x.amount_minor == x.requested_minor
                for x in money
            ), "a title leg without a full payment to someone else before it"
            assert all(0 < x.amount_minor == x.requested_minor for x in money)
            assert sorted(x.action_index for x in money) == _money_actions(contract, leg.clause)
        escrow, state = result.escrow, result.state


def test_the_property_sees_titles_both_delivered_and_withheld() -> None:
    """Guard against a vacuous property: both outcomes occur among the generated cases."""
    seen = {"delivered": 0, "withheld": 0}

    @PROPERTY_SETTINGS
    @given(contracts(), st.data())
    def probe(contract: CompiledContract, data: st.DataObject) -> None:
        params = data.draw(bound(contract))
        funded = escrow_minor(contract, params)
        result = evaluate(
            contract, params, Escrow("CNY", funded, funded), data.draw(event_lists()), T0 + 45 * DAY
        )
        if any(leg.kind == "deliver_title" for leg in result.legs):
            seen["delivered"] += 1
        if any("not delivered" in note for note in result.notes):
            seen["withheld"] += 1

    probe()
    assert seen["delivered"] >= 10
    assert seen["withheld"] >= 10
