"""`explain` in English and Chinese."""

from __future__ import annotations

from contracts_dsl import explain_source

from ._support import EXAMPLES

OWD = (EXAMPLES / "overseas-warehouse-delivery.contract").read_text(encoding="utf-8")


def test_english() -> None:
    text = explain_source(OWD, "en").text
    assert text is not None
    for phrase in [
        'Contract "overseas-warehouse-delivery"',
        "sensors: at least 2 of",
        "Escrow: buyer locks price (CNY) in escrow.",
        "Deadline: at 2026-12-31T00:00:00+08:00, refund whatever remains in escrow to buyer.",
        "[arrival] When customs attests that customs cleared the goods (declaration equals the "
        "term `declaration`) and sensors attests that the goods arrived",
        "within 14 days after the goods arrived (iot.arrived)",
        "pay 5% of price (CNY) to buyer as a penalty",
        "rounded down to the minor unit (0.01 CNY)",
    ]:
        assert phrase in text, phrase


def test_chinese() -> None:
    text = explain_source(OWD, "zh").text
    assert text is not None
    for phrase in [
        "合约「overseas-warehouse-delivery」",
        "「iot.lax3.gate」, 「iot.lax3.dock」, 「iot.lax3.rfid」 中至少 2 个",
        "托管：buyer 将 price（CNY） 存入托管。",
        "海关放行货物（declaration 等于 参数 declaration）",
        "向 seller 支付托管金额的 30%",
        "货物到达 (iot.arrived)后 14 天内",
        "向最小货币单位",
    ]:
        assert phrase in text or phrase.replace("向最小", "到最小") in text, phrase


def test_one_of_and_cross_currency_are_explained() -> None:
    text = explain_source((EXAMPLES / "cross-currency-payout.contract").read_text(), "en").text
    assert text is not None
    assert "Only the first of these to happen counts" in text
    assert "(paid out in THB through the bridge)" in text


def test_contracts_with_errors_are_not_explained() -> None:
    result = explain_source(OWD.replace("to seller", "to sellr", 1), "en")
    assert result.text is None
    assert [d.code for d in result.diagnostics] == ["CD020"]


def test_unknown_language() -> None:
    assert explain_source(OWD, "fr").text is None
