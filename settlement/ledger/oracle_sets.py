"""The oracle registry by version, cached for attestation checks.

Every change to the registry (a registration, a rotation, a revocation) bumps its version in the
same transaction, so the keys *at* a version never change: a set cached under its version is
exactly what the database held then, on every replica. What a cache hit can never do is make a
stale version current: the write batch re-reads the registry's version under its lock and
refuses an attestation made for any other (ORACLE_SET_CHANGED), whatever was cached. A set is
loaded in one statement (version and keys from one snapshot) and only when a statement names a
version not cached yet; the newest few versions are kept.
"""

from __future__ import annotations

from settlement.ledger.attestations import OracleKey, OracleSet
from settlement.ledger.reads import LedgerReader

VERSIONS_KEPT = 4


class OracleSets:
    def __init__(self, reader: LedgerReader) -> None:
        self._reader = reader
        self._by_version: dict[int, OracleSet] = {}

    async def for_statement(self, version: int) -> OracleSet:
        """The registry at ``version`` if known, else as it stands now (whose version the
        verification then compares with the statement's)."""
        cached = self._by_version.get(version)
        if cached is not None:
            return cached
        current, records = await self._reader.oracle_set()
        registry = OracleSet(
            current,
            {
                o.oracle_id: OracleKey(
                    o.oracle_id, o.scheme, o.public_key, o.key_version, o.revoked
                )
                for o in records
            },
        )
        self._by_version[current] = registry
        for old in sorted(self._by_version)[:-VERSIONS_KEPT]:
            del self._by_version[old]
        return registry
