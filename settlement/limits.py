"""Every limit of the settlement core in one place. Requests are validated against these at the
boundary; the engine asserts them where it relies on them."""

from __future__ import annotations

from typing import Final

# Requests
REQUEST_ID_CHARS_MAX: Final = 128
DISPLAY_NAME_CHARS_MAX: Final = 140
MEMO_CHARS_MAX: Final = 140
INSTRUCTION_BYTES_MAX: Final = 4096
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

# Cache of immutable facts (wallets and their owner keys, institutions).
DIRECTORY_ENTRIES_MAX: Final = 200_000

# Conditional payments
# WatchPayment wakes on a commit in its own process at once, and polls for other replicas'.
WATCH_POLL_SECONDS: Final = 1.0
# The deadline sweep: how often it looks for due payments, and how many it fires per look.
DEADLINE_SWEEP_SECONDS: Final = 0.5
DEADLINE_SWEEP_BATCH: Final = 200
# Attestations: how old (issued_at) and how far in the future they may be, and how long they live.
ATTESTATION_FRESHNESS_SECONDS: Final = 300
ATTESTATION_CLOCK_SKEW_SECONDS: Final = 30
ATTESTATION_LIFETIME_SECONDS_MAX: Final = 86_400

# Shutdown: how long in-flight calls may take to finish after SIGTERM.
SHUTDOWN_GRACE_SECONDS: Final = 10.0

# Database pools
READ_POOL_SIZE: Final = 4

# Garbage-collector thresholds for the server process (Python's default is (700, 10, 10)).
GC_THRESHOLDS: Final = (50_000, 20, 20)
