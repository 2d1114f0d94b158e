"""Generations: which adapter, which labels and counts, how to sample and filter, which corpus.

A generation draws candidates per label in chunks until ``counts[label]`` are accepted or the
candidate budget runs out. Every candidate is stored with its verdict; the corpus is the accepted ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.base import utcnow
from app.db.models import TERMINAL_STATUSES, Adapter, Corpus, Generation
from app.db.session import enqueue_after_commit, revoke_after_commit
from app.domain.post_filters import Verdict
from app.domain.sampling import (
    PROMPT_ALLOWANCE, FilterSettings, FinishReason, SamplerName, SamplingParams, kv_bytes_per_token,
)
from app.errors import InvalidInput, JobStateError, NotFound
from app.services import corpora, prompt_sets, token_counts
from app.settings import Settings

TASK_NAME = "generation.run"
OPENAI_MAX_TEMPERATURE = 2.0


def create(
    session: Session,
    tenant_id: str,
    *,
    adapter_id: str,
    counts: Mapping[str, int],
    params: SamplingParams,
    filters: FilterSettings,
    sampler: SamplerName | None,
    settings: Settings,
    batch_size: int | None,
    corpus_id: str | None,
) -> Generation:
    """A queued generation appending to ``corpus_id`` (or to a new corpus of the adapter's data set)."""
    found = repo.adapter_with_origin(session, tenant_id, adapter_id)
    if found is None:
        raise NotFound(f"adapter '{adapter_id}' not found")
    adapter, dataset_id, prompt_set_row = found
    sampler = _sampler_for(adapter, sampler, settings.default_sampler)
    available_samplers = settings.available_samplers
    if sampler == SamplerName.OPENAI and params.temperature > OPENAI_MAX_TEMPERATURE:
        raise InvalidInput(f"temperature {params.temperature} is above OpenAI's maximum of {OPENAI_MAX_TEMPERATURE:g}")
    if sampler not in available_samplers:
        raise InvalidInput(
            f"the '{sampler}' sampler is not configured on this server (available: "
            f"{', '.join(sorted(available_samplers))}); for vllm set SYNTHAUG_VLLM_BASE_URL, for openai "
            f"SYNTHAUG_OPENAI_API_KEY"
        )
    check_limits(settings, counts, params, batch_size, sampler, adapter.base_model)
    prompt_set = prompt_sets.load(prompt_set_row or prompt_sets.get(session, tenant_id, adapter.prompt_set_id))
    unknown = sorted(set(counts) - set(prompt_set.labels))
    if unknown:
        known = ", ".join(sorted(prompt_set.labels))
        raise InvalidInput(f"label '{unknown[0]}' is not one the adapter was trained on (known: {known})")
    corpus = _target_corpus(session, tenant_id, corpus_id, adapter, dataset_id)
    generation = Generation(
        tenant_id=tenant_id,
        adapter_id=adapter.id,
        corpus_id=corpus.id,
        label=next(iter(counts)) if len(counts) == 1 else None,
        counts=dict(counts),
        n=sum(counts.values()),
        params=params.model_dump(),
        filters=filters.model_dump(),
        sampler=sampler.value,
        batch_size=batch_size,
        progress={label: {"accepted": 0, "rejected": 0} for label in counts},
        rejected={},
    )
    session.add(generation)
    session.flush()
    enqueue_after_commit(session, TASK_NAME, generation.id)
    return generation


def check_limits(
    settings: Settings, counts: Mapping[str, int], params: SamplingParams, batch_size: int | None,
    sampler: SamplerName, base_model: str,
) -> None:
    """Refuse a request beyond the server's limits, naming the parameter, its value and the limit.

    For the hf sampler a batch's KV cache grows with batch_size x (prompt + max_tokens); it is bounded
    by a token budget and, where the base model's config is on this server, by an estimate in bytes
    (fp32, the widest dtype the sampler uses). The sampler clamps its batches to the same budgets.
    """
    total = sum(counts.values())
    bounds = [("n (the sum of counts)", total, settings.max_generation_samples, "MAX_GENERATION_SAMPLES"),
              ("max_tokens", params.max_tokens, settings.max_sample_tokens, "MAX_SAMPLE_TOKENS"),
              ("batch_size", batch_size or 0, settings.max_generation_batch_size, "MAX_GENERATION_BATCH_SIZE")]
    if sampler == SamplerName.HF:
        batch_tokens = (batch_size or 1) * (PROMPT_ALLOWANCE + params.max_tokens)
        bounds.append((f"batch_size x ({PROMPT_ALLOWANCE} prompt tokens + max_tokens)", batch_tokens,
                       settings.max_batch_tokens, "MAX_BATCH_TOKENS"))
        per_token = _kv_bytes_per_token(settings, base_model)
        if per_token is not None:
            kv_bytes = batch_tokens * per_token
            bounds.append((f"the KV cache of batch_size {batch_size or 1} at max_tokens {params.max_tokens} "
                           f"(bytes, estimated for {base_model})", kv_bytes, settings.hf_max_kv_cache_bytes,
                           "HF_MAX_KV_CACHE_BYTES"))
    for name, value, limit, setting in bounds:
        if value > limit:
            raise InvalidInput(f"{name} is {value}, above this server's limit of {limit} (SYNTHAUG_{setting})",
                               extra={"parameter": name, "value": value, "limit": limit})


# Per (models root, cache dir, base model): a prepared model's config does not change, and finding
# it (resolving the name, stat-ing the roots) was a tenth of a submission's time. A model not
# prepared yet is looked for again next time.
_KV_BYTES_PER_TOKEN: dict[tuple[str, str, str], int] = {}


def _kv_bytes_per_token(settings: Settings, base_model: str) -> int | None:
    """fp32 KV cache bytes per token from the base model's config, when it is prepared on this server."""
    key = (str(settings.models_dir), str(settings.cache_dir or settings.data_dir), base_model)
    known = _KV_BYTES_PER_TOKEN.get(key)
    if known is None:
        known = _read_kv_bytes_per_token(settings, base_model)
        if known is not None:
            _KV_BYTES_PER_TOKEN[key] = known
    return known


def _read_kv_bytes_per_token(settings: Settings, base_model: str) -> int | None:
    try:
        path = token_counts.model_dir(settings, base_model) / "config.json"
        return kv_bytes_per_token(json.loads(path.read_text()), 4) if path.is_file() else None
    except (InvalidInput, OSError, ValueError, KeyError, TypeError):
        return None


def _sampler_for(adapter: Adapter, requested: SamplerName | None, default: SamplerName) -> SamplerName:
    """An OpenAI fine-tune is sampled through OpenAI, a PEFT adapter through hf or vllm; a request
    that names the other kind's sampler is refused (a generation always uses the model it names)."""
    if adapter.kind == "openai":
        if requested not in (None, SamplerName.OPENAI):
            raise InvalidInput(f"adapter '{adapter.id}' is the OpenAI model {adapter.remote_model}; it is sampled "
                               f"through OpenAI (sampler 'openai'), not '{requested}'")
        return SamplerName.OPENAI
    if requested == SamplerName.OPENAI:
        raise InvalidInput(f"adapter '{adapter.id}' is a {adapter.method} adapter of {adapter.base_model}; the "
                           "openai sampler only samples OpenAI fine-tunes")
    return requested or default


def _target_corpus(
    session: Session, tenant_id: str, corpus_id: str | None, adapter: Adapter, dataset_id: str
) -> Corpus:
    # A corpus holds samples of adapters trained on one data set, so "its real train split" (for
    # filters, reports and augmented exports) is one well-defined set of participants.
    if corpus_id is None:
        corpus = Corpus(tenant_id=tenant_id, dataset_id=dataset_id, name=f"synthetic from {adapter.id}")
        session.add(corpus)
        session.flush()
        return corpus
    corpus = corpora.get(session, tenant_id, corpus_id)
    if corpus.dataset_id is None:
        corpus.dataset_id = dataset_id
    elif corpus.dataset_id != dataset_id:
        raise InvalidInput(
            f"corpus '{corpus.id}' holds samples of adapters trained on dataset '{corpus.dataset_id}'; adapter "
            f"'{adapter.id}' was trained on '{dataset_id}'. Generate into a new corpus instead."
        )
    return corpus


def get(session: Session, tenant_id: str, generation_id: str) -> Generation:
    generation = repo.get_owned(session, Generation, tenant_id, generation_id)
    if generation is None:
        raise NotFound(f"generation '{generation_id}' not found")
    return generation


def cancel(session: Session, tenant_id: str, generation_id: str) -> Generation:
    """Queued: cancelled now and its message withdrawn. Running: stops before its next chunk."""
    get(session, tenant_id, generation_id)
    generation = session.get(Generation, generation_id, with_for_update=True)
    if generation.status in TERMINAL_STATUSES:
        raise JobStateError(f"generation '{generation_id}' is already {generation.status} and cannot be cancelled")
    generation.cancel_requested = True
    if generation.status == "queued":
        finish(generation, "cancelled", "cancelled before it started")
        revoke_after_commit(session, TASK_NAME, generation.id)
    session.flush()
    return generation


# the worker's side

@dataclass
class LabelTally:
    """Where one label of a generation stands: wanted, accepted, rejected, next candidate index, budget."""

    wanted: int
    accepted: int
    rejected: int
    next_index: int
    budget: int

    @property
    def remaining(self) -> int:
        return max(0, self.wanted - self.accepted)

    @property
    def open(self) -> bool:
        return self.remaining > 0 and self.next_index < self.budget


def tallies(session: Session, generation: Generation) -> dict[str, LabelTally]:
    """The per-label state of a generation, read from its stored samples (the source of truth)."""
    stored = repo.generation_tallies(session, generation.id)
    factor = FilterSettings.model_validate(generation.filters).candidate_budget
    result = {}
    for label, wanted in generation.counts.items():
        accepted, rejected, next_index = stored.get(label, (0, 0, 0))
        result[label] = LabelTally(wanted, accepted, rejected, next_index, math.ceil(wanted * factor))
    return result


def plan_chunk(state: Mapping[str, LabelTally], chunk_size: int) -> list[tuple[str, int]]:
    """The (label, index) candidates to draw next: for each open label, about as many as it still
    needs at its acceptance rate so far, within its budget, all of them within ``chunk_size``.

    A function of the stored state only, so a resumed generation draws what an uninterrupted one would.
    """
    wants: dict[str, int] = {}
    for label in sorted(state):
        tally = state[label]
        if not tally.open:
            continue
        drawn = tally.accepted + tally.rejected
        rate = max(tally.accepted / drawn, 0.1) if drawn else 1.0
        wants[label] = min(math.ceil(tally.remaining / rate), tally.budget - tally.next_index)
    total = sum(wants.values())
    if total > chunk_size:
        wants = {label: max(1, want * chunk_size // total) for label, want in wants.items()}
    return [(label, state[label].next_index + i) for label, want in wants.items() for i in range(want)]


@dataclass(frozen=True)
class Drawn:
    """One judged candidate, ready to store."""

    label: str
    index: int
    text: str
    finish_reason: FinishReason
    verdict: Verdict
    provenance: dict[str, Any]


def record_chunk(session: Session, generation: Generation, drawn: Iterable[Drawn]) -> int:
    """Store a chunk's candidates and update the counts; a (label, index) already stored (a task
    delivered twice) is skipped by the database itself. Returns how many rows were new."""
    drawn = list(drawn)
    rows = [
        dict(
            corpus_id=generation.corpus_id, generation_id=generation.id, index=d.index, label=d.label, text=d.text,
            status="accepted" if d.verdict.accepted else "rejected",
            reject_reason=None if d.verdict.accepted else d.verdict.reason.value,
            finish_reason=d.finish_reason.value, checks=d.verdict.checks, provenance=d.provenance,
            created_at=utcnow(),
        )
        for d in drawn
    ]
    inserted = repo.insert_samples(session, rows)
    refresh_counts(session, generation)
    _add_usage(generation, drawn)
    return inserted


def _add_usage(generation: Generation, drawn: list[Drawn]) -> None:
    """Sum what a remote sampler reported (tokens billed, system fingerprints seen) onto the generation."""
    reported = [d.provenance for d in drawn if "completion_tokens" in d.provenance]
    if not reported:
        return
    usage = dict(generation.usage or {})
    for key in ("prompt_tokens", "completion_tokens"):
        usage[key] = usage.get(key, 0) + sum(p.get(key) or 0 for p in reported)
    fingerprints = set(usage.get("system_fingerprints", [])) | {p["system_fingerprint"] for p in reported
                                                               if p.get("system_fingerprint")}
    usage["system_fingerprints"] = sorted(fingerprints)
    generation.usage = usage


def refresh_counts(session: Session, generation: Generation) -> None:
    """done, candidates, per-label progress and rejections by reason, from the stored samples."""
    state = tallies(session, generation)
    generation.done = sum(t.accepted for t in state.values())
    generation.candidates = sum(t.accepted + t.rejected for t in state.values())
    generation.progress = {label: {"accepted": t.accepted, "rejected": t.rejected} for label, t in state.items()}
    generation.rejected = repo.generation_reject_counts(session, generation.id)
    generation.heartbeat_at = utcnow()


def finish(generation: Generation, status: str, error: str | None = None) -> None:
    """Close a generation; a succeeded one that fell short of its counts says so."""
    generation.status, generation.finished_at, generation.error, generation.owner = status, utcnow(), error, None
    if status == "succeeded":
        generation.budget_exhausted = generation.done < generation.n
