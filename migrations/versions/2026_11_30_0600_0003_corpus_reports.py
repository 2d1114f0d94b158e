"""corpus reports: the evidence computed for each corpus

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 06:00:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table('corpus_reports',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('corpus_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('report', JSON_TYPE, nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['corpus_id'], ['corpora.id'], name=op.f('fk_corpus_reports_corpus_id_corpora'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_corpus_reports_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_corpus_reports')),
    sa.UniqueConstraint('corpus_id', name=op.f('uq_corpus_reports_corpus_id'))
    )
    with op.batch_alter_table('corpus_reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_corpus_reports_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_corpus_reports_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('corpus_reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_corpus_reports_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_corpus_reports_status'))
    op.drop_table('corpus_reports')
