"""Typed errors for values handed to the evaluator boundary (parameters, events, escrow, state).

They are data, not exceptions: `bind_params`, `parse_event` and `evaluate` return them. `code` is
stable (PVxxx for parameter values, EVxxx for events and evaluation inputs); clients branch on it,
never on `message`.

Parameter values (PV):
    PV001 missing parameter          PV002 unknown parameter        PV003 wrong JSON type
    PV004 invalid money              PV005 invalid timestamp        PV006 invalid duration
    PV007 invalid number             PV008 invalid text/wallet/title
    PV009 fixed amounts on one path exceed the escrow (with these values)
    PV010 a title could be delivered against less than its payment (with these values)
Events and evaluation (EV):
    EV001 parameters bound for another contract      EV002 state of another contract
    EV003 escrow currency differs from the contract  EV004 inconsistent escrow amounts
    EV005 invalid `now`                              EV006 too many events
    EV007 an input of the wrong type (contract, params, escrow, events, state)
    EV010 malformed event (it is ignored)            EV011 duplicate event id (ignored)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InputError:
    """A problem with one input value: stable `code`, the `field` it concerns, a message."""

    code: str
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code} {self.field}: {self.message}"
