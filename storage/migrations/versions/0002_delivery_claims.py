"""deliveries: who claimed a row and when

Revision ID: 0002
Revises: 0001
Created: 2026-12-07
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import storage.tables

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a database adopted from before migrations had missing tables created from today's models (storage.migrate):
    # a deliveries table made that way has these columns already
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("deliveries")}
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        if 'claimed_by' not in have:
            batch_op.add_column(sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        if 'claimed_at' not in have:
            batch_op.add_column(sa.Column('claimed_at', storage.tables.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # recreate="never": SQLite (3.35+) drops a column in place; copying the table would, with foreign keys on,
    # cascade-delete delivery_parts' rows when the old table is dropped
    with op.batch_alter_table('deliveries', schema=None, recreate="never") as batch_op:
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('claimed_by')

