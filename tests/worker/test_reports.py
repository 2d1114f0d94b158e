"""Corpus reports through the embedded runner: computed when a generation succeeds, after a real fine-tune."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from app.cli import cli
from app.db.models import CorpusReport, Record
from app.settings import get_settings
from tests.worker.test_runner import KEEP_ALL, SAMPLING, get, start_job, upload
from worker.reporting.corpus_report import gather_inputs, run_report

pytestmark = pytest.mark.slow

SECTIONS = ("markers", "completeness", "diversity", "semantic", "memorization", "fidelity", "utility", "headline",
            "dataset", "training", "generations", "adapters")


@pytest.fixture(scope="module")
def stack_settings() -> dict:
    return {"report_on_generation": True, "report_bootstrap_resamples": 100}


@pytest.fixture(scope="module")
def corpus(stack) -> dict:
    """Six samples per label from a two-step adapter; the worker computes the report after them."""
    dataset_id = upload(stack)
    start_job(stack, dataset_id)
    assert stack.runner.join(timeout=900)
    job = get(stack, "/finetune-jobs")["data"][0]
    assert job["status"] == "succeeded", job["error"]
    r = stack.client.post("/generate", headers=stack.headers, json={
        "adapter_id": job["adapter_id"], "counts": {"control": 6, "impaired": 6}, "filters": KEEP_ALL,
        **{k: v for k, v in SAMPLING.items() if k not in ("n", "batch_size")}, "max_tokens": 48,
    })
    assert r.status_code == 202, r.text
    assert stack.runner.join(timeout=900)
    generation = get(stack, f"/generations/{r.json()['id']}")
    assert generation["status"] == "succeeded", generation["error"]
    return {"id": generation["corpus_id"], "dataset_id": dataset_id, "job": job, "generation": generation}


class TestComputedAfterAGeneration:
    def test_every_section_is_stored(self, stack, corpus):
        row = get(stack, f"/corpora/{corpus['id']}/report")
        assert row["status"] == "succeeded", row["error"]
        assert row["samples"] == 12 and not row["stale"]
        report = row["report"]
        assert set(SECTIONS) <= set(report)
        assert report["labels"] == ["control", "impaired"]
        assert report["counts"]["impaired"]["accepted"] == 6 and report["counts"]["impaired"]["drawn"] == 6
        assert report["corpus_id"] == corpus["id"] and report["dataset_id"] == corpus["dataset_id"]
        assert report["adapters"][0]["id"] == corpus["job"]["adapter_id"]
        assert report["generations"][0]["id"] == corpus["generation"]["id"]

    def test_measures_are_real_numbers_from_both_sides(self, stack, corpus):
        report = get(stack, f"/corpora/{corpus['id']}/report")["report"]
        for label in ("control", "impaired"):
            markers = report["markers"][label]
            assert markers["real"]["texts"] == report["counts"][label]["train"] > 0
            assert markers["synthetic"]["texts"] == 6
            assert len(markers["values"]["synthetic"]) == 6
            assert report["completeness"][label]["drawn"] == 6
            assert 0.0 <= report["completeness"][label]["ended_share"] <= 1.0
            assert report["semantic"]["by_label"][label]["synthetic"] > 0
            assert report["semantic"]["by_label"][label]["held_out_real"] > 0
        # Real speech reads as its label far more often than chance to the classifier trained on it.
        assert report["fidelity"]["held_out"]["text"]["impaired"]["share"] >= 0.75
        memorization = report["memorization"]
        assert memorization["synthetic"]["n"] == 12
        assert memorization["held_out"]["n"] == sum(report["counts"][l]["validation"] + report["counts"][l]["test"]
                                                   for l in ("control", "impaired"))
        assert len(report["semantic"]["map"]) == sum(sum(c[k] for k in ("train", "validation", "test", "accepted"))
                                                    for c in report["counts"].values())

    def test_utility_is_scored_on_test_participants_only(self, stack, corpus):
        report = get(stack, f"/corpora/{corpus['id']}/report")["report"]
        utility = report["utility"]
        test_participants = len({r["participant_id"] for r in get(
            stack, f"/datasets/{corpus['dataset_id']}/records?split=test&limit=200")["data"]})
        assert utility["test_participants"] == test_participants
        arms = {(r["classifier"], r["arm"]) for r in utility["results"]}
        assert arms == {(c, a) for c in ("text", "markers") for a in ("real", "real+1x", "real+2x")}
        for result in utility["results"]:
            f1 = result["metrics"]["f1"]
            assert f1["low"] <= f1["value"] <= f1["high"]

    def test_the_training_curve_and_the_data_set_report_come_along(self, stack, corpus):
        report = get(stack, f"/corpora/{corpus['id']}/report")["report"]
        assert report["dataset"]["id"] == corpus["dataset_id"] and report["dataset"]["report"]["ok"]
        assert report["training"][0]["job_id"] == corpus["job"]["id"]

    def test_the_page_embeds_every_chart(self, stack, corpus):
        r = stack.client.get(f"/corpora/{corpus['id']}/report.html", headers=stack.headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        for chart in ("chart-markers", "chart-embedding-map", "chart-utility", "chart-loops"):
            start = r.text.index(f'id="{chart}"')
            tag = r.text[r.text.rindex("<img", 0, start):r.text.index(">", start)]
            data = tag.split("data:image/png;base64,")[1].split('"')[0]
            assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


class TestRecompute:
    def test_post_recomputes_in_place(self, stack, corpus):
        before = get(stack, f"/corpora/{corpus['id']}/report")
        r = stack.client.post(f"/corpora/{corpus['id']}/report", headers=stack.headers)
        assert r.status_code == 202 and r.json()["id"] == before["id"]
        assert stack.runner.join(timeout=600)
        after = get(stack, f"/corpora/{corpus['id']}/report")
        assert after["status"] == "succeeded" and after["finished_at"] > before["finished_at"]
        assert after["report"]["headline"] == before["report"]["headline"]  # same inputs, same seed

    def queue_again(self, stack, corpus) -> str:
        with stack.db.transaction() as s:
            row = s.query(CorpusReport).filter_by(corpus_id=corpus["id"]).one()
            row.status, row.attempts = "queued", 0
            return row.id

    def test_a_failure_is_stored_with_its_reason(self, stack, corpus, monkeypatch):
        report_id = self.queue_again(stack, corpus)

        def broken():
            raise RuntimeError("embedding model missing")

        monkeypatch.setattr(stack.ctx, "embedder", broken)
        run_report(stack.ctx, report_id)
        row = get(stack, f"/corpora/{corpus['id']}/report")
        assert row["status"] == "failed" and row["report"] is None
        assert row["error"] == "RuntimeError: embedding model missing"
        monkeypatch.undo()
        run_report(stack.ctx, self.queue_again(stack, corpus))
        assert get(stack, f"/corpora/{corpus['id']}/report")["status"] == "succeeded"

    def test_without_test_participants_of_a_label_utility_says_why(self, stack, corpus):
        report_id = self.queue_again(stack, corpus)
        with stack.db.transaction() as s:
            # No test participants of one label: the data set can no longer score utility, but the rest holds.
            s.execute(update(Record).where(Record.dataset_id == corpus["dataset_id"], Record.split == "test",
                                           Record.label == "control").values(split="validation"))
        try:
            run_report(stack.ctx, report_id)
            report = get(stack, f"/corpora/{corpus['id']}/report")["report"]
            assert "no 'control' participants" in report["utility"]["skipped"]
        finally:
            with stack.db.transaction() as s:
                s.execute(update(Record).where(Record.dataset_id == corpus["dataset_id"], Record.split == "validation",
                                               Record.label == "control").values(split="test"))

    def test_inputs_hold_only_accepted_samples_as_synthetic(self, stack, corpus):
        with stack.db.transaction() as s:
            inputs = gather_inputs(s, corpus["id"])
        assert len(inputs.synthetic) == 12 and len(inputs.drawn) == 12
        assert {t.participant for t in inputs.synthetic} == {None}
        assert not {t.participant for t in inputs.train} & {t.participant for t in inputs.test}


class TestCommandLine:
    def test_writes_the_stored_report_to_disk(self, stack, corpus, tmp_path, monkeypatch):
        monkeypatch.setenv("SYNTHAUG_DATABASE_URL", stack.settings.resolved_database_url)
        monkeypatch.setenv("SYNTHAUG_DATA_DIR", str(stack.settings.data_dir))
        monkeypatch.setenv("SYNTHAUG_CACHE_DIR", str(stack.settings.resolved_cache_dir))
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(cli, ["report", corpus["id"], "--out", str(tmp_path / "out")])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        stored = get(stack, f"/corpora/{corpus['id']}/report")["report"]
        assert json.loads((tmp_path / "out" / "report.json").read_text()) == stored
        assert "chart-markers" in (tmp_path / "out" / "report.html").read_text()

    def test_an_unknown_corpus_is_named(self, stack, monkeypatch):
        monkeypatch.setenv("SYNTHAUG_DATABASE_URL", stack.settings.resolved_database_url)
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(cli, ["report", "corp_nope"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code != 0 and "corp_nope" in result.output
