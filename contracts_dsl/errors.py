"""The exceptions of `contracts_dsl`, one tree.

The parser, checker, formatter, compiler and evaluator never raise on bad input: they return
typed diagnostics (`Diagnostic`), typed input errors (`InputError`) or a rejected evaluation.
Exceptions are kept for loaders of data the caller stored or wrote by hand, where there is no
source to point at::

    DslError                      base of everything this package raises
    ├── CompiledFormError         bytes given to `load_compiled` are not a compiled contract
    │                             (bad JSON, wrong shape, unknown format, hash mismatch)
    ├── StateFormError            JSON given to `ContractState.from_json` is not a contract state
    └── SpecFormError             a spec file (`x.spec.json`) is malformed

Each carries a human-readable message; callers branch on the class, never on the text.
"""

from __future__ import annotations


class DslError(Exception):
    """Base class of every exception raised by `contracts_dsl`."""


class CompiledFormError(DslError):
    """The bytes are not a valid compiled contract."""


class StateFormError(DslError):
    """The JSON is not a valid persisted contract state."""


class SpecFormError(DslError):
    """A spec file is malformed."""
