"""Training and sampling prompts come out of one function, with the real bundled tokenizer."""

from __future__ import annotations

import random

import pytest

from app.domain.prompts import default_prompt_set
from worker.models import load_tokenizer, materialize_base_model
from worker.prompt_format import completion_text, encode_completion, encode_prompt, render_prompt

LABELS = ["control", "impaired"]
TRANSCRIPT = "uh the boy is um on the stool"


@pytest.fixture(scope="module")
def tokenizer(cache_dir):
    return load_tokenizer(materialize_base_model("smollm2-135m-instruct", cache_dir))


@pytest.fixture(scope="module")
def plain_tokenizer(cache_dir):
    """The same tokenizer without a chat template, as a base (non-chat) model would have."""
    tokenizer = load_tokenizer(materialize_base_model("smollm2-135m-instruct", cache_dir))
    tokenizer.chat_template = None
    return tokenizer


def prompts_for(tokenizer, label: str) -> tuple[str, str, str]:
    """(training prompt, training prompt with the neutral system turn, sampling prompt)."""
    prompt_set = default_prompt_set()
    messages = prompt_set.training_messages(label, TRANSCRIPT, random.Random(3))
    neutral = [{"role": "system", "content": prompt_set.label_prompts(label).inference_prompt}, *messages[1:-1]]
    return (
        render_prompt(tokenizer, messages[:-1]),
        render_prompt(tokenizer, neutral),
        render_prompt(tokenizer, prompt_set.inference_messages(label)),
    )


class TestChatTemplate:
    @pytest.mark.parametrize("label", LABELS)
    def test_training_prompt_with_neutral_system_equals_sampling_prompt(self, tokenizer, label):
        training, neutralised, sampling = prompts_for(tokenizer, label)
        assert neutralised == sampling
        assert training != sampling
        assert encode_prompt(tokenizer, neutralised) == encode_prompt(tokenizer, sampling)

    @pytest.mark.parametrize("label", LABELS)
    def test_label_wording_in_both_prompts(self, tokenizer, label):
        training, _, sampling = prompts_for(tokenizer, label)
        wording = default_prompt_set().label_prompts(label).wording
        assert wording in training and wording in sampling

    def test_uses_the_chatml_template(self, tokenizer):
        _, _, sampling = prompts_for(tokenizer, "control")
        assert sampling.startswith("<|im_start|>system\n")
        assert sampling.endswith("<|im_start|>assistant\n")

    def test_prompt_tokens_carry_no_extra_special_tokens(self, tokenizer):
        _, _, sampling = prompts_for(tokenizer, "control")
        ids = encode_prompt(tokenizer, sampling)
        assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
        assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3


class TestPlainTextFallback:
    @pytest.mark.parametrize("label", LABELS)
    def test_both_prompts_use_the_fallback(self, plain_tokenizer, label):
        training, neutralised, sampling = prompts_for(plain_tokenizer, label)
        for prompt in (training, sampling):
            assert prompt.startswith("### System:\n")
            assert "\n\n### User:\n" in prompt
            assert prompt.endswith("### Assistant:\n")
            assert "<|im_start|>" not in prompt
        assert neutralised == sampling

    def test_fallback_without_generation_prompt(self, plain_tokenizer):
        prompt = render_prompt(plain_tokenizer, [{"role": "user", "content": "hi"}], add_generation_prompt=False)
        assert prompt == "### User:\nhi\n\n"

    def test_unknown_role_is_refused(self, plain_tokenizer):
        with pytest.raises(ValueError, match="unknown chat role"):
            render_prompt(plain_tokenizer, [{"role": "narrator", "content": "hi"}])


class TestCompletion:
    def test_eos_is_appended(self, tokenizer):
        assert tokenizer.eos_token == "<|im_end|>"
        assert completion_text(tokenizer, TRANSCRIPT) == TRANSCRIPT + "<|im_end|>"

    def test_completion_ends_on_the_eos_id_the_sampler_stops_on(self, tokenizer, plain_tokenizer):
        for tok in (tokenizer, plain_tokenizer):
            ids = encode_completion(tok, completion_text(tok, TRANSCRIPT))
            assert ids[-1] == tok.eos_token_id
            assert ids.count(tok.eos_token_id) == 1


class TestOneRendererEverywhere:
    """ChatFormat (what the API counts with) renders as transformers does, and counts as the trainer does."""

    @pytest.mark.parametrize("label", LABELS)
    def test_renders_like_transformers_apply_chat_template(self, tokenizer, label):
        messages = default_prompt_set().training_messages(label, TRANSCRIPT, random.Random(1))
        for turns, generation_prompt in ((messages[:-1], True), (messages, False)):
            expected = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
            assert render_prompt(tokenizer, turns, add_generation_prompt=generation_prompt) == expected

    def test_api_token_counts_equal_the_trainers_example_lengths(self, tokenizer, cache_dir):
        from app.services.token_counts import load_model_tokenizer
        from tests.unit.test_example_data import read_rows
        from worker.training.hf import tokenize_examples

        light = load_model_tokenizer(materialize_base_model("smollm2-135m-instruct", cache_dir))
        rng, prompt_set = random.Random(0), default_prompt_set()
        examples = [
            prompt_set.training_messages("impaired" if row["label"] == "1" else "control", row["text"], rng)
            for row in read_rows()
        ]
        trained = [len(ids) for ids in tokenize_examples(tokenizer, examples)["input_ids"]]
        assert [light.example_length(m) for m in examples] == trained
        assert light.count(TRANSCRIPT) == len(encode_completion(tokenizer, TRANSCRIPT))
