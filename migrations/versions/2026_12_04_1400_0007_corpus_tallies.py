"""corpus tallies: per corpus, label, status and reason, the samples' count and marker sums, kept by
triggers on samples, so GET /corpora/{id} reads a handful of rows instead of scanning every sample

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 14:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_KEY = "corpus_id, label, status, reason"
_SUMS = ("n", "words", "fillers", "repetitions")

# Postgres: one upsert per statement over the rows it inserted or deleted (a transition table), in key
# order, so two transactions adding to the same corpus take its tally rows in the same order.
_POSTGRES = [
    f"""
    CREATE FUNCTION samples_tally_{event}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO corpus_tallies AS t ({_KEY}, n, words, fillers, repetitions)
        SELECT corpus_id, label, status, coalesce(reject_reason, ''), {sign}count(*),
               {sign}coalesce(sum(marker_words), 0), {sign}coalesce(sum(marker_fillers), 0),
               {sign}coalesce(sum(marker_repetitions), 0)
        FROM changed GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT ({_KEY}) DO UPDATE SET
            {', '.join(f'{c} = t.{c} + excluded.{c}' for c in _SUMS)};
        RETURN NULL;
    END $$
    """
    for event, sign in (("insert", ""), ("delete", "-"))
] + [
    "CREATE TRIGGER samples_tally_insert AFTER INSERT ON samples REFERENCING NEW TABLE AS changed "
    "FOR EACH STATEMENT EXECUTE FUNCTION samples_tally_insert()",
    # A sample goes only with its corpus or generation (ON DELETE CASCADE); a corpus's tallies go with it.
    "CREATE TRIGGER samples_tally_delete AFTER DELETE ON samples REFERENCING OLD TABLE AS changed "
    "FOR EACH STATEMENT EXECUTE FUNCTION samples_tally_delete()",
]

# SQLite: per row (it has no statement triggers); an upsert of one tally row each.
_SQLITE = [
    f"""
    CREATE TRIGGER samples_tally_{event} AFTER {event.upper()} ON samples BEGIN
        INSERT INTO corpus_tallies ({_KEY}, n, words, fillers, repetitions)
        VALUES ({row}.corpus_id, {row}.label, {row}.status, coalesce({row}.reject_reason, ''), {sign}1,
                {sign}coalesce({row}.marker_words, 0), {sign}coalesce({row}.marker_fillers, 0),
                {sign}coalesce({row}.marker_repetitions, 0))
        ON CONFLICT ({_KEY}) DO UPDATE SET
            {', '.join(f'{c} = {c} + excluded.{c}' for c in _SUMS)};
    END
    """
    for event, row, sign in (("insert", "NEW", ""), ("delete", "OLD", "-"))
]


def upgrade() -> None:
    op.create_table(
        'corpus_tallies',
        sa.Column('corpus_id', sa.String(length=40), nullable=False),
        sa.Column('label', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.String(length=40), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.Column('words', sa.BigInteger(), nullable=False),
        sa.Column('fillers', sa.BigInteger(), nullable=False),
        sa.Column('repetitions', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['corpus_id'], ['corpora.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('corpus_id', 'label', 'status', 'reason'),
    )
    connection = op.get_bind()
    connection.execute(sa.text(
        f"INSERT INTO corpus_tallies ({_KEY}, n, words, fillers, repetitions) "
        "SELECT corpus_id, label, status, coalesce(reject_reason, ''), count(*), coalesce(sum(marker_words), 0), "
        "coalesce(sum(marker_fillers), 0), coalesce(sum(marker_repetitions), 0) "
        "FROM samples GROUP BY corpus_id, label, status, coalesce(reject_reason, '')"
    ))
    for statement in _POSTGRES if connection.dialect.name == "postgresql" else _SQLITE:
        connection.execute(sa.text(statement))


def downgrade() -> None:
    connection = op.get_bind()
    for event in ("insert", "delete"):
        connection.execute(sa.text(f"DROP TRIGGER IF EXISTS samples_tally_{event}"
                                   + (" ON samples" if connection.dialect.name == "postgresql" else "")))
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text(f"DROP FUNCTION IF EXISTS samples_tally_{event}()"))
    op.drop_table('corpus_tallies')
