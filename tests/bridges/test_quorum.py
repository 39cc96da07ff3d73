"""Quorum certificates: the pure verification the core calls, against every way to cheat."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from bridges import (
    BlockHeader,
    Bridge,
    QuorumCertificate,
    ValidatorInfo,
    ValidatorSet,
    checked_public_keys,
    header_hash,
    quorum_threshold,
    verify_quorum_certificate,
)
from bridges._quorum import Validator, aggregate, quorum_signature
from bridges.errors import InvalidRequest, Reason
from wallets import bls

SEED = b"q" * 32
IDS = ("BOT", "CBUAE", "HKMA", "PBoC", "SAMA")
NODES = {i: Validator(i, SEED) for i in IDS}
KEYS = {i: n.public_key for i, n in NODES.items()}
HEADER = BlockHeader(
    chain_id="test-chain",
    height=7,
    previous_hash=bytes(range(32)),
    sealed_at_us=1_800_000_000_000_000,
    transfer_ids=("t-1", "t-2"),
    transfers_digest=bytes(32),
)


def certify(header: BlockHeader, signers: tuple[str, ...]) -> QuorumCertificate:
    digest = header_hash(header)
    return QuorumCertificate(digest, signers, aggregate([NODES[s].sign(digest) for s in signers]))


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4), (7, 5)])
def test_the_threshold_is_the_least_k_with_3k_at_least_2n(n: int, k: int) -> None:
    assert quorum_threshold(n) == k
    assert 3 * k >= 2 * n > 3 * (k - 1)


def test_four_or_five_of_five_is_final() -> None:
    assert verify_quorum_certificate(HEADER, certify(HEADER, IDS), KEYS)
    assert verify_quorum_certificate(HEADER, certify(HEADER, IDS[1:]), KEYS)
    unordered = certify(HEADER, ("SAMA", "BOT", "PBoC", "HKMA"))
    assert verify_quorum_certificate(HEADER, unordered, KEYS)


def test_the_bridges_one_signature_for_its_signers_is_their_aggregate() -> None:
    """The bridge signs a block for its simulated validators at once (quorum_signature): the same
    certificate as each signing and the signatures aggregated."""
    digest = header_hash(HEADER)
    for signers in (IDS, IDS[1:], ("SAMA", "BOT", "PBoC", "HKMA")):
        together = quorum_signature([NODES[s] for s in signers], digest)
        assert together == certify(HEADER, signers).aggregate_signature
        assert verify_quorum_certificate(HEADER, QuorumCertificate(digest, signers, together), KEYS)


def test_three_of_five_is_short() -> None:
    assert not verify_quorum_certificate(HEADER, certify(HEADER, IDS[:3]), KEYS)


def test_a_duplicated_signer_does_not_count_twice() -> None:
    doubled = certify(HEADER, ("BOT", "BOT", "CBUAE", "HKMA"))  # a real aggregate of 4 sigs
    assert bls.backend().fast_aggregate_verify(
        [KEYS[s] for s in doubled.signer_ids], doubled.block_hash, doubled.aggregate_signature
    )
    assert not verify_quorum_certificate(HEADER, doubled, KEYS)


def test_a_signer_outside_the_set_does_not_count() -> None:
    outsider = Validator("ECB", SEED)
    digest = header_hash(HEADER)
    signers = ("BOT", "CBUAE", "HKMA", "ECB")
    signatures = [NODES[s].sign(digest) for s in signers[:3]] + [outsider.sign(digest)]
    qc = QuorumCertificate(digest, signers, aggregate(signatures))
    assert not verify_quorum_certificate(HEADER, qc, KEYS)
    # the same certificate is fine for a set that does include ECB (4 of 6): membership decides
    assert verify_quorum_certificate(HEADER, qc, {**KEYS, "ECB": outsider.public_key})


def test_a_forged_signature_fails() -> None:
    good = certify(HEADER, IDS)
    claims_five = dataclasses.replace(certify(HEADER, IDS[:4]), signer_ids=IDS)
    assert not verify_quorum_certificate(HEADER, claims_five, KEYS)
    other_message = dataclasses.replace(
        good, aggregate_signature=aggregate([NODES[s].sign(b"x" * 32) for s in IDS])
    )
    assert not verify_quorum_certificate(HEADER, other_message, KEYS)
    rng = random.Random(1)
    for garbage in (b"", bytes(96), rng.randbytes(96), good.aggregate_signature[:-1]):
        forged = dataclasses.replace(good, aggregate_signature=garbage)
        assert not verify_quorum_certificate(HEADER, forged, KEYS)


@pytest.mark.parametrize(
    "change",
    [
        {"height": 8},
        {"chain_id": "other-chain"},
        {"previous_hash": bytes(32)},
        {"sealed_at_us": 1},
        {"transfer_ids": ("t-1",)},
        {"transfer_ids": ("t-2", "t-1")},
        {"transfers_digest": b"\x01" * 32},
    ],
)
def test_a_certificate_over_another_header_fails(change: dict[str, object]) -> None:
    qc = certify(HEADER, IDS)
    other = dataclasses.replace(HEADER, **change)  # type: ignore[arg-type]
    assert not verify_quorum_certificate(other, qc, KEYS)
    # claiming the other header's hash does not help: the signatures cover HEADER's
    relabelled = dataclasses.replace(qc, block_hash=header_hash(other))
    assert not verify_quorum_certificate(other, relabelled, KEYS)


def test_a_certificate_must_name_the_hash_it_certifies() -> None:
    """Signatures over the right hash, but the certificate names another: refused."""
    qc = certify(HEADER, IDS)
    assert not verify_quorum_certificate(
        HEADER, dataclasses.replace(qc, block_hash=b"\0" * 32), KEYS
    )


def test_malformed_input_is_false_never_an_exception() -> None:
    qc = certify(HEADER, IDS)
    assert not verify_quorum_certificate(HEADER, qc, {})
    assert not verify_quorum_certificate(dataclasses.replace(HEADER, height=-1), qc, KEYS)
    assert not verify_quorum_certificate(
        dataclasses.replace(HEADER, previous_hash=b"short"), qc, KEYS
    )
    assert not verify_quorum_certificate(HEADER, qc, {**KEYS, "BOT": b"\x00" * 48})
    assert not verify_quorum_certificate(HEADER, qc, {**KEYS, "BOT": b"not a key"})


def test_the_reference_backend_agrees() -> None:
    """py-ecc (the reference, ~0.3 s per verification) accepts the aggregate blspy made."""
    qc = certify(HEADER, IDS[1:])
    keys = [KEYS[s] for s in qc.signer_ids]
    assert bls.PyEccBackend().fast_aggregate_verify(keys, qc.block_hash, qc.aggregate_signature)


def test_keys_count_only_with_a_proof_of_possession() -> None:
    good = tuple(ValidatorInfo(i, n.public_key, n.proof_of_possession) for i, n in NODES.items())
    assert checked_public_keys(ValidatorSet(good, 4)) == KEYS
    # a rogue key: someone else's proof does not cover it
    rogue = dataclasses.replace(good[0], proof_of_possession=good[1].proof_of_possession)
    with pytest.raises(InvalidRequest) as caught:
        checked_public_keys(ValidatorSet((rogue, *good[1:]), 4))
    assert caught.value.reason is Reason.PROOF_OF_POSSESSION_INVALID
    assert caught.value.metadata == {"validator_id": "BOT"}


async def test_the_ledger_registers_validators_only_with_a_valid_proof(tmp_path: Path) -> None:
    bridge = await Bridge.open(tmp_path / "b.db", key_seed=SEED)
    try:
        validators = await bridge.validators()
        assert checked_public_keys(validators) == KEYS  # same seed, same keys
        ledger = bridge._ledger
        node = Validator("ECB", SEED)
        with pytest.raises(InvalidRequest) as caught:
            ledger.register_validator("ECB", node.public_key, NODES["BOT"].proof_of_possession)
        assert caught.value.reason is Reason.PROOF_OF_POSSESSION_INVALID
    finally:
        await bridge.close()


async def test_validator_keys_survive_a_restart(tmp_path: Path) -> None:
    bridge = await Bridge.open(tmp_path / "b.db")  # random key seed, stored with the state
    keys = (await bridge.validators()).public_keys
    await bridge.close()
    again = await bridge.reopen()
    try:
        assert (await again.validators()).public_keys == keys
    finally:
        await again.close()
