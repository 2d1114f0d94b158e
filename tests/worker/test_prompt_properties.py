"""Properties of training examples with the real bundled tokenizer, on generated transcripts: the
completion decodes back to the transcript and ends on the one eos the sampler stops on, the chat
template keeps every turn's text, and the API's token count is the trainer's. Deterministic and
bounded (SYNTHAUG_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from worker.models import load_tokenizer, materialize_base_model
from worker.prompt_format import completion_text, encode_completion, encode_prompt, render_prompt

EXAMPLES = int(os.environ.get("SYNTHAUG_FUZZ_EXAMPLES", "150"))
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Left out: unassigned code points (Cn) and control characters (Cc; tab and line ends come from TRICKY).
# The bundled tokenizer has no byte tokens for 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xf1 and 0xf2 (the
# lead bytes of the unassigned planes 4-11): such characters are dropped when a transcript is encoded.
CHARS = st.characters(blacklist_categories=("Cs", "Cn", "Cc"))
# Special-token text and what byte-level BPE and decoding clean-up could change: spaces before
# punctuation, combining marks, invisible characters, line ends.
TRICKY = st.sampled_from(["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|im_start|>assistant\n", " .", " ,",
                          " 's", " n't", "  ", "\n", "\r\n", "\t", "\u00a0", "\u200b", "e\u0301", "😀", "uh", "..."])
TRANSCRIPT = st.lists(st.one_of(CHARS, TRICKY), min_size=1, max_size=40).map("".join)
PROMPT_TEXT = st.lists(st.one_of(CHARS, st.sampled_from([" ", "\n", "{", "}", "%", "###"])), max_size=30).map("".join)


@pytest.fixture(scope="module")
def tokenizers(cache_dir):
    """The bundled tokenizer with its chat template, and without one (the plain-text fallback)."""
    with_template = load_tokenizer(materialize_base_model("smollm2-135m-instruct", cache_dir))
    plain = load_tokenizer(materialize_base_model("smollm2-135m-instruct", cache_dir))
    plain.chat_template = None
    return {"chat template": with_template, "plain text": plain}


@pytest.fixture(scope="module")
def light(cache_dir):
    """What the API counts tokens with (the tokenizers package, no torch)."""
    from app.services.token_counts import load_model_tokenizer

    return load_model_tokenizer(materialize_base_model("smollm2-135m-instruct", cache_dir))


def training_turns(system: str, user: str, transcript: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user},
            {"role": "assistant", "content": transcript}]


@pytest.mark.parametrize("kind", ["chat template", "plain text"])
class TestTrainingExample:
    @BOUNDED
    @given(transcript=TRANSCRIPT)
    @example(transcript="uh the boy <|im_end|> um falls")
    def test_completion_decodes_to_the_transcript_and_ends_on_one_eos(self, tokenizers, kind, transcript):
        tokenizer = tokenizers[kind]
        ids = encode_completion(tokenizer, completion_text(tokenizer, transcript))
        assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
        special = set(tokenizer.all_special_ids)
        assert not special & set(ids[:-1]), "the transcript's text became special tokens"
        assert tokenizer.decode(ids, skip_special_tokens=True) == transcript

    @BOUNDED
    @given(system=PROMPT_TEXT, user=PROMPT_TEXT, transcript=TRANSCRIPT)
    def test_rendered_example_is_the_prompt_then_the_transcript(self, tokenizers, kind, system, user, transcript):
        tokenizer = tokenizers[kind]
        messages = training_turns(system, user, transcript)
        prompt = render_prompt(tokenizer, messages[:-1])
        whole = render_prompt(tokenizer, messages, add_generation_prompt=False)
        assert whole.startswith(prompt) and whole[len(prompt):].startswith(transcript)
        position = 0
        for message in messages[:-1]:
            position = prompt.index(message["content"], position) + len(message["content"])



class TestTokenCounts:
    @BOUNDED
    @given(system=PROMPT_TEXT, user=PROMPT_TEXT, transcript=TRANSCRIPT)
    @example(system="s", user="u", transcript="uh the boy <|im_end|> um falls")
    def test_api_token_count_is_the_trainers(self, tokenizers, light, system, user, transcript):
        tokenizer = tokenizers["chat template"]
        messages = training_turns(system, user, transcript)
        prompt = encode_prompt(tokenizer, render_prompt(tokenizer, messages[:-1]))
        completion = encode_completion(tokenizer, completion_text(tokenizer, transcript))
        assert light.example_length(messages) == len(prompt) + len(completion)
        assert light.count(transcript) == len(completion) - 1
