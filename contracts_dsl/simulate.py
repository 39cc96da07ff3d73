"""Step-by-step simulation: feed events one at a time through the real evaluator.

Used by `contracts_dsl simulate` and by the spec runner. Each step evaluates every event so far
at `now` = that event's `observed_at` (never going back in time), with the state and escrow
returned by the previous step; the state is round-tripped through its JSON form between steps,
as the core would persist it. A final step at `final_now` (when later than the last event) lets
deadlines fire.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from contracts_dsl import _literals, currencies
from contracts_dsl.compiled import CompiledContract
from contracts_dsl.evaluator import ContractState, Escrow, Evaluation, Event, evaluate
from contracts_dsl.params import BoundParams, escrow_minor


@dataclass(frozen=True, slots=True)
class Step:
    event: Event | None
    now_us: int
    evaluation: Evaluation


def simulate(
    contract: CompiledContract,
    params: BoundParams,
    events: Sequence[Event],
    final_now_us: int | None = None,
) -> list[Step]:
    """Run the events in the given order; see the module docstring. Never raises."""
    funded = escrow_minor(contract, params)
    escrow = Escrow(contract.escrow.currency, funded, funded)
    state = ContractState.initial(contract)
    steps: list[Step] = []
    now = 0
    for index, event in enumerate(events):
        now = max(now, event.observed_at_us)
        evaluation = evaluate(contract, params, escrow, list(events[: index + 1]), now, state)
        steps.append(Step(event, now, evaluation))
        escrow = evaluation.escrow
        state = ContractState.from_json(json.loads(json.dumps(evaluation.state.to_json())))
    if final_now_us is not None and (not steps or final_now_us > now):
        evaluation = evaluate(contract, params, escrow, list(events), final_now_us, state)
        steps.append(Step(None, final_now_us, evaluation))
    return steps


def render_steps(steps: Sequence[Step], contract: CompiledContract) -> str:
    """Human-readable trace: per step the event, what matched or why not, legs and escrow left."""
    currency = contract.escrow.currency
    lines: list[str] = []
    for number, step in enumerate(steps, 1):
        evaluation = step.evaluation
        if step.event is not None:
            event = step.event
            lines.append(
                f"step {number}: event {event.event_id} {event.event_type} by {event.oracle} "
                f"at {_literals.format_us(event.observed_at_us)}"
            )
        else:
            lines.append(f"step {number}: time passes to {_literals.format_us(step.now_us)}")
        for problem in evaluation.rejected:
            lines.append(f"  rejected: {problem}")
        for problem in evaluation.ignored:
            lines.append(f"  ignored: {problem}")
        for report in evaluation.reports:
            if step.event is not None and report.event_id != step.event.event_id:
                continue
            if report.status in ("future", "after_deadline"):
                lines.append(f"  not counted: {report.status.replace('_', ' ')}")
            for clause in report.matched:
                lines.append(f"  matched {clause}")
            for clause, reason in report.why_not:
                lines.append(f"  no match for {clause}: {reason}")
            if not report.matched and not report.why_not and report.status == "ignored":
                lines.append("  no clause listens to this event type")
        for leg in evaluation.legs:
            if leg.kind == "deliver_title":
                lines.append(f"  leg {leg.leg_id}: deliver title {leg.title} to {leg.wallet}")
            else:
                target = f" (pay out in {leg.target_currency})" if leg.target_currency else ""
                lines.append(
                    f"  leg {leg.leg_id}: {leg.kind} "
                    f"{currencies.format_minor(leg.amount_minor, currency)} to {leg.party} "
                    f"({leg.wallet}){target}"
                )
        for note in evaluation.notes:
            lines.append(f"  note: {note}")
        lines.append(
            f"  escrow left: {currencies.format_minor(evaluation.escrow.remaining_minor, currency)}"
            + (
                f"; terminal ({evaluation.state.terminal_reason})"
                if evaluation.state.terminal
                else ""
            )
        )
    return "\n".join(lines) + "\n"
