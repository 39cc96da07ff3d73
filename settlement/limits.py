"""Every limit of the settlement core in one place. Requests are validated against these at the
boundary; the engine asserts them where it relies on them."""

from __future__ import annotations

from typing import Final

# Requests
REQUEST_ID_CHARS_MAX: Final = 128
DISPLAY_NAME_CHARS_MAX: Final = 140
MEMO_CHARS_MAX: Final = 140
INSTRUCTION_BYTES_MAX: Final = 4096
# A whole request message, checked by gRPC before anything is decoded.
REQUEST_BYTES_MAX: Final = 1024 * 1024
# Any value an error echoes back in its metadata is cut to this many characters...
ERROR_ECHO_CHARS_MAX: Final = 256
# ... and a message (which may quote a few of them) to this many.
ERROR_MESSAGE_CHARS_MAX: Final = 1024
# ... and its typed details (e.g. a contract's diagnostics) to this many bytes in all: gRPC
# refuses trailers beyond 16 KiB (the status travels in them).
ERROR_DETAILS_BYTES_MAX: Final = 8 * 1024
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
TIMESTAMP_SECONDS_MIN: Final = -62_135_596_800
TIMESTAMP_SECONDS_MAX: Final = 253_402_300_799
PAGE_SIZE_DEFAULT: Final = 100
PAGE_SIZE_MAX: Final = 1000
SUPPLY_CURRENCIES_MAX: Final = 16

# Group commit: requests that arrive while a batch is in flight join the next batch.
BATCH_COMMANDS_MAX: Final = 256
# Requests waiting for a batch beyond this are refused with UNAVAILABLE/OVERLOADED.
QUEUE_COMMANDS_MAX: Final = 20_000

# Retries of a batch on serialization failure, deadlock or a lost connection (tenacity).
RETRY_ATTEMPTS_MAX: Final = 8
RETRY_TOTAL_SECONDS_MAX: Final = 10.0
RETRY_WAIT_INITIAL_SECONDS: Final = 0.005
RETRY_WAIT_MAX_SECONDS: Final = 0.5
# Random extra wait, so that colliding replicas do not retry in lockstep.
RETRY_WAIT_JITTER_SECONDS: Final = 0.02
# PostgreSQL: how often the server asks whether its database still takes writes (health turns
# NOT_SERVING while not: a failover), and how long one probe may take.
PRIMARY_PROBE_SECONDS: Final = 0.5
PRIMARY_PROBE_TIMEOUT_SECONDS: Final = 2.0
PRIMARY_PROBE_FAILURES_MAX: Final = 2  # failed probes in a row before NOT_SERVING
# A writer's new connection (all the hosts of a replicated cluster together).
CONNECT_TIMEOUT_SECONDS: Final = 5.0

# Cache of immutable facts (wallets and their owner keys, institutions).
DIRECTORY_ENTRIES_MAX: Final = 200_000

# Conditional payments
# WatchPayment wakes on a commit in its own process at once, and polls for other replicas'.
WATCH_POLL_SECONDS: Final = 1.0
# The deadline sweep: how often it looks for due payments, and how many it fires per look.
DEADLINE_SWEEP_SECONDS: Final = 0.5
#: The shortest wait between two deadline sweeps, however close the next deadline: deadlines
#: a few milliseconds apart are fired together, not by a sweep each.
DEADLINE_SWEEP_MIN_SECONDS: Final = 0.02
DEADLINE_SWEEP_BATCH: Final = 200
# Attestations: how old (issued_at) and how far in the future they may be, and how long they live.
ATTESTATION_FRESHNESS_SECONDS: Final = 300
ATTESTATION_CLOCK_SKEW_SECONDS: Final = 30
ATTESTATION_LIFETIME_SECONDS_MAX: Final = 86_400

# SimulateContract: at most this many events, and at most this much work (step i evaluates the
# first i events against every clause: events x events x clauses / 2; about 10-20 us a unit
# here, so a simulation takes at most a few seconds of one pool worker).
SIMULATED_EVENTS_MAX: Final = 1000
SIMULATION_WORK_MAX: Final = 150_000
# CPU-heavy contract work runs in a process pool (max(1, CPUs - 1) workers); compiled contracts
# are cached by source hash.
COMPILE_CACHE_ENTRIES_MAX: Final = 1024
# Failed outcomes older than CONDPAY_FAILED_OUTCOME_RETENTION_SECONDS are deleted this often,
# at most this many rows per statement.
OUTCOME_SWEEP_SECONDS: Final = 60.0
OUTCOME_SWEEP_BATCH: Final = 1000
# Journal checkpoints (settlement/ledger/checkpoints.py): how often a replica looks whether one
# is due, and the most entries one checkpoint adds to the last (a longer backlog is signed in
# steps of this many, each its own checkpoint).
CHECKPOINT_SWEEP_SECONDS: Final = 1.0
CHECKPOINT_ENTRIES_MAX: Final = 50_000

# Inventory loans: the most receipts one loan holds as collateral (its row and every reply about
# it carry them all), and the most of its events one read returns: GetLoan answers the newest,
# WatchLoan streams every event, this many per read.
LOAN_RECEIPTS_MAX: Final = 32
LOAN_EVENTS_PER_READ: Final = 100

# Shutdown: how long in-flight calls may take to finish after SIGTERM.
SHUTDOWN_GRACE_SECONDS: Final = 10.0

# Database pools. The read pool is fixed (no overflow): an overflow connection is opened for one
# read and closed after it, which under load meant a new database session per few calls; a read
# waits for a pooled connection instead (pool_timeout, 30 s).
READ_POOL_SIZE: Final = 8

# Open payments whose financing, assignments, legs and attestations a server process keeps as it
# last committed them (settlement/ledger/payment_memo.py), so that the next change of one reads
# only its row. A few KB each at most (attestations keep their signed statements).
PAYMENT_MEMO_SIZE: Final = 4096

# Garbage-collector thresholds for the server process: Python's own. Measured on 2026-12-07 with
# a throwaway gc.callbacks probe (the lifecycle and transfer benches, PostgreSQL, 2 workers): with
# (50_000, 20, 20) each young collection took 60-100 ms of CPU (the young generation then holds
# the live objects of every call in flight), a pause of the loop for every call on it; with
# (700, 10, 10) a young collection takes at most 1-2 ms, the oldest generation's 4-6 ms
# (transfers) and 30-44 ms (lifecycles), and the collector's CPU in all is the same or less. What
# was loaded at start stays out of every collection (gc.freeze, settlement/api/server.py).
GC_THRESHOLDS: Final = (700, 10, 10)
