"""BLS12-381 with proof of possession: both backends agree byte for byte, and the rogue-key
attack that proof of possession exists to stop really works without it."""

from __future__ import annotations

import sys

import pytest
from py_ecc.bls.ciphersuites import G2ProofOfPossession
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1
from py_ecc.optimized_bls12_381 import G1, add, multiply, neg
from py_ecc.optimized_bls12_381 import curve_order as py_ecc_curve_order

from wallets.bls import (
    CURVE_ORDER,
    IDENTITY_SIGNATURE,
    BlspyBackend,
    PyEccBackend,
    available_backends,
    backend,
    key_validate,
    py_ecc_ciphersuite,
    secret_key,
)

MESSAGE = b"condpay attestation: customs.cleared for payment p-1"
KEYS_IKM = [bytes([i]) * 32 for i in range(1, 4)]
KEYS = [secret_key(ikm) for ikm in KEYS_IKM]


def test_keygen_is_py_eccs_without_importing_it() -> None:
    """wallets.bls derives keys with hashlib (so the server need not import py-ecc): the same
    keys as py-ecc's KeyGen."""
    assert py_ecc_curve_order == CURVE_ORDER
    for ikm in (bytes(32), b"\xff" * 32, bytes(range(40)), b"condpay".ljust(64, b"*"), *KEYS_IKM):
        assert secret_key(ikm) == G2ProofOfPossession.KeyGen(ikm)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        secret_key(bytes(31))


def test_py_ecc_is_loaded_through_one_door_that_keeps_the_recursion_limit() -> None:
    assert py_ecc_ciphersuite() is G2ProofOfPossession
    assert sys.getrecursionlimit() <= 1000  # conftest puts it back; the door never raises it
    assert key_validate(PyEccBackend().public_key(KEYS[0]))
    assert not key_validate(b"\x00" * 48)


def test_the_fast_backend_is_native_and_agrees_with_the_reference() -> None:
    reference, native = PyEccBackend(), BlspyBackend()
    assert backend().name == "blspy"
    for sk in KEYS[:2]:
        assert native.public_key(sk) == reference.public_key(sk)
        assert native.sign(sk, MESSAGE) == reference.sign(sk, MESSAGE)
        assert native.pop_prove(sk) == reference.pop_prove(sk)
    signatures = [native.sign(sk, MESSAGE) for sk in KEYS]
    assert native.aggregate(signatures) == reference.aggregate(signatures)


@pytest.mark.parametrize("bls", available_backends(), ids=lambda b: b.name)
def test_sign_verify_aggregate_and_pop(bls: PyEccBackend | BlspyBackend) -> None:
    public = [bls.public_key(sk) for sk in KEYS]
    signatures = [bls.sign(sk, MESSAGE) for sk in KEYS]
    assert bls.verify(public[0], MESSAGE, signatures[0])
    assert not bls.verify(public[0], MESSAGE + b"!", signatures[0])
    assert not bls.verify(public[1], MESSAGE, signatures[0])
    aggregate = bls.aggregate(signatures)
    assert bls.sign_aggregate(KEYS, MESSAGE) == aggregate
    assert bls.sign_aggregate(KEYS[:2], MESSAGE) == bls.aggregate(signatures[:2])
    assert bls.fast_aggregate_verify(public, MESSAGE, aggregate)
    assert not bls.fast_aggregate_verify(public[:2], MESSAGE, aggregate)  # one short
    assert not bls.fast_aggregate_verify([], MESSAGE, aggregate)
    assert bls.pop_verify(public[0], bls.pop_prove(KEYS[0]))
    assert not bls.pop_verify(public[1], bls.pop_prove(KEYS[0]))
    for garbage in (b"", b"\x00" * 48, b"\xff" * 96):
        assert not bls.verify(garbage, MESSAGE, signatures[0])
        assert not bls.verify(public[0], MESSAGE, garbage)
        assert not bls.pop_verify(public[0], garbage)


@pytest.mark.parametrize("bls", available_backends(), ids=lambda b: b.name)
def test_one_signature_under_the_keys_sum_is_the_aggregate_of_each_keys(
    bls: PyEccBackend | BlspyBackend,
) -> None:
    """sign_aggregate signs once, with the keys' sum: the same bytes as each key signing and the
    signatures aggregated, for any number of keys, a key given twice, and keys that cancel out."""
    for keys in (KEYS[:1], KEYS, [KEYS[0], KEYS[0]], [*KEYS, CURVE_ORDER - 1]):
        each = bls.aggregate([bls.sign(k, MESSAGE) for k in keys])
        assert bls.sign_aggregate(keys, MESSAGE) == each
    cancelling = [KEYS[0], CURVE_ORDER - KEYS[0]]
    each = bls.aggregate([bls.sign(k, MESSAGE) for k in cancelling])
    assert bls.sign_aggregate(cancelling, MESSAGE) == each == IDENTITY_SIGNATURE
    public = [bls.public_key(k) for k in cancelling]
    assert not bls.fast_aggregate_verify(public, MESSAGE, IDENTITY_SIGNATURE)
    with pytest.raises(ValueError, match="nothing to sign with"):
        bls.sign_aggregate([], MESSAGE)


def test_rogue_key_forges_an_aggregate_unless_proof_of_possession_is_checked() -> None:
    bls = backend()
    honest_pk = bls.public_key(KEYS[0])
    # The attacker knows only honest_pk. It picks x and publishes rogue = g1·x − honest.
    x = 123456789
    rogue_point = add(multiply(G1, x), neg(pubkey_to_G1(honest_pk)))
    rogue_pk = G1_to_pubkey(rogue_point)
    # pk_honest + pk_rogue = g1·x, so x alone signs for "both".
    forged = bls.sign(x, MESSAGE)
    assert bls.fast_aggregate_verify([honest_pk, rogue_pk], MESSAGE, forged)
    # Proof of possession needs the rogue key's secret, which nobody knows; the attacker's best
    # tries (its own x, a proof for another key) do not verify, so the key is never registered.
    assert not bls.pop_verify(rogue_pk, bls.pop_prove(x))
    assert not bls.pop_verify(rogue_pk, bls.pop_prove(KEYS[0]))
