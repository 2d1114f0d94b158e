"""A batched decoding loop: a seed per row, a stop per row, finished rows leave the batch.

transformers' ``generate`` draws every row from one random stream, so a row's text depends on its
batch, and it keeps computing rows that have ended until the longest one does. Here each row owns a
generator seeded with its sample's seed, and a row that ends is dropped from the KV cache at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from app.domain.sampling import FinishReason, SamplingParams


@dataclass(frozen=True)
class DecodedRow:
    """Generated token ids (the end token excluded), how the row ended, and the stop string that ended it."""

    tokens: list[int]
    finish_reason: FinishReason
    stop: str | None = None


def decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    params: SamplingParams,
    *,
    end_ids: frozenset[int],
    pad_id: int,
    tokenizer: Any = None,
) -> list[DecodedRow]:
    """Sample one continuation per prompt; ``tokenizer`` is needed only for stop strings."""
    if params.stop and tokenizer is None:
        raise ValueError("stop strings need the tokenizer")
    device = model.device
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    seen = _seen_tokens(input_ids, mask, model.config.vocab_size) if params.repetition_penalty != 1.0 else None

    cache = DynamicCache()
    active = list(range(len(prompts)))
    generated: list[list[int]] = [[] for _ in prompts]
    results: dict[int, DecodedRow] = {}
    with torch.inference_mode():
        # The last position as a (rows, 1) index, not logits_to_keep=1: the slice that 1 selects is a strided
        # view, and on a CPU the head's matmul then broadcasts its weight over the batch (a 3.6 GB copy,
        # 7 s of every prefill at 64 rows, measured); a 2-D index gathers the rows contiguously.
        last = torch.full((len(prompts), 1), width - 1, device=device)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                    cache=cache, use_cache=True, logits_to_keep=last)
        positions = positions[:, -1:]
        for _ in range(params.max_tokens):
            logits = out.logits[:, -1, :].float()
            if seen is not None:
                logits = _penalise(logits, seen, params.repetition_penalty)
            chosen = choose_tokens(logits, params, [generators[row] for row in active]).tolist()
            keep: list[int] = []
            for slot, (row, token) in enumerate(zip(active, chosen)):
                ended = _ended(row, token, generated[row], params, end_ids, tokenizer)
                if ended is not None:
                    results[row] = ended
                else:
                    keep.append(slot)
            if not keep:
                break
            next_tokens = torch.tensor(chosen, device=device)
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions, next_tokens = mask[index], positions[index], next_tokens[index]
                seen = seen[index] if seen is not None else None
                active = [active[slot] for slot in keep]
            if seen is not None:
                seen[torch.arange(len(active), device=device), next_tokens] = True
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            positions = positions + 1
            out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=positions,
                        cache=cache, use_cache=True)
    for row in active:
        results.setdefault(row, DecodedRow(generated[row], FinishReason.LENGTH))
    return [results[row] for row in range(len(prompts))]


def choose_tokens(logits: torch.Tensor, params: SamplingParams, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row: temperature, top-k, top-p and min-p, then a draw from the row's own generator."""
    logits = logits / params.temperature
    k = min(params.top_k or logits.shape[-1], logits.shape[-1])
    values, indices = logits.topk(k, dim=-1)  # sorted, most likely first
    probs = torch.softmax(values, dim=-1)
    if params.top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        probs = probs.masked_fill(probs.cumsum(-1) - probs > params.top_p, 0.0)
    if params.min_p > 0.0:
        probs = probs.masked_fill(probs < params.min_p * probs[:, :1], 0.0)
    cdf = probs.cumsum(-1)
    draws = torch.stack([torch.rand((), generator=g) for g in generators]).to(cdf.device) * cdf[:, -1]
    picked = torch.searchsorted(cdf, draws[:, None], right=True).clamp(max=k - 1)
    return indices.gather(-1, picked).squeeze(-1)


def _ended(
    row: int, token: int, tokens: list[int], params: SamplingParams, end_ids: frozenset[int], tokenizer: Any
) -> DecodedRow | None:
    """Append ``token`` to the row; a DecodedRow if the row has ended with it."""
    if token in end_ids:
        return DecodedRow(tokens, FinishReason.STOP)
    tokens.append(token)
    if params.stop:
        tail = tokenizer.decode(tokens[-32:], skip_special_tokens=True)
        for stop in params.stop:
            if stop in tail:
                return DecodedRow(tokens, FinishReason.STOP, stop)
    if len(tokens) >= params.max_tokens:
        return DecodedRow(tokens, FinishReason.LENGTH)
    return None


def _seen_tokens(input_ids: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    seen = torch.zeros((input_ids.shape[0], vocab_size), dtype=torch.bool, device=input_ids.device)
    for row in range(input_ids.shape[0]):
        seen[row, input_ids[row][mask[row].bool()]] = True
    return seen


def _penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """The CTRL repetition penalty (as transformers and vLLM apply it): seen tokens lose likelihood."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen[:, : logits.shape[-1]], penalised, logits)
