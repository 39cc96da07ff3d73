"""consent: attestation event ids unique per (payment, attester, event id); oracle_keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 09:30:00.000000

- ``attestations``: the primary key becomes (payment_id, oracle, event_id), so an event id can no
  longer be squatted by another payment or another attester. The evaluator is given event ids
  qualified as ``<event_id>#<attester>``; the stored contract state of every payment is rewritten
  to the qualified ids of its own attestations, so what it has seen stays seen.
- ``oracle_keys``: every public key ever registered to an oracle (current or rotated out), owned
  by one oracle id forever; filled from the oracles' current keys (the earliest registration of
  a key shared by two ids keeps it).
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVENT_KEY = ['payment_id', 'oracle', 'event_id']


def upgrade() -> None:
    op.create_table('oracle_keys',
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('oracle_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('registered_at_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('public_key')
    )
    with op.batch_alter_table('oracle_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oracle_keys_oracle_id'), ['oracle_id'], unique=False)
    op.execute(
        "INSERT INTO oracle_keys (public_key, oracle_id, registered_at_us) "
        "SELECT o.public_key, o.oracle_id, o.registered_at_us FROM oracles o "
        "WHERE NOT EXISTS (SELECT 1 FROM oracles p WHERE p.public_key = o.public_key AND "
        "(p.registered_at_us < o.registered_at_us OR "
        "(p.registered_at_us = o.registered_at_us AND p.oracle_id < o.oracle_id)))"
    )

    _rekey_attestations(_EVENT_KEY)
    _qualify_contract_states()


_COLUMNS = (
    'event_id, payment_id, seq, oracle, event_type, observed_at_us, accepted_at_us, '
    'attributes_json, signer_ids, report_json, statement'
)


def _rekey_attestations(key: list[str]) -> None:
    """The attestations table with ``key`` as its primary key."""
    if op.get_bind().dialect.name != 'sqlite':
        op.drop_constraint('attestations_pkey', 'attestations', type_='primary')
        op.create_primary_key('attestations_pkey', 'attestations', key)
        return
    # SQLite cannot alter a primary key: a copy of the table under the new key replaces it.
    op.create_table('_attestations_rekeyed',
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('oracle', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('event_type', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('observed_at_us', sa.BigInteger(), nullable=False),
    sa.Column('accepted_at_us', sa.BigInteger(), nullable=False),
    sa.Column('attributes_json', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('signer_ids', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('report_json', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('statement', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.payment_id'], ),
    sa.PrimaryKeyConstraint(*key)
    )
    op.execute(
        f'INSERT INTO _attestations_rekeyed ({_COLUMNS}) SELECT {_COLUMNS} FROM attestations'
    )
    with op.batch_alter_table('attestations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attestations_payment_id'))
    op.drop_table('attestations')
    op.rename_table('_attestations_rekeyed', 'attestations')
    with op.batch_alter_table('attestations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attestations_payment_id'), ['payment_id'], unique=False)


def _qualify_contract_states() -> None:
    """Event ids in each stored contract state, as the evaluator now sees them."""
    bind = op.get_bind()
    attesters: dict[tuple[str, str], str] = {
        (r[0], r[1]): r[2]
        for r in bind.execute(sa.text('SELECT payment_id, event_id, oracle FROM attestations'))
    }
    if not attesters:
        return
    rows = bind.execute(sa.text('SELECT payment_id, contract_state FROM payments')).all()
    for payment_id, stored in rows:
        state = json.loads(stored)

        def qualified(event_id: str) -> str:
            attester = attesters.get((payment_id, event_id))  # noqa: B023
            return event_id if attester is None else f'{event_id}#{attester}'

        state['events_seen'] = [qualified(e) for e in state.get('events_seen', [])]
        for fired in state.get('fired', []):
            fired['event_ids'] = [qualified(e) for e in fired.get('event_ids', [])]
        changed = json.dumps(state)
        if changed != stored:
            bind.execute(
                sa.text('UPDATE payments SET contract_state = :s WHERE payment_id = :p'),
                {'s': changed, 'p': payment_id},
            )


def downgrade() -> None:
    _rekey_attestations(['event_id'])
    with op.batch_alter_table('oracle_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oracle_keys_oracle_id'))
    op.drop_table('oracle_keys')
