"""openai fine-tunes: remote job state, adapters that are model ids, checkpoint metrics, generation usage

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table('finetune_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('remote', JSON_TYPE, nullable=False, server_default='{}'))
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metrics', JSON_TYPE, nullable=False, server_default='{}'))
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), nullable=False, server_default='peft'))
        batch_op.add_column(sa.Column('remote_model', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('checkpoint_id', sa.String(length=40), nullable=True))
        batch_op.alter_column('path', existing_type=sa.Text(), nullable=True)
        batch_op.drop_constraint('uq_adapters_job_id', type_='unique')
        batch_op.create_index(batch_op.f('ix_adapters_job_id'), ['job_id'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_adapters_checkpoint_id'), ['checkpoint_id'])
        batch_op.create_foreign_key(batch_op.f('fk_adapters_checkpoint_id_checkpoints'), 'checkpoints',
                                    ['checkpoint_id'], ['id'])
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('usage', JSON_TYPE, nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_column('usage')
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_adapters_checkpoint_id_checkpoints'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_adapters_checkpoint_id'), type_='unique')
        batch_op.drop_index(batch_op.f('ix_adapters_job_id'))
        batch_op.create_unique_constraint('uq_adapters_job_id', ['job_id'])
        batch_op.alter_column('path', existing_type=sa.Text(), nullable=False)
        batch_op.drop_column('checkpoint_id')
        batch_op.drop_column('remote_model')
        batch_op.drop_column('kind')
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_column('metrics')
    with op.batch_alter_table('finetune_jobs', schema=None) as batch_op:
        batch_op.drop_column('remote')
