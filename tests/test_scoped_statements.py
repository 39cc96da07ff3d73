"""Prebuilt point-read statements per read scope (settlement/ledger/scoped_statements.py): a
statement is reused only for the very scope object it was built for, so one caller's scope can
never answer another's read; the read scopes themselves are memoized per caller."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, select, true
from sqlalchemy.dialects import sqlite

from settlement.api import scopes
from settlement.api.identity import Caller, Role
from settlement.db import models
from settlement.ledger import scoped_statements
from settlement.ledger.scoped_statements import ScopedStatements

TABLE = models.Settlement.__table__  # type: ignore[attr-defined]


def statements() -> ScopedStatements:
    return ScopedStatements(
        select(TABLE.c.settlement_id).where(TABLE.c.settlement_id == bindparam("settlement_id"))
    )


def sql(statement: object) -> str:
    compiled = statement.compile(dialect=sqlite.dialect())  # type: ignore[attr-defined]
    bound = sorted((k, v) for k, v in compiled.params.items() if k != "settlement_id")
    return f"{compiled} {bound}"


def test_each_scope_gets_its_own_statement_and_the_same_scope_the_same_one() -> None:
    cache = statements()
    alice = scopes.settlements(Caller(Role.PLATFORM, "alice"))
    bob = scopes.settlements(Caller(Role.PLATFORM, "bob"))
    assert scopes.settlements(Caller(Role.PLATFORM, "alice")) is alice  # memoized per caller
    for_alice, for_bob = cache.get(alice), cache.get(bob)
    assert cache.get(alice) is for_alice
    assert "platform/alice" in sql(for_alice)
    assert "platform/bob" in sql(for_bob)
    assert "platform/alice" not in sql(for_bob)
    assert cache.get(None) is not for_alice  # no scope: the base statement, unnarrowed
    assert "requested_by" not in sql(cache.get(None))


def test_an_equal_scope_that_is_another_object_is_not_taken_for_the_cached_one() -> None:
    cache = statements()
    first = TABLE.c.requested_by == "platform/alice"
    built = cache.get(first)
    other = TABLE.c.requested_by == "platform/mallory"
    assert cache.get(other) is not built
    assert "platform/mallory" in sql(cache.get(other))
    assert cache.get(true()) is not built


def test_the_cache_is_bounded_least_recently_used_first_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scoped_statements, "ENTRIES_MAX", 3)
    cache = statements()
    kept = [TABLE.c.requested_by == f"platform/p{i}" for i in range(4)]
    built = [cache.get(v) for v in kept]
    assert len(cache._entries) == 3  # the first one went out
    assert cache.get(kept[3]) is built[3]
    again = cache.get(kept[0])  # rebuilt, for the same scope
    assert again is not built[0]
    assert "platform/p0" in sql(again)
