"""sample markers: per-sample marker counts, so a corpus's quality is summed without reading its texts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 02:00:00
"""

from alembic import op
import sqlalchemy as sa

from app.domain.markers import count_markers

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('marker_words', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('marker_fillers', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('marker_repetitions', sa.Integer(), nullable=True))
    _backfill(op.get_bind())


def _backfill(connection) -> None:
    """Count the markers of the samples already stored, a batch of texts at a time."""
    samples = sa.table('samples', sa.column('id', sa.Integer), sa.column('text', sa.Text),
                       sa.column('marker_words', sa.Integer), sa.column('marker_fillers', sa.Integer),
                       sa.column('marker_repetitions', sa.Integer))
    update = (samples.update().where(samples.c.id == sa.bindparam('sample_id'))
              .values(marker_words=sa.bindparam('words'), marker_fillers=sa.bindparam('fillers'),
                      marker_repetitions=sa.bindparam('repetitions')))
    last = 0
    while True:
        rows = connection.execute(sa.select(samples.c.id, samples.c.text).where(samples.c.id > last)
                                  .order_by(samples.c.id).limit(_BATCH)).all()
        if not rows:
            return
        connection.execute(update, [{'sample_id': i, **count_markers(text)} for i, text in rows])
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_column('marker_repetitions')
        batch_op.drop_column('marker_fillers')
        batch_op.drop_column('marker_words')
