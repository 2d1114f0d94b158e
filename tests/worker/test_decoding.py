"""The batched decoding loop on a tiny random Llama: padding, positions, per-row seeds and stops."""

from __future__ import annotations

import pytest
import torch

from app.domain.sampling import FinishReason, SamplingParams
from worker.sampling.decoding import _penalise, choose_tokens, decode

END = 3
PAD = 0


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def greedy_alone(model, prompt: list[int], steps: int, penalty: float = 1.0) -> list[int]:
    """Reference: one row, no padding, no cache, the argmax of a full forward pass at every step
    (after the repetition penalty on every token seen so far)."""
    ids = list(prompt)
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            for seen in set(ids):
                logits[seen] = logits[seen] / penalty if logits[seen] > 0 else logits[seen] * penalty
            token = int(logits.argmax())
            if token == END:
                break
            out.append(token)
            ids.append(token)
    return out


def params(**values) -> SamplingParams:
    return SamplingParams(**{"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 12, **values})


class TestDecode:
    def test_greedy_rows_of_different_lengths_match_decoding_each_alone(self, model):
        prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
        rows = decode(model, prompts, [1, 2, 3], params(top_k=1), end_ids=frozenset({END}), pad_id=PAD)
        for prompt, row in zip(prompts, rows):
            assert row.tokens == greedy_alone(model, prompt, 12)

    def test_a_row_ending_early_leaves_the_others_untouched(self, model):
        prompts = [[5, 6, 7], [20, 21, 22, 23]]
        first = greedy_alone(model, prompts[0], 12)
        end_after_one = frozenset({END, first[1]}) if len(first) > 1 else frozenset({END})
        rows = decode(model, prompts, [1, 2], params(top_k=1), end_ids=end_after_one, pad_id=PAD)
        assert rows[0].finish_reason == FinishReason.STOP and rows[0].tokens == first[:1]
        alone = decode(model, prompts[1:], [2], params(top_k=1), end_ids=end_after_one, pad_id=PAD)
        assert rows[1] == alone[0]

    def test_max_tokens_is_a_length_finish(self, model):
        rows = decode(model, [[5, 6]], [1], params(max_tokens=4), end_ids=frozenset(), pad_id=PAD)
        assert rows[0].finish_reason == FinishReason.LENGTH and len(rows[0].tokens) == 4

    def test_a_rows_text_depends_on_its_seed_not_its_neighbours(self, model):
        prompt = [5, 6, 7]
        rows = decode(model, [prompt, prompt, prompt], [11, 12, 11], params(), end_ids=frozenset(), pad_id=PAD)
        assert rows[0] == rows[2]
        assert rows[0].tokens != rows[1].tokens
        again = decode(model, [prompt, [9, 9, 9, 9]], [11, 99], params(), end_ids=frozenset(), pad_id=PAD)
        assert again[0] == rows[0]

    def test_repetition_penalty_counts_prompt_and_output_tokens_of_each_row(self, model):
        prompts = [[5, 6, 7, 8], [9, 10]]
        rows = decode(model, prompts, [1, 2], params(top_k=1, repetition_penalty=3.0),
                      end_ids=frozenset({END}), pad_id=PAD)
        for prompt, row in zip(prompts, rows):
            assert row.tokens == greedy_alone(model, prompt, 12, penalty=3.0)
        assert rows[0].tokens != greedy_alone(model, prompts[0], 12)


class TestChooseTokens:
    def logits(self) -> torch.Tensor:
        return torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))

    def draw(self, n: int = 200, **values) -> list[set[int]]:
        seen: list[set[int]] = [set(), set()]
        for seed in range(n):
            gens = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1000)]
            for row, token in enumerate(choose_tokens(self.logits(), params(**values), gens).tolist()):
                seen[row].add(token)
        return seen

    def test_unfiltered_draws_reach_every_token(self):
        assert self.draw() == [{0, 1, 2, 3}, {0, 1, 2, 3}]

    def test_top_k(self):
        assert self.draw(top_k=2) == [{0, 1}, {3, 2}]
        assert self.draw(top_k=1) == [{0}, {3}]

    def test_top_p_keeps_the_smallest_prefix_reaching_the_mass(self):
        assert self.draw(top_p=0.7) == [{0, 1}, {3, 2}]
        assert self.draw(top_p=0.01) == [{0}, {3}]

    def test_min_p(self):
        assert self.draw(min_p=0.5) == [{0, 1}, {3, 2}]

    def test_low_temperature_sharpens(self):
        assert self.draw(temperature=0.05) == [{0}, {3}]

    def test_same_generator_state_same_token(self):
        first = choose_tokens(self.logits(), params(), [torch.Generator().manual_seed(5)] * 1 + [torch.Generator().manual_seed(6)])
        second = choose_tokens(self.logits(), params(), [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
        assert first.tolist() == second.tolist()


def test_penalty_lowers_seen_tokens_whatever_their_sign():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert _penalise(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]
