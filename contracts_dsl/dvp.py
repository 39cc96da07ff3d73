"""Delivery versus payment: what can be gone from the escrow before an action list pays.

A title must be delivered against payment in full, in the same step. This module answers, on the
compiled form, two questions the checker (statically) and `bind_params` (with the values) ask:

* `delivery_shortfalls`: for every action list that delivers a title (a clause or the deadline),
  which of its money actions can pay less than asked (a `remainder` that finds the escrow empty,
  a fixed or percentage amount capped at what is left, or an amount that rounds to zero), given
  the worst that the other clauses which can fire before it on one path may take;
* `starvations`: which money actions can be starved to zero by another party's `remainder` paid
  by a clause that can fire first.

What an action takes is given by a `Share` function: the part of the escrow it asks for as a
`Fraction` (1 = the whole escrow), or None when that is not known statically (parameter amounts).
`static_share` is the checker's; `bound_share` the one with parameter values.

Which clause can fire before which: clauses of one `one of` block are never on one path. A clause
R cannot fire before a clause D when every way R's condition can hold also makes D's hold (each
pattern of R's that matters is at least as strict as one of D's: same event type and attester, a
superset of its constraints and timings) and D comes first in the contract (clauses that become
ready at the same event fire in contract order). Anything else is assumed able to fire first. The
deadline fires after every clause that can fire at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from contracts_dsl.compiled import (
    ActionSpec,
    ClauseSpec,
    CompiledContract,
    Condition,
    CondSpec,
    PatternSpec,
)

BASIS_POINTS_FULL: Final = 10_000
MONEY_KINDS: Final = frozenset({"pay", "penalty", "refund"})

Share = Callable[[ActionSpec], Fraction | None]
"""The part of the escrow a non-`remainder` money action asks for (None: unknown)."""

DEADLINE: Final = -1
"""The index that stands for the deadline's action list."""


def static_share(contract: CompiledContract) -> Share:
    """What an action asks for, as far as the contract alone tells (literals, percentages)."""
    escrow = contract.escrow.amount
    escrow_literal = escrow.literal

    def share(action: ActionSpec) -> Fraction | None:
        amount = action.amount
        if amount is None:
            return Fraction(0)
        if amount.kind == "percent":
            if amount.base is None:
                return Fraction(amount.bp, BASIS_POINTS_FULL)
            if amount.base.literal is not None and escrow_literal:
                return Fraction(
                    amount.base.literal * amount.bp // BASIS_POINTS_FULL, escrow_literal
                )
            return None
        if amount.kind == "fixed":
            assert amount.money is not None
            if amount.money.param is not None and amount.money.param == escrow.param:
                return Fraction(1)
            if amount.money.literal is not None and escrow_literal:
                return Fraction(amount.money.literal, escrow_literal)
            return None
        return None  # remainder: callers handle it

    return share


def bound_share(funded_minor: int, requested: Callable[[ActionSpec], int]) -> Share:
    """What an action asks for with parameter values: `requested(action)` minor units."""

    def share(action: ActionSpec) -> Fraction | None:
        if action.amount is None:
            return Fraction(0)
        if funded_minor <= 0:
            return Fraction(1)
        return Fraction(requested(action), funded_minor)

    return share


# -- which clause can fire before which ---------------------------------------------------------


def _pattern_implies(strict: PatternSpec, loose: PatternSpec) -> bool:
    """Every event matching `strict` (at a time) also matches `loose` (at that time)."""
    return (
        strict.event_type == loose.event_type
        and strict.attester == loose.attester
        and strict.attester_kind == loose.attester_kind
        and set(loose.constraints) <= set(strict.constraints)
        and set(loose.timings) <= set(strict.timings)
    )


def implies(when: Condition, then: Condition) -> bool:
    """Sound (not complete): whenever `when` holds, `then` holds too."""
    if isinstance(then, CondSpec) and then.kind == "all":
        return all(implies(when, item) for item in then.items)
    if isinstance(when, CondSpec) and when.kind == "any":
        return all(implies(item, then) for item in when.items)
    if isinstance(when, CondSpec) and any(implies(item, then) for item in when.items):
        return True  # `when` is `all`: one of its parts is enough
    if isinstance(then, CondSpec):
        return any(implies(when, item) for item in then.items)  # `then` is `any`
    return isinstance(when, PatternSpec) and _pattern_implies(when, then)


def can_fire_before(contract: CompiledContract, other: int, target: int) -> bool:
    """Whether clause `other` can fire before clause `target` on one path (indices into
    `contract.clauses`; `target` may be DEADLINE)."""
    if target == DEADLINE:
        return True
    if other == target:
        return False
    first, second = contract.clauses[other], contract.clauses[target]
    if first.group is not None and first.group == second.group:
        return False
    return not (target < other and implies(first.condition, second.condition))


# -- how much can be gone -----------------------------------------------------------------------


def _add(total: Fraction | None, part: Fraction | None) -> Fraction | None:
    """A sum capped at the whole escrow; unknown stays unknown unless the known part is whole."""
    if total is not None and total >= 1:
        return Fraction(1)
    if part is not None and part >= 1:
        return Fraction(1)
    if total is None or part is None:
        return None
    return min(Fraction(1), total + part)


def list_take(actions: Sequence[ActionSpec], share: Share) -> Fraction | None:
    """The most an action list can take from a full escrow (1 with a `remainder`)."""
    total: Fraction | None = Fraction(0)
    for action in actions:
        if action.kind not in MONEY_KINDS:
            continue
        assert action.amount is not None
        part = Fraction(1) if action.amount.kind == "remainder" else share(action)
        total = _add(total, part)
    return total


def _worst(parts: Sequence[tuple[Fraction | None, str]]) -> tuple[Fraction | None, str | None]:
    known = [(p, who) for p, who in parts if p is not None]
    best = max(known, key=lambda x: x[0], default=None)
    if best is not None and best[0] >= 1:
        return Fraction(1), best[1]
    if len(known) < len(parts):
        return None, None
    if best is None or best[0] == 0:
        return Fraction(0), None
    return best


def taken_before(
    contract: CompiledContract, target: int, share: Share
) -> tuple[Fraction | None, tuple[str, ...]]:
    """The most the clauses that can fire before `target` on one path can take (capped at 1,
    None when unknown), and the ids of the clauses that take it on that worst path."""
    units: dict[str, list[int]] = {}
    for index, clause in enumerate(contract.clauses):
        units.setdefault(clause.group or f"#{index}", []).append(index)
    own = None if target == DEADLINE else contract.clauses[target]
    total: Fraction | None = Fraction(0)
    takers: list[str] = []
    for key, members in units.items():
        if own is not None and (key == own.group or members == [target]):
            continue
        parts = [
            (list_take(contract.clauses[i].actions, share), contract.clauses[i].id)
            for i in members
            if can_fire_before(contract, i, target)
        ]
        worst, who = _worst(parts)
        if who is not None:
            takers.append(who)
        total = _add(total, worst)
    return total, tuple(takers)


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A money action of a delivering action list that can pay less than asked.

    `where` is the clause index (DEADLINE for the deadline), `action_index` the action's index
    in its list; `reason` is `starved` (a `remainder` that can find the escrow empty), `capped`
    (an amount that can exceed what is left) or `zero` (an amount that rounds to nothing);
    `takers` are the clauses that can take the money first on the worst path."""

    where: int
    action_index: int
    reason: str
    takers: tuple[str, ...]


def delivering_lists(contract: CompiledContract) -> list[tuple[int, tuple[ActionSpec, ...]]]:
    """Every action list that delivers a title, with its index (DEADLINE for the deadline)."""
    found: list[tuple[int, tuple[ActionSpec, ...]]] = [
        (i, c.actions)
        for i, c in enumerate(contract.clauses)
        if any(a.kind == "deliver_title" for a in c.actions)
    ]
    deadline = contract.deadline
    if deadline is not None and any(a.kind == "deliver_title" for a in deadline.actions):
        found.append((DEADLINE, deadline.actions))
    return found


def delivery_shortfalls(
    contract: CompiledContract, share: Share
) -> tuple[list[Shortfall], list[tuple[int, int]]]:
    """Money actions of delivering lists that can pay short, and those that cannot be decided
    with this `share` (unknown amounts): (where, action_index) pairs."""
    shorts: list[Shortfall] = []
    undecided: list[tuple[int, int]] = []
    for where, actions in delivering_lists(contract):
        before, takers = taken_before(contract, where, share)
        for index, action in enumerate(actions):
            if action.kind not in MONEY_KINDS:
                continue
            assert action.amount is not None
            if action.amount.kind == "remainder":
                if before is None:
                    undecided.append((where, index))
                elif before >= 1:
                    shorts.append(Shortfall(where, index, "starved", takers))
                before = Fraction(1)
                continue
            part = share(action)
            if before is None or part is None:
                undecided.append((where, index))
            elif part == 0:
                shorts.append(Shortfall(where, index, "zero", takers))
            elif before + part > 1:
                shorts.append(Shortfall(where, index, "capped", takers))
            before = _add(before, part)
    return shorts, undecided


@dataclass(frozen=True, slots=True)
class Starvation:
    """Clause `victim`'s money action `action_index` (paying `party`) can be starved to zero by
    the `remainder` at `by_action` of clause `by` (paying another party), which can fire first."""

    victim: int
    action_index: int
    by: int
    by_action: int


def _remainders(clause: ClauseSpec) -> list[tuple[int, ActionSpec]]:
    return [
        (i, a)
        for i, a in enumerate(clause.actions)
        if a.kind in MONEY_KINDS and a.amount is not None and a.amount.kind == "remainder"
    ]


def starvations(contract: CompiledContract) -> list[Starvation]:
    """Money actions (of clauses that deliver no title) that another party's `remainder` can
    starve to zero. Deliveries are the business of `delivery_shortfalls`."""
    found: list[Starvation] = []
    remainders = [_remainders(clause) for clause in contract.clauses]
    before: dict[tuple[int, int], bool] = {}  # (other, victim) -> can fire before (memo)
    for victim, clause in enumerate(contract.clauses):
        if any(a.kind == "deliver_title" for a in clause.actions):
            continue
        for index, action in enumerate(clause.actions):
            if action.kind not in MONEY_KINDS:
                continue
            for other in range(len(contract.clauses)):
                # The cheap test first: most clauses pay no `remainder` to another party.
                hit = next(((i, a) for i, a in remainders[other] if a.party != action.party), None)
                if hit is None:
                    continue
                key = (other, victim)
                if key not in before:
                    before[key] = can_fire_before(contract, other, victim)
                if before[key]:
                    found.append(Starvation(victim, index, other, hit[0]))
                    break
    return found
