"""Properties of prompt sets and the plain-text chat rendering, on generated text: the instruction keeps
its literal text and the wording intact, a prompt set survives storage, and a rendered training example
is its rendered prompt followed by the transcript. Deterministic and bounded (SYNTHAUG_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings, strategies as st

from app.domain.chat_format import ChatFormat
from app.domain.prompts import LabelPrompts, PromptSet

EXAMPLES = int(os.environ.get("SYNTHAUG_FUZZ_EXAMPLES", "150"))
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

CHARS = st.characters(blacklist_categories=("Cs",))
TRICKY = st.sampled_from(["{", "}", "{{", "}}", "{wording}", "{0}", "{wording:>9}", "%s", "\n", "### User:", "😀"])
TEXT = st.lists(st.one_of(CHARS, TRICKY), max_size=40).map("".join)
NONBLANK = TEXT.filter(lambda s: s.strip())


def escaped(literal: str) -> str:
    """``literal`` as template text: braces doubled, so none is a field."""
    return literal.replace("{", "{{").replace("}", "}}")


class TestInstruction:
    @BOUNDED
    @given(literals=st.lists(TEXT, min_size=2, max_size=4), wording=NONBLANK)
    def test_literal_text_and_wording_come_through_unchanged(self, literals, wording):
        instruction = "{wording}".join(escaped(part) for part in literals)
        prompt_set = PromptSet(labels={"control": LabelPrompts(wording, ("role",), "neutral")}, instruction=instruction)
        assert prompt_set.instruction_for("control") == wording.join(literals)

    @BOUNDED
    @given(literals=st.lists(TEXT, min_size=2, max_size=3), wordings=st.tuples(NONBLANK, NONBLANK),
           roles=st.lists(NONBLANK, min_size=1, max_size=4), neutral=NONBLANK, transcript=TEXT)
    def test_a_stored_prompt_set_renders_the_same_messages(self, literals, wordings, roles, neutral, transcript):
        prompt_set = PromptSet(
            labels={label: LabelPrompts(wording, tuple(roles), neutral)
                    for label, wording in zip(("control", "impaired"), wordings)},
            instruction="{wording}".join(escaped(part) for part in literals),
        )
        stored = PromptSet.from_dict(prompt_set.to_dict())
        for label in ("control", "impaired"):
            messages = stored.training_messages(label, transcript, random.Random(7))
            assert messages == prompt_set.training_messages(label, transcript, random.Random(7))
            assert messages[-1] == {"role": "assistant", "content": transcript}
            assert messages[0]["content"] in roles
            assert stored.inference_messages(label) == [{"role": "system", "content": neutral},
                                                        messages[1]]


class TestPlainTextRendering:
    @BOUNDED
    @given(system=TEXT, user=TEXT, transcript=TEXT)
    def test_an_example_is_its_prompt_then_the_transcript(self, system, user, transcript):
        chat = ChatFormat(template=None, eos_token="</s>")
        prompt = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        rendered_prompt = chat.render(prompt)
        rendered = chat.render([*prompt, {"role": "assistant", "content": transcript}], add_generation_prompt=False)
        assert rendered.startswith(rendered_prompt)
        assert rendered[len(rendered_prompt):] == transcript + "\n\n"
        assert rendered_prompt.index(system) < rendered_prompt.index(user, len("### System:\n") + len(system))
        assert chat.completion(transcript) == transcript + "</s>"
