"""Every limit of the bridge in one place; requests are validated against these at the boundary."""

from __future__ import annotations

from typing import Final

from wallets.currencies import INT64_MAX

#: Amounts and balances are int64 minor units, as on the wire.
AMOUNT_MINOR_MAX: Final = INT64_MAX

#: Ids chosen by callers (transfer ids, request ids, participant ids): 1..128 characters of
#: [A-Za-z0-9._:-] (so they can be logged and put in metadata without escaping).
ID_LENGTH_MAX: Final = 128

#: A published value (reference units per minor unit) is numerator/denominator, each in 1..10^9:
#: nine significant digits, and every cross-rate term (a product of two) fits int64.
RATE_TERM_MAX: Final = 1_000_000_000

#: Spreads are parts per million of the source amount, at most 10%.
PPM: Final = 1_000_000
SPREAD_PPM_MAX: Final = 100_000

#: Quotes are firm for ttl_ms; 0 in a request means the default.
QUOTE_TTL_MS_DEFAULT: Final = 30_000
QUOTE_TTL_MS_MAX: Final = 600_000

#: How long a prepared transfer may hold its reservations.
TRANSFER_TIMEOUT_MS_MIN: Final = 1
TRANSFER_TIMEOUT_MS_MAX: Final = 24 * 3600 * 1000

#: A block holds at most this many commits; reaching it seals a block at once.
BLOCK_TRANSFERS_MAX: Final = 256
#: The server's block timer: expire, seal and certify this often.
BLOCK_INTERVAL_MS: Final = 20
#: With a block timer, a finality request for a commit waiting for its block waits this long at
#: most for the timer to seal and certify it, then answers as it is.
FINALITY_WAIT_MS: Final = 1_000

#: The gRPC client's deadline per call.
RPC_DEADLINE_MS: Final = 5_000
#: Graceful shutdown of the server on SIGTERM.
SHUTDOWN_GRACE_MS: Final = 2_000

#: The exit status of a crash fault (as settlement/faults.py uses for the core's crash points).
CRASH_EXIT_STATUS: Final = 86
