"""generation counts, sampler and filters; sample verdicts and finish reasons; corpus dataset

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 18:20:02
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table('corpora', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dataset_id', sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_corpora_dataset_id_datasets'), 'datasets', ['dataset_id'], ['id'])

    # Existing rows get values that describe what they were: one label, the hf sampler, no filters.
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('counts', JSON_TYPE, nullable=True))
        batch_op.add_column(sa.Column('filters', JSON_TYPE, nullable=True))
        batch_op.add_column(sa.Column('sampler', sa.String(length=20), nullable=False, server_default='hf'))
        batch_op.add_column(sa.Column('batch_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('chunk_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('candidates', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('progress', JSON_TYPE, nullable=True))
        batch_op.add_column(sa.Column('rejected', JSON_TYPE, nullable=True))
        batch_op.add_column(sa.Column('budget_exhausted', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.alter_column('label', existing_type=sa.VARCHAR(length=40), nullable=True)

    generations = sa.table(
        'generations', sa.column('id', sa.String), sa.column('label', sa.String), sa.column('n', sa.Integer),
        sa.column('done', sa.Integer), sa.column('counts', JSON_TYPE), sa.column('filters', JSON_TYPE),
        sa.column('progress', JSON_TYPE), sa.column('rejected', JSON_TYPE), sa.column('candidates', sa.Integer),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(generations.c.id, generations.c.label, generations.c.n, generations.c.done)):
        connection.execute(
            generations.update().where(generations.c.id == row.id).values(
                counts={row.label: row.n}, filters={}, rejected={}, candidates=row.done,
                progress={row.label: {"accepted": row.done, "rejected": 0}},
            )
        )
    with op.batch_alter_table('generations', schema=None) as batch_op:
        for column in ('counts', 'filters', 'progress', 'rejected'):
            batch_op.alter_column(column, existing_type=JSON_TYPE, nullable=False)

    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=20), nullable=False, server_default='accepted'))
        batch_op.add_column(sa.Column('reject_reason', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('finish_reason', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('checks', JSON_TYPE, nullable=True))
        batch_op.drop_index(batch_op.f('ix_samples_corpus_label_id'))
        batch_op.drop_constraint(batch_op.f('uq_samples_generation_id_index'), type_='unique')
        batch_op.create_index('ix_samples_corpus_status_id', ['corpus_id', 'status', 'id'], unique=False)
        batch_op.create_index('ix_samples_corpus_status_label_id', ['corpus_id', 'status', 'label', 'id'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_samples_generation_id_label_index'), ['generation_id', 'label', 'index'])
    samples = sa.table('samples', sa.column('checks', JSON_TYPE))
    connection.execute(samples.update().values(checks={}))
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.alter_column('checks', existing_type=JSON_TYPE, nullable=False)


def downgrade() -> None:
    # Rejected candidates and multi-label generations have no place in the old schema.
    connection = op.get_bind()
    connection.execute(sa.text("DELETE FROM samples WHERE status <> 'accepted'"))
    connection.execute(sa.text("DELETE FROM generations WHERE label IS NULL"))
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_samples_generation_id_label_index'), type_='unique')
        batch_op.drop_index('ix_samples_corpus_status_label_id')
        batch_op.drop_index('ix_samples_corpus_status_id')
        batch_op.create_unique_constraint(batch_op.f('uq_samples_generation_id_index'), ['generation_id', 'index'])
        batch_op.create_index(batch_op.f('ix_samples_corpus_label_id'), ['corpus_id', 'label', 'id'], unique=False)
        batch_op.drop_column('checks')
        batch_op.drop_column('finish_reason')
        batch_op.drop_column('reject_reason')
        batch_op.drop_column('status')

    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.alter_column('label', existing_type=sa.VARCHAR(length=40), nullable=False)
        batch_op.drop_column('budget_exhausted')
        batch_op.drop_column('rejected')
        batch_op.drop_column('progress')
        batch_op.drop_column('candidates')
        batch_op.drop_column('chunk_size')
        batch_op.drop_column('batch_size')
        batch_op.drop_column('sampler')
        batch_op.drop_column('filters')
        batch_op.drop_column('counts')

    with op.batch_alter_table('corpora', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_corpora_dataset_id_datasets'), type_='foreignkey')
        batch_op.drop_column('dataset_id')
