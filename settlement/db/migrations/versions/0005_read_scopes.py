"""read scopes: payment parties, who moved a title, the servers' shared keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 09:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('payment_parties',
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('wallet_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.payment_id'], ),
    sa.PrimaryKeyConstraint('payment_id', 'wallet_id')
    )
    with op.batch_alter_table('payment_parties', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_parties_wallet_id'), ['wallet_id'], unique=False)

    op.create_table('server_keys',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('secret', sa.LargeBinary(), nullable=False),
    sa.Column('created_at_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('title_moves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('moved_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))
        batch_op.create_index(batch_op.f('ix_title_moves_moved_by'), ['moved_by'], unique=False)

    # The parties of payments locked before this migration: payers, financiers and assignees
    # (wallet parameters are inside params_json; payments made from now on record them too).
    op.execute(
        "INSERT INTO payment_parties (payment_id, wallet_id) "
        "SELECT payment_id, payer_wallet_id FROM payments "
        "UNION SELECT payment_id, financier_wallet_id FROM payment_financing "
        "UNION SELECT payment_id, payee_wallet_id FROM payment_assignments "
        "UNION SELECT payment_id, financier_wallet_id FROM payment_assignments"
    )


def downgrade() -> None:
    with op.batch_alter_table('title_moves', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_title_moves_moved_by'))
        batch_op.drop_column('moved_by')

    op.drop_table('server_keys')
    with op.batch_alter_table('payment_parties', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payment_parties_wallet_id'))

    op.drop_table('payment_parties')
