"""signal_updates: what turned against an open signal, told once as a reply (core.thesis)

Revision ID: 0008
Revises: 0007
Created: 2026-12-07
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import storage.tables

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if 'signal_updates' in set(sa.inspect(op.get_bind()).get_table_names()):  # adopted from before migrations
        return
    op.create_table('signal_updates',
    sa.Column('signal_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('changes', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('signal_id')
    )


def downgrade() -> None:
    op.drop_table('signal_updates')
