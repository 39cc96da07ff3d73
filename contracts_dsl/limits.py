"""Every limit of the contract language and its tools, in one place.

The parser, checker, parameter binding and evaluator validate against these at their boundary and
report a diagnostic (code CD006/CD007/CD008) or a typed input error when one is exceeded; none of
them raises. Units and qualifiers come last in the names.
"""

from __future__ import annotations

from typing import Final

# Source text.
SOURCE_BYTES_MAX: Final = 64 * 1024
"""Largest contract source accepted, in UTF-8 bytes (CD006)."""
NESTING_DEPTH_MAX: Final = 8
"""Deepest nesting of brackets `( [ {` in a source (CD007)."""
TEXT_LITERAL_CHARS_MAX: Final = 256
"""Longest text literal, in characters after unescaping (CD009)."""
NAME_CHARS_MAX: Final = 64
"""Longest name (parameter, oracle, clause label, attribute) or event type (CD015)."""
NUMBER_DIGITS_MAX: Final = 24
"""Most digits in a number, amount or percentage literal (CD005)."""
SNIPPET_CHARS_MAX: Final = 120
"""Longest source line shown in a rendered diagnostic; longer lines show a window."""
SYNTAX_ERRORS_MAX: Final = 20
"""The parser stops recovering after this many syntax errors in one file."""
DIAGNOSTICS_MAX: Final = 200
"""At most this many diagnostics are reported for one file; the rest are summarised."""

# Declarations (CD008).
CLAUSES_MAX: Final = 64
"""Most `when` clauses in one contract, counting those inside `one of` blocks."""
PARAMS_MAX: Final = 64
"""Most `param` declarations."""
ORACLES_MAX: Final = 16
"""Most `oracle` declarations."""
EVENT_DECLS_MAX: Final = 32
"""Most `event` declarations."""
ATTRIBUTES_MAX: Final = 32
"""Most attributes in one `event` declaration."""
PATTERNS_PER_CLAUSE_MAX: Final = 16
"""Most event patterns in one clause condition."""
CONSTRAINTS_PER_PATTERN_MAX: Final = 16
"""Most attribute constraints in one event pattern."""
ACTIONS_PER_CLAUSE_MAX: Final = 8
"""Most actions after one `->`."""
LIST_ITEMS_MAX: Final = 64
"""Most items in one `[...]` list (membership lists, quorum members)."""

# Values.
AMOUNT_MINOR_MAX: Final = 2**63 - 1
"""Largest amount in minor units (int64, as in the proto `Money` message)."""
DURATION_SECONDS_MAX: Final = 100 * 366 * 24 * 3600
"""Longest duration, about a century."""
TIMESTAMP_YEAR_MIN: Final = 1970
TIMESTAMP_YEAR_MAX: Final = 9999
TIMESTAMP_US_MAX: Final = 253_402_300_799_999_999
"""9999-12-31T23:59:59.999999Z in Unix microseconds: the latest event time or `now`."""

# Parameter values and events at the evaluator boundary.
PARAM_TEXT_CHARS_MAX: Final = 1024
"""Longest text, wallet or title parameter value."""
EVENTS_PER_EVALUATION_MAX: Final = 10_000
"""Most verified events passed to one evaluation."""
EVENT_ID_CHARS_MAX: Final = 128
"""Longest event id."""
EVENT_ATTRIBUTES_MAX: Final = 64
"""Most attributes on one event."""
EVENT_ATTRIBUTE_TEXT_CHARS_MAX: Final = 1024
"""Longest text attribute value on an event."""
