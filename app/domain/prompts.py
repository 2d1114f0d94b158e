"""Prompt sets: one object renders both training examples and sampling prompts.

Training and sampling share the user instruction (which carries the label wording) and differ
only in the system turn: a seeded choice among the label's role variations when training, the
label's neutral prompt when sampling. Rendering to text (chat template or plain-text fallback)
happens in exactly one place, ``worker.prompt_format.render_prompt``.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any, Mapping

Message = dict[str, str]

# Every prompt is rendered into every training example and sampling request; these bounds keep a
# prompt set from making either large (format specs, which could pad to any width, are refused).
MAX_INSTRUCTION_CHARS = 4000
MAX_WORDING_CHARS = 1000
MAX_PROMPT_CHARS = 8000
MAX_TRAINING_ROLES = 100

DEFAULT_INSTRUCTION = (
    "Write the transcript of a {wording} describing the Cookie Theft picture, exactly as the "
    "participant spoke."
)

DEFAULT_WORDING = {
    "control": "healthy control participant",
    "impaired": "participant with cognitive impairment (ADRD)",
}

_CONTROL_ROLES = (
    "As a language and cognition specialist, you know how cognitively healthy older adults speak: "
    "fluent, well-formed sentences, precise words and a full account of the scene.",
    "As a speech-language pathologist, you have transcribed many healthy older speakers. Their "
    "descriptions are organised, detailed and mostly free of hesitations.",
    "As a clinical linguist, you study typical ageing speech: coherent narratives, rich "
    "vocabulary, few fillers or repetitions.",
    "As a neuropsychologist, you have recorded healthy control participants: they name the people, "
    "objects and actions in the picture clearly and in order.",
    "As a research assistant on a dementia study, you transcribe control participants, whose "
    "speech is fluent and informative with complete sentences.",
    "As a geriatrician, you know that healthy older adults describe pictures with confident, "
    "specific words and connect the events logically.",
    "As a discourse analyst, you characterise healthy speech by its cohesion, its specific nouns "
    "and its smooth flow without long pauses.",
    "As a speech scientist, you note that cognitively healthy speakers rarely use fillers, rarely "
    "repeat words and cover the whole scene.",
    "As a memory-clinic clinician, you see healthy volunteers give efficient, accurate and "
    "well-structured picture descriptions.",
    "As a corpus linguist, you annotate control transcripts: fluent syntax, varied vocabulary, "
    "and detailed content units.",
)

_IMPAIRED_ROLES = (
    "As a language and cognition specialist, you know how people with Alzheimer's disease and "
    "related dementias speak: hesitant, with fillers like uh and um, repetitions and vague words.",
    "As a speech-language pathologist, you have transcribed many speakers with dementia. Their "
    "descriptions are fragmented, with pauses, false starts and word-finding problems.",
    "As a clinical linguist, you study speech in cognitive impairment: empty words such as thing "
    "and stuff, repeated words, and incomplete sentences.",
    "As a neuropsychologist, you have recorded participants with probable Alzheimer's disease: "
    "they miss parts of the scene, lose track and repeat themselves.",
    "As a research assistant on a dementia study, you transcribe impaired participants, whose "
    "speech has many fillers, long pauses and self-corrections.",
    "As a geriatrician, you know that people with dementia describe pictures with vague, "
    "hesitant words and often drift off topic.",
    "As a discourse analyst, you characterise impaired speech by weak cohesion, pronouns "
    "without referents, fragments and frequent hesitations.",
    "As a speech scientist, you note that cognitively impaired speakers use many fillers (uh, "
    "um), repeat words and leave sentences unfinished.",
    "As a memory-clinic clinician, you see patients with dementia give short, halting and "
    "repetitive picture descriptions with few details.",
    "As a corpus linguist, you annotate ADRD transcripts: disfluencies, filled pauses, "
    "repetitions, and reduced information content.",
)

DEFAULT_NEUTRAL = {
    "control": "You transcribe speech from a picture-description task. The speaker is a healthy "
    "control participant.",
    "impaired": "You transcribe speech from a picture-description task. The speaker is a "
    "participant with cognitive impairment (ADRD).",
}


@dataclass(frozen=True)
class LabelPrompts:
    """How one label is worded, the training role variations, and the neutral inference prompt."""

    wording: str
    training_roles: tuple[str, ...]
    inference_prompt: str

    def __post_init__(self) -> None:
        if not self.wording.strip():
            raise ValueError("label wording must not be empty")
        if not self.training_roles or any(not r.strip() for r in self.training_roles):
            raise ValueError("at least one non-empty training role is required")
        if not self.inference_prompt.strip():
            raise ValueError("the neutral inference prompt must not be empty")
        _check_length("the label wording", self.wording, MAX_WORDING_CHARS)
        _check_length("the neutral inference prompt", self.inference_prompt, MAX_PROMPT_CHARS)
        if len(self.training_roles) > MAX_TRAINING_ROLES:
            raise ValueError(f"{len(self.training_roles)} training roles; at most {MAX_TRAINING_ROLES} are allowed")
        for role in self.training_roles:
            _check_length("a training role", role, MAX_PROMPT_CHARS)


@dataclass(frozen=True)
class PromptSet:
    """Per-label prompts plus the one instruction template shared by training and sampling."""

    labels: Mapping[str, LabelPrompts]
    instruction: str = DEFAULT_INSTRUCTION
    name: str = "default"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_length("the instruction", self.instruction, MAX_INSTRUCTION_CHARS)
        _check_fields(self.instruction)
        if "{wording}" not in self.instruction:
            raise ValueError("the instruction must contain the placeholder {wording}")
        for label in self.labels:
            _check_length(f"the instruction rendered for label '{label}'", self.instruction_for(label),
                          MAX_PROMPT_CHARS)

    def label_prompts(self, label: str) -> LabelPrompts:
        """The prompts of one label; KeyError names the labels this set knows."""
        try:
            return self.labels[label]
        except KeyError:
            known = ", ".join(sorted(self.labels))
            raise KeyError(f"prompt set '{self.name}' has no label '{label}' (known: {known})")

    def instruction_for(self, label: str) -> str:
        """The user turn for a label: identical in training and sampling."""
        return self.instruction.format(wording=self.label_prompts(label).wording)

    def training_messages(self, label: str, transcript: str, rng: random.Random) -> list[Message]:
        """System (a seeded role variation), user instruction, assistant = the real transcript."""
        prompts = self.label_prompts(label)
        return [
            {"role": "system", "content": rng.choice(prompts.training_roles)},
            {"role": "user", "content": self.instruction_for(label)},
            {"role": "assistant", "content": transcript},
        ]

    def inference_messages(self, label: str) -> list[Message]:
        """System = the label's neutral prompt, user = the same instruction as in training."""
        return [
            {"role": "system", "content": self.label_prompts(label).inference_prompt},
            {"role": "user", "content": self.instruction_for(label)},
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the database."""
        return {
            "name": self.name,
            "instruction": self.instruction,
            "labels": {
                label: {
                    "wording": p.wording,
                    "training_roles": list(p.training_roles),
                    "inference_prompt": p.inference_prompt,
                }
                for label, p in self.labels.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptSet":
        """Inverse of ``to_dict``."""
        return cls(
            name=data.get("name", "default"),
            instruction=data.get("instruction", DEFAULT_INSTRUCTION),
            labels={
                label: LabelPrompts(
                    wording=p["wording"],
                    training_roles=tuple(p["training_roles"]),
                    inference_prompt=p["inference_prompt"],
                )
                for label, p in data["labels"].items()
            },
        )


def _check_length(what: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise ValueError(f"{what} has {len(text)} characters; at most {limit} are allowed")


def _check_fields(instruction: str) -> None:
    """Only plain {wording} placeholders: no other field, index, attribute, conversion or format spec
    (a spec such as {wording:>1000000000} would pad the prompt to a gigabyte)."""
    try:
        fields = [(name, spec, conversion) for _text, name, spec, conversion in string.Formatter().parse(instruction)
                  if name is not None]
    except ValueError as exc:
        raise ValueError(
            f"the instruction is not a valid template (write literal braces as {{{{ and }}}}): {exc}"
        ) from None
    for name, spec, conversion in fields:
        if name != "wording" or spec or conversion:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"the instruction's field {written[:80]} is refused: only the plain placeholder {{wording}} is "
                "allowed, without conversions or format specs (write literal braces as {{ and }})"
            )


def default_prompt_set() -> PromptSet:
    """The study's design: 10 role-based training prompts per label and a neutral prompt each."""
    return PromptSet(
        name="default",
        labels={
            "control": LabelPrompts(DEFAULT_WORDING["control"], _CONTROL_ROLES, DEFAULT_NEUTRAL["control"]),
            "impaired": LabelPrompts(
                DEFAULT_WORDING["impaired"], _IMPAIRED_ROLES, DEFAULT_NEUTRAL["impaired"]
            ),
        },
    )
