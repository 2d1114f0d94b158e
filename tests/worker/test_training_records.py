"""What a fine-tune job hands its trainer: train records to learn from, validation records to measure,
never a test record nor a held-out speaker (finetune_jobs.check_training_records). No model is loaded:
the check runs before the trainer is asked for."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import repositories as repo
from app.db.models import FinetuneJob, Record as StoredRecord
from app.domain.ingestion import Record
from app.errors import InvalidInput
from app.services import finetune_jobs
from tests.api.factories import balanced_rows, create_job, csv_bytes, make_text, upload
from worker import runner
from worker.context import WorkerContext
from worker.runner import run_finetune
from worker.training.base import TrainResult

SPLIT_HEADER = ("id", "text", "label", "split")


def record(row: int, participant: str, split: str, text_number: int | None = None) -> Record:
    return Record(row, participant, make_text(row if text_number is None else text_number), "control", split)


class TestCheckTrainingRecords:
    def test_train_and_validation_records_pass(self):
        finetune_jobs.check_training_records(
            [record(2, "S1", "train")], [record(3, "S2", "validation")], [record(4, "S3", "test")]
        )

    def test_a_test_record_among_the_train_examples_is_refused(self):
        with pytest.raises(InvalidInput) as refused:
            finetune_jobs.check_training_records([record(2, "S1", "train"), record(7, "S9", "test")], [], [])
        assert refused.value.detail.startswith(
            "refusing to train: a 'test' record (line 7, participant S9) was selected as a train example"
        )

    @pytest.mark.parametrize("split", ["test", "train"])
    def test_anything_but_validation_among_the_eval_examples_is_refused(self, split):
        with pytest.raises(InvalidInput) as refused:
            finetune_jobs.check_training_records([record(2, "S1", "train")], [record(5, "S4", split)], [])
        expected = f"a '{split}' record (line 5, participant S4) was selected as a validation example"
        assert expected in refused.value.detail

    def test_a_held_out_speaker_under_another_spelling_is_refused(self):
        with pytest.raises(InvalidInput) as refused:
            finetune_jobs.check_training_records([record(2, "P01", "train")], [], [record(9, " p01", "test")])
        assert refused.value.detail.startswith(
            "refusing to train on this data set: participant P01 is in 'train' on line 2 and in 'test' on line 9"
        )
        assert refused.value.extra["errors"][0]["code"] == "participant_in_two_splits"

    def test_a_held_out_transcript_is_refused(self):
        with pytest.raises(InvalidInput) as refused:
            finetune_jobs.check_training_records([record(2, "A", "train", 1)], [record(3, "B", "validation", 1)], [])
        assert refused.value.extra["errors"][0]["code"] == "text_in_two_splits"


@pytest.fixture
def job(client, auth) -> dict:
    """A queued job on a data set with train and test participants (S002 and S005 are test)."""
    rows = balanced_rows(3, splits=["train", "train", "test"])
    response = upload(client, auth, csv_bytes(rows, SPLIT_HEADER), "splits.csv")
    assert response.status_code == 201, response.text
    response = create_job(client, auth, response.json()["id"])
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def ctx(settings, db, monkeypatch) -> WorkerContext:
    """A worker context whose job fails the test if it gets past the record check: the length check
    that comes next (it loads the base model's tokenizer) and the trainer are never to be reached."""
    monkeypatch.setattr(runner, "_check_lengths", lambda *args: pytest.fail("the job got past the record check"))
    context = WorkerContext(settings, db)
    context.trainer = lambda method: pytest.fail("the trainer was reached")
    return context


def add_legacy_test_record(db, dataset_id: str, participant: str) -> None:
    """A record as a data set stored before ids were compared ignoring case could hold."""
    with db.transaction() as session:
        repo.add_records(session, [{"dataset_id": dataset_id, "row": 99, "participant_id": participant,
                                    "text": make_text(99), "label": "control", "split": "test"}])


def job_row(db, job_id: str) -> FinetuneJob:
    with db.transaction() as session:
        return session.get(FinetuneJob, job_id)


class TestFinetuneJobGuard:
    def test_a_selection_that_lets_test_records_through_fails_the_job(self, db, ctx, job, monkeypatch):
        def every_record(session, dataset_id, split):
            return session.scalars(select(StoredRecord).where(StoredRecord.dataset_id == dataset_id)
                                   .order_by(StoredRecord.id)).all()

        monkeypatch.setattr(repo, "records_for_split", every_record)
        run_finetune(ctx, job["id"])
        failed = job_row(db, job["id"])
        assert failed.status == "failed"
        assert failed.error.startswith(
            "refusing to train: a 'test' record (line 4, participant S002) was selected as a train example"
        )

    def test_a_held_out_speaker_stored_under_another_spelling_fails_the_job(self, db, ctx, job):
        add_legacy_test_record(db, job["dataset_id"], "s000")
        run_finetune(ctx, job["id"])
        failed = job_row(db, job["id"])
        assert failed.status == "failed"
        assert failed.error.startswith(
            "refusing to train on this data set: participant S000 is in 'train' on line 2 and in 'test' on line 99"
        )

    def test_such_a_data_set_is_refused_when_the_job_is_created(self, client, auth, db, job, queue):
        add_legacy_test_record(db, job["dataset_id"], "\uff53\uff10\uff10\uff11")
        queue.sent.clear()
        response = create_job(client, auth, job["dataset_id"])
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidInput"
        assert "participant S001 is in 'train' on line 3 and in 'test' on line 99" in response.json()["detail"]
        assert queue.sent == []


TEST_MARKER, VALIDATION_MARKER = "zebrafish", "walrus"


class RecordingTrainer:
    """A spec'd stand-in for the Trainer interface that keeps what the worker hands it and trains nothing."""

    def __init__(self) -> None:
        self.train_examples: list = []
        self.eval_examples: list = []

    def train(self, spec, train_examples, eval_examples, on_event, should_stop) -> TrainResult:
        self.train_examples, self.eval_examples = train_examples, eval_examples
        return TrainResult(spec.output_dir / "adapter", {}, [], stopped=True)


class TestWhatTheTrainerReceives:
    def test_only_train_texts_reach_the_gradient_and_only_validation_texts_its_eval(
        self, client, auth, db, settings, monkeypatch
    ):
        rows = balanced_rows(6, splits=["train", "train", "validation", "train", "test", "train"])
        for row in rows:
            marker = {"test": TEST_MARKER, "validation": VALIDATION_MARKER}.get(row[3])
            row[1] += f" The {marker} is in this transcript only." if marker else ""
        dataset = upload(client, auth, csv_bytes(rows, SPLIT_HEADER), "splits.csv")
        assert dataset.status_code == 201, dataset.text
        job = create_job(client, auth, dataset.json()["id"])
        assert job.status_code == 201, job.text
        checked: list = []
        monkeypatch.setattr(runner, "_check_lengths", lambda ctx, job_id, model, hp, examples: checked.extend(examples))
        trainer = RecordingTrainer()
        ctx = WorkerContext(settings, db)
        ctx.trainer = lambda method: trainer

        run_finetune(ctx, job.json()["id"])

        assert job_row(db, job.json()["id"]).status == "cancelled"  # the stand-in reports a stopped run
        train_texts = {row[1] for row in rows if row[3] == "train"}
        validation_texts = {row[1] for row in rows if row[3] == "validation"}
        assert sorted(example[-1]["content"] for example in trainer.train_examples) == sorted(train_texts)
        assert sorted(example[-1]["content"] for example in trainer.eval_examples) == sorted(validation_texts)
        for example in trainer.train_examples:
            assert not any(marker in m["content"] for m in example for marker in (TEST_MARKER, VALIDATION_MARKER))
        assert not any(TEST_MARKER in m["content"] for example in trainer.eval_examples for m in example)
        assert checked == trainer.train_examples + trainer.eval_examples
