"""QuoteFx retries: an answered quote, or a refusal, is answered again from what was stored under
the request id, without asking the bridge; another request under the same id is refused."""

from __future__ import annotations

import pytest
from condpay.v1 import settlement_pb2

from tests.settlement.world import TradeWorld, refused


def _quote_request(request_id: str, **amount: int) -> settlement_pb2.QuoteFxRequest:
    return settlement_pb2.QuoteFxRequest(
        request_id=request_id, source_currency="HKD", target_currency="CNY", **amount
    )


def _forbid_the_bridge(trade: TradeWorld, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on the bridge's quote records every call, and fails it."""
    bridge = trade.harness.runtime.bridge
    assert bridge is not None
    asked: list[object] = []

    async def quote(*args: object, **kwargs: object) -> None:
        asked.append((args, kwargs))
        raise AssertionError("a retry asked the bridge again")

    monkeypatch.setattr(bridge, "quote", quote)
    return asked


async def test_a_retried_quote_is_answered_from_storage(
    trade: TradeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = trade.platform
    request = _quote_request("quote-retry-1", target_amount_minor=125_000_00)
    first = await client.api.settlements.quote_fx(request)
    asked = _forbid_the_bridge(trade, monkeypatch)
    again = await client.api.settlements.quote_fx(request)
    assert (first.operation.replayed, again.operation.replayed) == (False, True)
    assert again.quote == first.quote
    await refused(
        "IDEMPOTENCY_KEY_REUSED",
        client.api.settlements.quote_fx(
            _quote_request("quote-retry-1", target_amount_minor=125_000_01),
        ),
    )
    assert asked == []


async def test_a_retried_refusal_is_answered_from_storage(
    trade: TradeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = trade.platform
    request = _quote_request("quote-retry-2", source_amount_minor=1)
    first = await refused("BRIDGE_REFUSED", client.api.settlements.quote_fx(request))
    asked = _forbid_the_bridge(trade, monkeypatch)
    again = await refused("BRIDGE_REFUSED", client.api.settlements.quote_fx(request))
    assert (first.replayed, again.replayed) == (False, True)
    assert again.status == first.status
    assert asked == []
