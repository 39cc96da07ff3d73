"""The built-in trade event types and their typed attributes.

A contract may use these without declaring them; further types are declared in the contract with
`event <namespace>.<name>(<attr>: <type>, ...)`. Attribute types are `text`, `number`, `bool` and
`timestamp`. An event may carry attributes beyond its schema; they are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

ATTRIBUTE_TYPES: Final = ("text", "number", "bool", "timestamp")


@dataclass(frozen=True, slots=True)
class EventSchema:
    """An event type: its attributes (name -> type) and how `explain` says it happened."""

    event_type: str
    attributes: Mapping[str, str]
    en: str
    zh: str
    builtin: bool


def _schema(event_type: str, en: str, zh: str, **attributes: str) -> EventSchema:
    return EventSchema(event_type, MappingProxyType(dict(attributes)), en, zh, True)


BUILTIN_EVENTS: Final[Mapping[str, EventSchema]] = MappingProxyType(
    {
        schema.event_type: schema
        for schema in (
            _schema(
                "customs.cleared",
                "customs cleared the goods",
                "海关放行货物",
                declaration="text",
                port="text",
                hs_code="text",
                duty_paid="bool",
            ),
            _schema(
                "iot.arrived",
                "the goods arrived",
                "货物到达",
                site="text",
                container="text",
                gate="text",
            ),
            _schema(
                "receipt.signed",
                "the receipt was signed",
                "收货确认已签署",
                order="text",
                signer="text",
            ),
            _schema(
                "iot.condition",
                "a shipment condition reading was reported",
                "上报运输环境读数",
                container="text",
                max_temp_c="number",
                min_temp_c="number",
                shock_g="number",
                humidity_pct="number",
            ),
        )
    }
)
