"""baseline: the schema as create_all made it

Revision ID: 0001
Revises: 
Created: 2026-12-07
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import storage.tables

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('admin_audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('platform', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('platform_user_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('command', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('arguments', sa.Text(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('admin_audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admin_audit_at'), ['at'], unique=False)

    op.create_table('bars',
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('timeframe', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('time', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('open', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('close', sa.Float(), nullable=False),
    sa.Column('volume', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'timeframe', 'time')
    )
    op.create_table('billing_events',
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('event_type', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('received_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'event_id')
    )
    op.create_table('billing_rejected_events',
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('event_type', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('first_received_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_received_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'event_id')
    )
    op.create_table('heartbeats',
    sa.Column('process', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('process')
    )
    op.create_table('instruments',
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('asset_class', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('exchange', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('quote_currency', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sector', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('symbol')
    )
    op.create_table('news_verdicts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('published_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('analysed_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('prompt_version', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('market_wide', sa.Boolean(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('verdict', sa.Text(), nullable=False),
    sa.Column('sentiment', sa.Float(), nullable=False),
    sa.Column('input_tokens', sa.Integer(), nullable=False),
    sa.Column('output_tokens', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id', 'symbol', 'provider', 'model', 'prompt_version', name='uq_news_verdict')
    )
    with op.batch_alter_table('news_verdicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_news_verdicts_item_id'), ['item_id'], unique=False)
        batch_op.create_index('ix_news_verdicts_symbol_published', ['symbol', 'published_at'], unique=False)

    op.create_table('request_counts',
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('day', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('subject', 'day')
    )
    op.create_table('signals',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('symbol', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('asset_class', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('timeframe', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('direction', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('entry', sa.Float(), nullable=False),
    sa.Column('target', sa.Float(), nullable=False),
    sa.Column('stop', sa.Float(), nullable=False),
    sa.Column('confidence', sa.Integer(), nullable=False),
    sa.Column('position_size', sa.Float(), nullable=False),
    sa.Column('issued_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reasoning', sa.Text(), nullable=False),
    sa.Column('strategy', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signals_status'), ['status'], unique=False)
        batch_op.create_index('ix_signals_symbol_timeframe_issued', ['symbol', 'timeframe', 'issued_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('platform', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('platform_user_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('chat_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('display_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('platform', 'platform_user_id', name='uq_users_platform_user'),
    sqlite_autoincrement=True
    )
    op.create_table('account_members',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('linked_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    with op.batch_alter_table('account_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_members_account_id'), ['account_id'], unique=False)

    op.create_table('billing_accounts',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('evaluated_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('billing_checkouts',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=True),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('created_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('billing_checkouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_checkouts_user_id'), ['user_id'], unique=False)

    op.create_table('billing_payments',
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('charge_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('provider_charge_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('recurring', sa.Boolean(), nullable=False),
    sa.Column('paid_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('period_end', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('provider', 'charge_id')
    )
    with op.batch_alter_table('billing_payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_payments_user_id'), ['user_id'], unique=False)

    op.create_table('billing_subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('current_period_end', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('past_due_since', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancel_at_period_end', sa.Boolean(), nullable=False),
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('status_at', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'external_id', name='uq_billing_subscriptions_provider_id')
    )
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_subscriptions_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_subscriptions_user_id'), ['user_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('signal_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('not_before', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('message_ref', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('reply_to', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('signal_id', 'user_id', 'kind', 'channel', name='uq_deliveries_signal_user_kind_channel')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_channel_status_not_before', ['channel', 'status', 'not_before'], unique=False)
        batch_op.create_index('ix_deliveries_user_status_sent_at', ['user_id', 'status', 'sent_at'], unique=False)

    op.create_table('digests',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('hour_utc', sa.Integer(), nullable=False),
    sa.Column('last_sent_on', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('fanouts',
    sa.Column('signal_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('done_at', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('signal_id', 'kind')
    )
    op.create_table('link_codes',
    sa.Column('code_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('used_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_hash')
    )
    with op.batch_alter_table('link_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_codes_user_id'), ['user_id'], unique=False)

    op.create_table('preferences',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('symbols', sa.Text(), nullable=False),
    sa.Column('asset_classes', sa.Text(), nullable=False),
    sa.Column('timeframes', sa.Text(), nullable=False),
    sa.Column('min_confidence', sa.Integer(), nullable=False),
    sa.Column('risk', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('quiet_start', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('quiet_end', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('quiet_tz', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('signal_exits',
    sa.Column('signal_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('decided_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('signal_id')
    )
    op.create_table('signal_outcomes',
    sa.Column('signal_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('fill_price', sa.Float(), nullable=False),
    sa.Column('fill_time', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('exit_price', sa.Float(), nullable=False),
    sa.Column('exit_time', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('gross_return', sa.Float(), nullable=False),
    sa.Column('net_return', sa.Float(), nullable=False),
    sa.Column('mfe', sa.Float(), nullable=False),
    sa.Column('mae', sa.Float(), nullable=False),
    sa.Column('bars_held', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('signal_id')
    )
    with op.batch_alter_table('signal_outcomes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signal_outcomes_exit_time'), ['exit_time'], unique=False)

    op.create_table('user_channels',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('updated_at', storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'channel')
    )
    op.create_table('delivery_parts',
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('parts_sent', sa.Integer(), nullable=False),
    sa.Column('first_ref', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('layout', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('delivery_id')
    )


def downgrade() -> None:
    op.drop_table('delivery_parts')
    op.drop_table('user_channels')
    with op.batch_alter_table('signal_outcomes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signal_outcomes_exit_time'))

    op.drop_table('signal_outcomes')
    op.drop_table('signal_exits')
    op.drop_table('preferences')
    with op.batch_alter_table('link_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_codes_user_id'))

    op.drop_table('link_codes')
    op.drop_table('fanouts')
    op.drop_table('digests')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_user_status_sent_at')
        batch_op.drop_index('ix_deliveries_channel_status_not_before')

    op.drop_table('deliveries')
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_subscriptions_user_id'))
        batch_op.drop_index(batch_op.f('ix_billing_subscriptions_customer_id'))

    op.drop_table('billing_subscriptions')
    with op.batch_alter_table('billing_payments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_payments_user_id'))

    op.drop_table('billing_payments')
    with op.batch_alter_table('billing_checkouts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_checkouts_user_id'))

    op.drop_table('billing_checkouts')
    op.drop_table('billing_accounts')
    with op.batch_alter_table('account_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_members_account_id'))

    op.drop_table('account_members')
    op.drop_table('users')
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.drop_index('ix_signals_symbol_timeframe_issued')
        batch_op.drop_index(batch_op.f('ix_signals_status'))

    op.drop_table('signals')
    op.drop_table('request_counts')
    with op.batch_alter_table('news_verdicts', schema=None) as batch_op:
        batch_op.drop_index('ix_news_verdicts_symbol_published')
        batch_op.drop_index(batch_op.f('ix_news_verdicts_item_id'))

    op.drop_table('news_verdicts')
    op.drop_table('instruments')
    op.drop_table('heartbeats')
    op.drop_table('billing_rejected_events')
    op.drop_table('billing_events')
    op.drop_table('bars')
    with op.batch_alter_table('admin_audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_admin_audit_at'))

    op.drop_table('admin_audit')
