"""Point reads as prebuilt statements, one per read scope.

Building a SQLAlchemy statement and computing its cache key costs more CPU than SQLite takes to
answer a point read: measured on this machine, a settlement by id through an ORM select built per
call took 250-290 µs, a prebuilt select with the id as a bound parameter 25-45 µs, and a prebuilt
select with the caller's read scope added per call (``where(visible)``: a new statement, a new
cache key) 126-147 µs. So a reader keeps one statement per read scope and executes it with the
id bound.

A read scope (settlement/api/scopes.py) is the same object for the same caller (memoized there),
so the statements here are keyed by its identity. Each entry holds its scope, so an identity
cannot be reused while its statement is cached; a scope that is not memoized only costs a miss
(and an entry, least recently used first out).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

from sqlalchemy import ColumnElement, Select

#: Scoped statements kept per base statement (read scopes in use: about one per caller).
ENTRIES_MAX: Final = 1024


class ScopedStatements:
    """``base`` (a select with bound parameters) narrowed to each read scope it is asked for."""

    __slots__ = ("_base", "_entries")

    def __init__(self, base: Select[Any]) -> None:
        self._base = base
        self._entries: OrderedDict[int, tuple[ColumnElement[bool], Select[Any]]] = OrderedDict()

    def get(self, visible: ColumnElement[bool] | None) -> Select[Any]:
        """The base statement, narrowed to ``visible`` if given (the same object each time for
        the same scope object)."""
        if visible is None:
            return self._base
        key = id(visible)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is visible:
            self._entries.move_to_end(key)
            return entry[1]
        statement = self._base.where(visible)
        self._entries[key] = (visible, statement)
        self._entries.move_to_end(key)
        if len(self._entries) > ENTRIES_MAX:
            self._entries.popitem(last=False)
        return statement
