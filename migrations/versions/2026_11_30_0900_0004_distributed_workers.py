"""distributed workers: who owns a running job, when it was last sent, cancelling generations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

RUN_STATE_TABLES = ('finetune_jobs', 'generations', 'corpus_reports')


def upgrade() -> None:
    for table in RUN_STATE_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('owner', sa.String(length=200), nullable=True))
            batch_op.add_column(sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cancel_requested', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_column('cancel_requested')
    for table in RUN_STATE_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('sent_at')
            batch_op.drop_column('owner')
