"""Money at the edges, tiers, owner keys and the canonical signed instruction (no server)."""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallets import (
    CURRENCIES,
    CURRENCY_CODES,
    INT64_MAX,
    LIMITS,
    BadSignature,
    MalformedInstruction,
    MoneyError,
    OwnerKey,
    PvPInstruction,
    TransferInstruction,
    UnsupportedCurrency,
    WalletKind,
    format_amount,
    limit_day,
    limits_for,
    parse_amount,
    sign_transfer,
    verify,
)
from wallets.keys import (
    CryptographyEd25519,
    available_ed25519_backends,
    check_public_key,
    ed25519_backend,
)

codes = st.sampled_from(CURRENCY_CODES)
amounts = st.integers(min_value=-INT64_MAX, max_value=INT64_MAX)


@given(amounts, codes)
def test_format_then_parse_is_the_identity(amount: int, code: str) -> None:
    assert parse_amount(format_amount(amount, code), code, allow_negative=True) == amount


@given(amounts, codes)
def test_formatting_agrees_with_decimal_arithmetic(amount: int, code: str) -> None:
    exponent = CURRENCIES[code].exponent
    assert Decimal(format_amount(amount, code)) == Decimal(amount).scaleb(-exponent)
    assert Decimal(format_amount(amount, code, grouping=True).replace(",", "")) == Decimal(
        amount
    ).scaleb(-exponent)


@given(st.text(max_size=30), codes)
def test_parse_accepts_only_plain_decimals(text: str, code: str) -> None:
    try:
        value = parse_amount(text, code, allow_negative=True)
    except MoneyError:
        return
    assert re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]{1,2})?", text)
    assert Decimal(text).scaleb(CURRENCIES[code].exponent) == value


@pytest.mark.parametrize(
    "text", ["", "1e3", "+1", "01", "1.", ".5", "1.234", "1,000", " 1", "NaN", "١"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_amount(text, "CNY")


def test_parse_rejects_negative_unless_asked_and_beyond_int64() -> None:
    with pytest.raises(MoneyError):
        parse_amount("-1.00", "CNY")
    assert parse_amount("-1.00", "CNY", allow_negative=True) == -100
    assert parse_amount("92233720368547758.07", "CNY") == INT64_MAX
    with pytest.raises(MoneyError):
        parse_amount("92233720368547758.08", "CNY")
    with pytest.raises(UnsupportedCurrency):
        parse_amount("1", "USD")


def test_tier_table() -> None:
    assert limits_for(WalletKind.PERSONAL, 4, "CNY").balance_cap_minor == 10_000_00
    assert limits_for(WalletKind.PERSONAL, 2, "HKD").daily_cap_minor == 110_000_00
    assert limits_for(WalletKind.PERSONAL, 3, "AED").single_payment_cap_minor == 2_500_00
    assert limits_for(WalletKind.ENTERPRISE, 0, "THB").balance_cap_minor is None
    assert all(v is None for v in vars_of(limits_for(WalletKind.INSTITUTION, 0, "SAR")))
    # Stricter tiers never allow more than looser ones.
    for code in CURRENCY_CODES:
        for looser, stricter in ((2, 3), (3, 4)):
            a, b = (
                LIMITS[(WalletKind.PERSONAL, looser, code)],
                LIMITS[(WalletKind.PERSONAL, stricter, code)],
            )
            assert vars_of(b) <= vars_of(a)


def vars_of(limits: object) -> tuple[int | None, ...]:
    return (
        limits.balance_cap_minor,  # type: ignore[attr-defined]
        limits.single_payment_cap_minor,  # type: ignore[attr-defined]
        limits.daily_cap_minor,  # type: ignore[attr-defined]
    )


def test_limit_day_turns_at_midnight_china_standard_time() -> None:
    # 2026-11-27T15:59:59Z is 23:59:59 in Shenzhen; one second later the day turns.
    before = 1_795_795_199 * 1_000_000
    assert limit_day(before + 1_000_000) == limit_day(before) + 1


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,20}", fullmatch=True)


@given(
    ids,
    ids,
    codes,
    st.integers(0, INT64_MAX),
    ids,
    st.integers(0, INT64_MAX),
    st.text(
        alphabet=st.characters(
            min_codepoint=0x20, blacklist_characters="\x7f", blacklist_categories=("Cs",)
        ),
        max_size=40,
    ),
)
@settings(max_examples=200)
def test_instruction_bytes_round_trip(
    source: str, target: str, code: str, amount: int, rid: str, expires: int, memo: str
) -> None:
    instruction = TransferInstruction(
        source, target, code, amount, "oracle/x.y-1", rid, expires, memo
    )
    assert TransferInstruction.from_bytes(instruction.to_bytes()) == instruction


@given(st.text(max_size=10), st.sampled_from(["\ud800", "\udbff", "\udfff"]))
def test_a_memo_that_is_no_unicode_text_is_a_typed_refusal(text: str, surrogate: str) -> None:
    """A lone surrogate has no UTF-8 encoding: MalformedInstruction naming the field, not a
    UnicodeEncodeError (found by the round trip above generating one)."""
    memo = text.replace("\n", "") + surrogate
    instruction = TransferInstruction("w1", "w2", "CNY", 1, "oracle/x.y-1", "r-1", 0, memo)
    with pytest.raises(MalformedInstruction) as refused:
        instruction.to_bytes()
    assert refused.value.field == "memo"


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_never_crashes(data: bytes) -> None:
    with contextlib.suppress(MalformedInstruction):
        TransferInstruction.from_bytes(data)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"amount_minor: 100\n", b"amount_minor: 0100\n"),
        (b"amount_minor: 100\n", b"amount_minor: +100\n"),
        (b"amount_minor: 100\n", b"amount_minor:  100\n"),
        (b"memo: \n", b"memo: \nextra: 1\n"),
        (b"condpay.transfer.v2\n", b"condpay.transfer.v3\n"),
        (b"condpay.transfer.v2\n", b"condpay.transfer.v1\n"),
        (b"submitter: platform/p1\n", b"submitter: Platform/p1\n"),
        (b"submitter: platform/p1\n", b"submitter: bank/p1\n"),
        (b"submitter: platform/p1\n", b"submitter: platform/P1\n"),
        (b"submitter: platform/p1\n", b"submitter: platform\n"),
        (b"source: w_a\ntarget: w_b\n", b"target: w_b\nsource: w_a\n"),
        (b"memo: \n", b"memo: "),
    ],
)
def test_non_canonical_bytes_are_refused(old: bytes, new: bytes) -> None:
    canonical = TransferInstruction(
        "w_a", "w_b", "CNY", 100, "platform/p1", "r1", 10**15
    ).to_bytes()
    assert old in canonical
    with pytest.raises(MalformedInstruction):
        TransferInstruction.from_bytes(canonical.replace(old, new))


def test_a_pvp_quote_id_is_an_id_or_empty_for_at_market() -> None:
    """The PvP's quote id may be empty (at market); anything else must still be an id."""

    def pvp(quote_id: str) -> PvPInstruction:
        return PvPInstruction(
            "w_a", "w_b", quote_id, "HKD", 100, "CNY", 90, "platform/p1", "r1", 10**15
        )

    for quote_id in ("", "q000001-0a1b2c3d4e5f"):
        assert PvPInstruction.from_bytes(pvp(quote_id).to_bytes()) == pvp(quote_id)
    canonical = pvp("").to_bytes()
    assert b"\nquote_id: \n" in canonical
    for bad in (b" ", b"-q", b"q q", b"q" * 129, b"\xc3\xa9"):
        with pytest.raises(MalformedInstruction):
            PvPInstruction.from_bytes(canonical.replace(b"quote_id: ", b"quote_id: " + bad))


def test_signature_binds_the_exact_bytes() -> None:
    key, other = OwnerKey.generate(), OwnerKey.generate()
    signed = sign_transfer(
        key, TransferInstruction("w_a", "w_b", "CNY", 100, "platform/p1", "r1", 10**15)
    )
    public = key.public_key
    verify(public, signed.signature, signed.payload)
    tampered = signed.payload.replace(b"amount_minor: 100", b"amount_minor: 900")
    with pytest.raises(BadSignature):
        verify(public, signed.signature, tampered)
    with pytest.raises(BadSignature):
        verify(other.public_key, signed.signature, signed.payload)
    with pytest.raises(BadSignature):
        verify(public, signed.signature[:-1], signed.payload)
    assert OwnerKey.from_seed(key.seed()).public_key == key.public_key


valid_keys = st.builds(
    lambda seed: OwnerKey.from_seed(seed).public_key, st.binary(min_size=32, max_size=32)
)


@given(
    st.one_of(valid_keys, st.binary(min_size=32, max_size=32)),
    st.binary(min_size=64, max_size=64),
    st.binary(max_size=64),
)
@settings(max_examples=300)
def test_both_ed25519_backends_agree_on_every_acceptable_key(
    pk: bytes, sig: bytes, message: bytes
) -> None:
    try:
        check_public_key(pk)
    except BadSignature:
        return  # such a key can never belong to a wallet
    results = {b.name: b.verify(pk, sig, message) for b in available_ed25519_backends()}
    assert set(results) == {"cryptography", "pynacl"}
    assert len(set(results.values())) == 1, results


def test_small_order_keys_are_refused_because_openssl_accepts_forgeries_for_them() -> None:
    small_order = bytes(32)  # y = 0: a point of order 4
    forged = bytes(64)
    assert CryptographyEd25519().verify(small_order, forged, bytes(26))  # why the check exists
    with pytest.raises(BadSignature):
        check_public_key(small_order)
    identity = bytes([1]) + bytes(31)
    with pytest.raises(BadSignature):
        check_public_key(identity)
    assert check_public_key(OwnerKey.generate().public_key)


def test_both_ed25519_backends_accept_valid_and_refuse_tampered_signatures() -> None:
    key = OwnerKey.generate()
    for message in (b"", b"m", bytes(range(256)) * 4):
        signature = key.sign(message)
        for backend in available_ed25519_backends():
            assert backend.verify(key.public_key, signature, message), backend.name
            assert not backend.verify(key.public_key, signature, message + b"x"), backend.name
            flipped = bytes([signature[0] ^ 1]) + signature[1:]
            assert not backend.verify(key.public_key, flipped, message), backend.name
    assert ed25519_backend().name == "pynacl"


@given(st.data())
@settings(max_examples=400)
def test_whatever_decodes_is_the_one_encoding_of_its_instruction(data: st.DataObject) -> None:
    canonical = bytearray(
        TransferInstruction("w_a", "w_b", "CNY", 100, "platform/p1", "r1", 10**15).to_bytes()
    )
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(canonical) - 1))
        canonical[position] = data.draw(st.sampled_from(b"0123456789 :+-\nwabCNY.\t_"))
    try:
        instruction = TransferInstruction.from_bytes(bytes(canonical))
    except MalformedInstruction:
        return
    assert instruction.to_bytes() == bytes(canonical)
