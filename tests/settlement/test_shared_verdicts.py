"""The workers of one server verify each bridge block's certificate once between them
(settlement/coordination/shared_verdicts.py): a worker takes another's verdict only for exactly
the certificate that verified, under the same keys; anything else it verifies itself, and a
certificate that does not verify is refused by every worker, whoever saw it first."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import mmap
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from condpay.client import SettlementsClient

from bridges import QuorumCertificate, header_hash
from bridges._quorum import Validator
from settlement.coordination.bridge_link import CertificateCache
from settlement.coordination.shared_verdicts import (
    ENV,
    SLOTS,
    TABLE_BYTES,
    WAIT_SECONDS,
    SharedVerdicts,
    fingerprint,
    inherited,
    keys_digest,
    table_for_workers,
)
from sim_central_bank.bridge_process import BridgeProcess
from sim_central_bank.server_process import ServerProcess
from tests.settlement.fault_processes import (
    PLATFORM,
    Sender,
    build_world,
    core_env,
    plan_pvps,
    settle,
    take_quote,
    wait_settled,
)
from tests.settlement.test_certificate_cache import KEYS, VALIDATORS, block, certify, resealed

ROOT = Path(__file__).resolve().parents[2]


def workers(table: SharedVerdicts, count: int = 2) -> list[CertificateCache]:
    return [CertificateCache(shared=table) for _ in range(count)]


def with_signature(qc: QuorumCertificate, signature: bytes) -> QuorumCertificate:
    return QuorumCertificate(qc.block_hash, qc.signer_ids, signature)


def flipped(signature: bytes) -> bytes:
    changed = bytearray(signature)
    changed[-1] ^= 1
    return bytes(changed)


async def test_a_certificate_one_worker_verified_is_not_verified_again_by_another() -> None:
    first, second = workers(SharedVerdicts.in_memory())
    header = block(1, "CONDPAY:s1.1", "CONDPAY:s2.1")
    qc = certify(header)
    assert await first.verified_encoding(header, qc, KEYS) is not None
    encoding = await second.verified_encoding(header, qc, KEYS)
    assert encoding is not None
    assert encoding == await first.verified_encoding(header, qc, KEYS)
    assert (first.verifications, second.verifications, second.shared_hits) == (1, 0, 1)
    # The second worker keeps it in its own cache from then on.
    assert await second.verify(header, qc, KEYS)
    assert (second.hits, second.shared_hits) == (1, 1)


async def test_another_certificate_or_block_at_the_height_is_verified_in_full() -> None:
    first, second = workers(SharedVerdicts.in_memory())
    header = block(4, "CONDPAY:s1.1")
    qc = certify(header)
    assert await first.verify(header, qc, KEYS)
    # A tampered signature, the certificate over a header the worker recomputes otherwise, and
    # a shorter signer list: none is the certificate that verified.
    assert not await second.verify(
        header, with_signature(qc, flipped(qc.aggregate_signature)), KEYS
    )
    assert not await second.verify(resealed(header), qc, KEYS)
    short = QuorumCertificate(qc.block_hash, qc.signer_ids[:3], qc.aggregate_signature)
    assert not await second.verify(header, short, KEYS)
    assert (second.verifications, second.shared_hits) == (3, 0)
    # Another genuine quorum of the same block is a certificate of its own: verified, accepted.
    assert await second.verify(header, certify(header, VALIDATORS[1:]), KEYS)
    assert (second.verifications, second.shared_hits) == (4, 0)


async def test_a_verdict_under_other_keys_does_not_count() -> None:
    table = SharedVerdicts.in_memory()
    first, second = workers(table)
    header = block(2, "CONDPAY:s1.1")
    qc = certify(header)
    strangers = {v.validator_id: v.public_key for v in (Validator(n, b"x" * 32) for n in "ABCDE")}
    assert await first.verify(header, qc, KEYS)
    assert not await second.verify(header, qc, strangers)
    assert second.shared_hits == 0
    # The fingerprint names the keys: the same certificate under other keys is another one.
    block_hash = header_hash(header)
    assert fingerprint(keys_digest(KEYS), header, block_hash, qc) != fingerprint(
        keys_digest(strangers), header, block_hash, qc
    )


async def test_a_second_block_at_a_height_a_worker_verified_itself_is_refused() -> None:
    """A worker that verified one block at a height refuses another there even when another
    worker vouches for that one's certificate (the validators equivocated, or the bridge lies)."""
    first, second = workers(SharedVerdicts.in_memory())
    one, other = block(9, "CONDPAY:s1.1"), block(9, "CONDPAY:s2.1")
    assert await second.verify(one, certify(one), KEYS)
    assert await first.verify(other, certify(other), KEYS)
    assert not await second.verify(other, certify(other), KEYS)
    assert second.shared_hits == 1  # told, and refused all the same
    assert await second.verify(one, certify(one), KEYS)


async def test_a_slot_holds_the_latest_height_only() -> None:
    first, second = workers(SharedVerdicts.in_memory())
    old, new = block(5, "CONDPAY:s1.1"), block(5 + SLOTS, "CONDPAY:s2.1")
    assert await first.verify(old, certify(old), KEYS)
    assert await first.verify(new, certify(new), KEYS)
    assert await second.verify(old, certify(old), KEYS)
    assert (second.verifications, second.shared_hits) == (1, 0)


async def test_a_slot_read_while_it_is_rewritten_means_not_known() -> None:
    """A mix of two fingerprints (a copy interrupted half-way) vouches for neither."""
    table = SharedVerdicts.in_memory()
    header = block(6, "CONDPAY:s1.1")
    qc = certify(header)
    mark = fingerprint(keys_digest(KEYS), header, header_hash(header), qc)
    other = fingerprint(
        keys_digest(KEYS), header, header_hash(header), certify(header, VALIDATORS[1:])
    )
    table.remember(6, other[:16] + mark[16:])
    cache = CertificateCache(shared=table)
    assert await cache.verify(header, qc, KEYS)
    assert (cache.verifications, cache.shared_hits) == (1, 0)
    assert table.knows(6, mark)


async def test_a_worker_waits_for_the_verdict_of_a_certificate_another_is_verifying() -> None:
    table = SharedVerdicts.in_memory()
    header = block(7, "CONDPAY:s1.1")
    qc = certify(header)
    mark = fingerprint(keys_digest(KEYS), header, header_hash(header), qc)
    assert not await table.told(7, mark)  # another worker claimed it: it is verifying it now

    async def verified_elsewhere() -> None:
        await asyncio.sleep(0.002)
        table.remember(7, mark)

    cache = CertificateCache(shared=table)
    told = asyncio.create_task(verified_elsewhere())
    assert await cache.verify(header, qc, KEYS)
    await told
    assert (cache.verifications, cache.shared_hits) == (0, 1)


async def test_a_claim_that_never_comes_true_holds_a_worker_up_briefly_then_it_verifies() -> None:
    """The claimant refused the certificate (a forged one: no verdict is written), died, or is
    slow: the others wait at most WAIT_SECONDS, then verify, and refuse a forged one too."""
    table = SharedVerdicts.in_memory()
    header = block(8, "CONDPAY:s1.1")
    qc = certify(header)
    forged = with_signature(qc, flipped(qc.aggregate_signature))
    for certificate, valid in ((forged, False), (qc, True)):
        mark = fingerprint(keys_digest(KEYS), header, header_hash(header), certificate)
        assert not await table.told(8, mark)  # another worker's claim
        cache = CertificateCache(shared=table)
        started = time.monotonic()
        assert await cache.verify(header, certificate, KEYS) is valid
        assert WAIT_SECONDS <= time.monotonic() - started < WAIT_SECONDS + 0.5
        assert (cache.verifications, cache.shared_hits) == (1, 0)
    assert not table.knows(8, fingerprint(keys_digest(KEYS), header, header_hash(header), forged))


# -- the table between processes --------------------------------------------------------------
@pytest.fixture
def handed() -> Iterator[int]:
    fd = table_for_workers()
    if fd is None:
        pytest.skip("no memfd_create here: the workers verify on their own")
    try:
        yield fd
    finally:
        os.close(fd)


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from settlement.coordination.shared_verdicts import ENV, inherited
    table = inherited()
    assert table is not None and ENV not in os.environ
    height, known, mine = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
    print("knows" if table.knows(height, known) else "unknown")
    table.remember(height + 1, mine)
    assert not asyncio.run(table.told(height + 2, mine))  # claimed; it never says more
    """
)


async def test_workers_share_the_table_their_parent_hands_them(handed: int) -> None:
    """The descriptor crosses exec (pass_fds, as settlement/api/workers.py hands it): what one
    side writes, the other reads, claims included."""
    parent = SharedVerdicts(mmap.mmap(handed, TABLE_BYTES), lock=handed)
    mine, theirs = b"\x11" * 32, b"\x22" * 32
    parent.remember(40, mine)
    answer = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CHILD, "40", mine.hex(), theirs.hex()],
        env={**os.environ, ENV: str(handed)},
        pass_fds=(handed,),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert answer.stdout.strip() == "knows"
    assert await parent.told(41, theirs)
    started = time.monotonic()
    assert not await parent.told(42, theirs)  # the child's claim: waited for, then taken over
    assert time.monotonic() - started >= WAIT_SECONDS


def test_a_worker_without_a_usable_table_verifies_on_its_own(tmp_path: Path) -> None:
    assert inherited({}) is None
    assert inherited({ENV: "not a descriptor"}) is None
    wrong = tmp_path / "wrong-size"
    wrong.write_bytes(b"\0" * 10)
    fd = os.open(wrong, os.O_RDWR)
    environ = {ENV: str(fd)}
    assert inherited(environ) is None
    assert environ == {}  # read once, not handed on
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # closed


def test_a_new_table_is_empty(handed: int) -> None:
    assert os.fstat(handed).st_size == TABLE_BYTES
    assert mmap.mmap(handed, TABLE_BYTES).read() == bytes(TABLE_BYTES)


# -- two workers and a bridge -----------------------------------------------------------------
CHANNELS = 16  # connections: the kernel spreads them over the workers (SO_REUSEPORT)
SETTLEMENTS = 32


def own_connection(address: str) -> grpc.aio.Channel:
    """A channel with a connection of its own (channels to one address share one otherwise)."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_workers_verify_each_block_once_between_them(pg_url: str, tmp_path: Path) -> None:
    """`condpay serve --workers 2` with a bridge: PvPs over many connections reach FINAL in both
    workers, and a worker took certificates the other had verified (each worker says what it
    did when it stops). Blocks are sealed every second, so both workers' commits share them."""
    bridge = BridgeProcess(tmp_path / "bridge.db", tmp_path / "logs", block_interval_ms=1000)
    core = ServerProcess(
        pg_url,
        log_path=tmp_path / "core.log",
        extra_env=core_env(bridge),
        extra_args=("--workers", "2"),
    )
    world = None
    platforms: list[SettlementsClient] = []
    try:
        await bridge.start()
        core.start()
        await core.wait_ready()
        world = await build_world(core.address, bridge, pg_url)
        platforms = [
            SettlementsClient(core.address, caller=PLATFORM, channel=own_connection(core.address))
            for _ in range(CHANNELS)
        ]
        pvps = plan_pvps("shared", random.Random(18), SETTLEMENTS)
        sender = Sender()

        ways = [
            dataclasses.replace(world, platform=platforms[i % CHANNELS]) for i in range(SETTLEMENTS)
        ]
        pairs = list(zip(ways, pvps, strict=True))
        await asyncio.gather(*(take_quote(way, pvp, sender) for way, pvp in pairs))
        await asyncio.gather(*(settle(way, pvp, sender) for way, pvp in pairs))
        await wait_settled(world, pvps, accept=frozenset({"FINAL"}))
        heights = {p.final.finality.block_height for p in pvps if p.final is not None}
        assert 0 not in heights
    finally:
        for platform in platforms:
            await platform.close()
        if world is not None:
            await world.close()
        assert core.stop() == 0
        await bridge.stop()
    said = [
        json.loads(line)
        for line in core.log_path.read_text().splitlines()
        if '"bridge_certificates"' in line
    ]
    assert len(said) == 2, said  # each worker, as it stopped
    for worker in said:  # each settled some, and verified each block once at most
        assert worker["verified"] + worker["told_by_other_workers"] > 0
        assert worker["verified"] <= len(heights)
    assert sum(worker["told_by_other_workers"] for worker in said) > 0
    # Between them, each block once (the other waited for the verdict, not verifying it too).
    assert sum(worker["verified"] for worker in said) == len(heights)
