"""The report task: load a corpus and its real data set, compute the evidence, store JSON and page."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.base import utcnow
from app.db.models import Adapter, Corpus, CorpusReport, Dataset
from app.domain.report.corpus_report import Drawn, ReportInputs, build_report
from app.domain.report.transcript import Transcript
from app.domain.splits import SPLITS
from app.logs import job_context
from app.server_paths import describe_failure
from app.services import reports
from worker.context import WorkerContext
from worker.lifecycle import claim, heartbeat, owns

log = logging.getLogger(__name__)


def run_report(ctx: WorkerContext, report_id: str) -> None:
    """Compute and store one corpus report; a failure is stored on the row, never half a report."""
    owner = ctx.new_owner()
    with ctx.db.transaction() as s:
        row = s.get(CorpusReport, report_id, with_for_update=True)
        if not claim(row, ctx.settings.max_attempts, owner, ctx.settings.stale_after_s):
            return
        corpus_id, attempt = row.corpus_id, row.attempts
        inputs = gather_inputs(s, corpus_id)
    with job_context(attempt=attempt), heartbeat(ctx.db, CorpusReport, report_id, owner,
                                                 ctx.settings.heartbeat_interval_s):
        try:
            report = build_report(inputs, ctx.embedder(), seed=ctx.settings.report_seed,
                                  resamples=ctx.settings.report_bootstrap_resamples)
            report["computed_at"] = utcnow().isoformat()
            from worker.reporting.page import write_report_files

            write_report_files(report, reports.directory(ctx.settings.resolved_artifact_dir, corpus_id))
        except Exception as exc:
            log.exception("report %s of corpus %s failed", report_id, corpus_id)
            _finish(ctx, report_id, owner, None, 0, describe_failure(exc, ctx.settings))
            return
    _finish(ctx, report_id, owner, report, len(inputs.synthetic))


def _finish(ctx: WorkerContext, report_id: str, owner: str, report: dict[str, Any] | None, samples: int,
            error: str | None = None) -> None:
    with ctx.db.transaction() as s:
        row = s.get(CorpusReport, report_id, with_for_update=True)
        if not owns(row, owner):
            log.warning("report %s was taken from this worker (or requested again); its result is not written",
                        report_id)
            return
        reports.finish(row, report, samples, error)


def gather_inputs(session: Session, corpus_id: str) -> ReportInputs:
    """Everything the report reads, in one transaction: real splits, accepted and drawn samples, provenance."""
    corpus = session.get(Corpus, corpus_id)
    splits = {split: [Transcript(str(r.id), r.text, r.label, r.participant_id)
                      for r in repo.records_for_split(session, corpus.dataset_id, split)] for split in SPLITS}
    drawn_rows = repo.drawn_samples(session, corpus_id)
    synthetic = [Transcript(str(r.id), r.text, r.label) for r in drawn_rows if r.status == "accepted"]
    drawn = [Drawn(r.label, r.text, r.finish_reason, r.reject_reason) for r in drawn_rows]
    labels = sorted({t.label for t in splits["train"]})
    return ReportInputs(labels, splits["train"], splits["validation"], splits["test"], synthetic, drawn,
                        context=_context(session, corpus))


def _context(session: Session, corpus: Corpus) -> dict[str, Any]:
    """Provenance, the data set's validation report and each adapter's training curve."""
    generations = repo.corpus_generations(session, corpus.id)
    adapters = [session.get(Adapter, adapter_id) for adapter_id in dict.fromkeys(g.adapter_id for g in generations)]
    dataset = session.get(Dataset, corpus.dataset_id)
    return {
        "corpus_id": corpus.id,
        "dataset_id": corpus.dataset_id,
        "generations": [{"id": g.id, "adapter_id": g.adapter_id, "status": g.status, "sampler": g.sampler,
                         "counts": g.counts, "accepted": g.done, "candidates": g.candidates, "rejected": g.rejected,
                         "params": g.params, "filters": g.filters} for g in generations],
        "adapters": [{"id": a.id, "job_id": a.job_id, "base_model": a.base_model, "method": a.method}
                     for a in adapters if a is not None],
        "dataset": {"id": dataset.id, "name": dataset.name, "report": dataset.report} if dataset else None,
        "training": [_training_curve(session, a.job_id) | {"adapter_id": a.id}
                     for a in adapters if a is not None and a.job_id],
    }


def _training_curve(session: Session, job_id: str) -> dict[str, Any]:
    return {"job_id": job_id,
            "eval_loss": [{"epoch": e.data.get("epoch"), "loss": e.data["eval_loss"]}
                          for e in repo.events_of_kind(session, job_id, "eval") if "eval_loss" in e.data]}
