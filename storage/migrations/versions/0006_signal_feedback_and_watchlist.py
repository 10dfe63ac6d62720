"""signal_feedback (took, skipped, closed at market; the paper portfolio's fills) and watchlist

Revision ID: 0006
Revises: 0005
Created: 2026-12-07
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import storage.tables

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if 'signal_feedback' in set(sa.inspect(op.get_bind()).get_table_names()):  # adopted from before migrations
        return
    op.create_table('signal_feedback',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('signal_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('decision', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('decided_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('fill_price', sa.Float(), nullable=True),
    sa.Column('fill_at', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_price', sa.Float(), nullable=True),
    sa.Column('closed_at', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'signal_id')
    )
    with op.batch_alter_table('signal_feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signal_feedback_signal_id'), ['signal_id'], unique=False)

    op.create_table('watchlist',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('added_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'symbol')
    )
    with op.batch_alter_table('watchlist', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_watchlist_symbol'), ['symbol'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('watchlist', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_watchlist_symbol'))

    op.drop_table('watchlist')
    with op.batch_alter_table('signal_feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signal_feedback_signal_id'))

    op.drop_table('signal_feedback')
