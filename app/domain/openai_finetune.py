"""OpenAI fine-tunes before anything is uploaded: hyperparameters, data checks, token and cost estimates.

The checks are the OpenAI cookbook's (``Chat_finetuning_data_prep.ipynb``) with OpenAI's per-model
limit on a training example's tokens. Counting tokens needs tiktoken, which stays out of this module:
``preflight`` takes the counter as a callable (``app.services.openai_tokens.ChatTokenCounter.count``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Split = Literal["train", "validation"]

# Tokens one training example may hold, from OpenAI's fine-tuning guide. OpenAI cuts longer examples
# from the end, which would drop the transcript's ending, so they are refused before upload.
OPENAI_EXAMPLE_TOKEN_LIMITS: dict[str, int] = {
    "gpt-4o-2024-08-06": 65_536,
    "gpt-4o-mini-2024-07-18": 65_536,
    # OpenAI publishes no figure for gpt-4.1; it serves a longer context than gpt-4o, so gpt-4o's holds.
    "gpt-4.1-2025-04-14": 65_536,
    "gpt-4.1-mini-2025-04-14": 65_536,
    "gpt-4.1-nano-2025-04-14": 65_536,
    "gpt-3.5-turbo-0125": 16_385,
    "gpt-3.5-turbo-1106": 16_385,
    "gpt-3.5-turbo-0613": 4_096,
}
# A model allowed by settings but absent above gets the smallest current limit: refusing an example
# OpenAI would have kept is visible and fixable, a silently truncated transcript is not.
DEFAULT_EXAMPLE_TOKEN_LIMIT = 16_385

MIN_TRAIN_EXAMPLES = 10  # OpenAI refuses fewer
RECOMMENDED_TRAIN_EXAMPLES = 50  # the guide's suggested starting point
NEAR_LIMIT_SHARE = 0.9  # counts are estimates ("not exact!" says the cookbook), so warn this close
LISTED_ISSUES = 100  # errors kept in to_dict(); the rest are counted by code

MESSAGE_KEYS = ("role", "content", "name", "function_call", "weight")
ROLES = ("system", "user", "assistant", "function")

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
JOB_ID_METADATA_KEY = "synthaug_job_id"
RESERVED_METADATA_PREFIX = "synthaug_"
_SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")

Auto = Literal["auto"]


def base_model_of(model: str) -> str:
    """The base snapshot of a model name: ``ft:gpt-4o-mini-2024-07-18:org:sfx:id`` → ``gpt-4o-mini-2024-07-18``."""
    return model.split(":")[1] if model.startswith("ft:") else model


def example_token_limit(model: str) -> int:
    """Tokens one training example may hold for this base model (or a fine-tune of it)."""
    return OPENAI_EXAMPLE_TOKEN_LIMITS.get(base_model_of(model), DEFAULT_EXAMPLE_TOKEN_LIMIT)


def auto_epochs(n_train: int) -> int:
    """Epochs OpenAI's ``"auto"`` is expected to choose (the cookbook's estimate, not a contract)."""
    target, min_examples, max_examples, min_epochs, max_epochs = 3, 100, 25_000, 1, 25
    if n_train <= 0:
        return target
    if n_train * target < min_examples:
        return min(max_epochs, min_examples // n_train)
    if n_train * target > max_examples:
        return max(min_epochs, max_examples // n_train)
    return target


class OpenAIHyperparameters(BaseModel):
    """Hyperparameters of an OpenAI supervised fine-tune; ``"auto"`` lets OpenAI choose."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Annotated[int, Field(ge=1, le=50, strict=True)] | Auto = Field(
        "auto", description="Passes over the train split, 1–50, or auto."
    )
    batch_size: Annotated[int, Field(ge=1, le=256, strict=True)] | Auto = Field(
        "auto", description="Examples per batch, 1–256, or auto."
    )
    learning_rate_multiplier: Annotated[float, Field(gt=0.0, le=10.0, strict=True)] | Auto = Field(
        "auto",
        description="Scale of OpenAI's learning rate, above 0 and at most 10 (a bound of this service: "
        "OpenAI's spec states none), or auto.",
    )
    suffix: str | None = Field(
        None,
        description="Up to 64 letters, digits, '-' or '_', added to the fine-tuned model's name "
        "(ft:<base>:<org>:<suffix>:<id>).",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description=f"Up to {METADATA_MAX_KEYS - 1} key-value pairs stored on the OpenAI job (keys ≤ "
        f"{METADATA_MAX_KEY_CHARS}, values ≤ {METADATA_MAX_VALUE_CHARS} characters); keys starting "
        f"{RESERVED_METADATA_PREFIX!r} are the service's.",
    )

    @field_validator("suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        # OpenAI documents only the length; ':' separates the parts of the model id, and other
        # characters have no documented fate, so only these are accepted.
        if value is not None and not _SUFFIX.fullmatch(value):
            raise ValueError("suffix must be 1 to 64 characters, each a letter, a digit, '-' or '_'")
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        # One of OpenAI's 16 keys is the job id this service finds a retried job by.
        if len(value) > METADATA_MAX_KEYS - 1:
            raise ValueError(f"metadata holds at most {METADATA_MAX_KEYS - 1} keys (the service adds "
                             f"{JOB_ID_METADATA_KEY!r} as the {METADATA_MAX_KEYS}th)")
        for key, item in value.items():
            if not key or len(key) > METADATA_MAX_KEY_CHARS:
                raise ValueError(f"metadata key {key[:80]!r} must be 1 to {METADATA_MAX_KEY_CHARS} characters")
            if key.startswith(RESERVED_METADATA_PREFIX):
                raise ValueError(f"metadata key {key!r} is reserved: keys starting "
                                 f"{RESERVED_METADATA_PREFIX!r} are set by the service")
            if len(item) > METADATA_MAX_VALUE_CHARS:
                raise ValueError(f"metadata value of {key!r} is {len(item)} characters; at most "
                                 f"{METADATA_MAX_VALUE_CHARS} are allowed")
        return value

    def supervised_method(self) -> dict[str, Any]:
        """The ``method`` argument of ``fine_tuning.jobs.create``, every hyperparameter spelled out."""
        hyperparameters = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
        return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}

    def job_metadata(self, job_id: str) -> dict[str, str]:
        """The ``metadata`` argument: the user's pairs plus this service's job id."""
        return {**self.metadata, JOB_ID_METADATA_KEY: job_id}

    def job_params(self, job_id: str) -> dict[str, Any]:
        """Arguments of ``fine_tuning.jobs.create`` besides model, files and the job's seed."""
        params: dict[str, Any] = {"method": self.supervised_method(), "metadata": self.job_metadata(job_id)}
        if self.suffix is not None:
            params["suffix"] = self.suffix
        return params


@dataclass(frozen=True)
class ExampleTokens:
    """Estimated tokens of one chat example: all of it, and its assistant messages' contents."""

    total: int
    assistant: int


@dataclass(frozen=True)
class PreflightIssue:
    """One problem in the data; errors stop the upload, warnings don't. ``example`` is 1-based."""

    level: Literal["error", "warning"]
    code: str
    message: str
    split: Split | None = None
    example: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class SplitStats:
    """Token statistics of the examples of one split that could be counted."""

    examples: int
    counted: int  # examples well-formed enough to count
    total_tokens: int
    max_tokens: int
    mean_tokens: float
    assistant_tokens: int
    billed_tokens: int  # per epoch: each example counted up to the model's limit


@dataclass
class PreflightReport:
    """What ``preflight`` found about a train and a validation split."""

    model: str
    token_limit: int
    n_epochs: int  # the requested number, or the estimate of "auto"
    epochs_estimated: bool
    train: SplitStats
    validation: SplitStats
    errors: list[PreflightIssue] = field(default_factory=list)
    warnings: list[PreflightIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing blocks the fine-tune."""
        return not self.errors

    @property
    def billed_tokens_estimate(self) -> int:
        """Training tokens OpenAI is expected to bill: epochs × train tokens (validation is free)."""
        return self.n_epochs * self.train.billed_tokens

    def refusal(self, shown: int = 3) -> str:
        """One sentence naming the first errors, for a 422."""
        if not self.errors:
            raise ValueError("the report has no errors to refuse with")
        first = "; ".join(issue.message for issue in self.errors[:shown])
        more = len(self.errors) - shown
        tail = f"; and {more} more error{'s' if more > 1 else ''}" if more > 0 else ""
        return f"The training data cannot be sent to OpenAI for {self.model}: {first}{tail}."

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form; errors past the first hundred are only counted."""
        return {
            "ok": self.ok,
            "model": self.model,
            "token_limit": self.token_limit,
            "n_epochs": self.n_epochs,
            "epochs_estimated": self.epochs_estimated,
            "billed_tokens_estimate": self.billed_tokens_estimate,
            "stats": {"train": asdict(self.train), "validation": asdict(self.validation)},
            "errors": [issue.to_dict() for issue in self.errors[:LISTED_ISSUES]],
            "errors_total": len(self.errors),
            "error_counts": dict(Counter(issue.code for issue in self.errors)),
            "warnings": [issue.to_dict() for issue in self.warnings],
        }


def format_errors(example: Any) -> tuple[list[tuple[str, str]], bool]:
    """The cookbook's format checks on one example: (code, detail) pairs, and whether it can be counted."""
    if not isinstance(example, dict):
        return [("data_type", f"is a {type(example).__name__}, not a JSON object")], False
    messages = example.get("messages")
    if not messages or not isinstance(messages, list):
        return [("missing_messages_list", "has no non-empty 'messages' list")], False
    found: list[tuple[str, str]] = []
    for number, message in enumerate(messages, start=1):
        found.extend(_message_errors(number, message))
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        found.append(("example_missing_assistant_message", "has no assistant message"))
    return found, True


def _message_errors(number: int, message: Any) -> list[tuple[str, str]]:
    if not isinstance(message, dict):
        return [("data_type", f"message {number} is a {type(message).__name__}, not a JSON object")]
    found: list[tuple[str, str]] = []
    missing = [key for key in ("role", "content") if key not in message]
    if missing:
        found.append(("message_missing_key", f"message {number} has no {' or '.join(map(repr, missing))}"))
    unknown = sorted(str(key) for key in message if key not in MESSAGE_KEYS)
    if unknown:
        found.append(("message_unrecognized_key",
                      f"message {number} has unrecognized key(s) {', '.join(map(repr, unknown))}"))
    role = message.get("role")
    if "role" in message and role not in ROLES:
        found.append(("unrecognized_role", f"message {number} has role {role!r}, not one of {', '.join(ROLES)}"))
    content = message.get("content")
    has_text = isinstance(content, str) and content != ""
    if "content" in message and not has_text and not (content is None and message.get("function_call")):
        found.append(("missing_content", f"message {number} has no text content"))
    weight = message.get("weight")
    if "weight" in message and (isinstance(weight, bool) or weight not in (0, 1) or role != "assistant"):
        found.append(("invalid_weight",
                      f"message {number} has weight {weight!r}; only assistant messages may carry one, 0 or 1"))
    return found


def preflight(
    train: list[dict],
    validation: list[dict],
    *,
    model: str,
    n_epochs: int | Literal["auto"],
    count: Callable[[dict], ExampleTokens],
    token_limit: int | None = None,
) -> PreflightReport:
    """Check the examples OpenAI will get (as written to JSONL) and estimate tokens and billing."""
    limit = token_limit if token_limit is not None else example_token_limit(model)
    errors: list[PreflightIssue] = []
    warnings: list[PreflightIssue] = []
    stats = {}
    for split, examples in (("train", train), ("validation", validation)):
        split_errors, split_warnings, stats[split] = _check_split(split, examples, limit, count)
        errors.extend(split_errors)
        warnings.extend(split_warnings)
    if len(train) < MIN_TRAIN_EXAMPLES:
        errors.append(PreflightIssue("error", "too_few_examples",
                                     f"the train split has {len(train)} example{'s' if len(train) != 1 else ''}; "
                                     f"OpenAI needs at least {MIN_TRAIN_EXAMPLES}", split="train"))
    elif len(train) < RECOMMENDED_TRAIN_EXAMPLES:
        warnings.append(PreflightIssue("warning", "few_examples",
                                       f"the train split has {len(train)} examples; OpenAI suggests starting "
                                       f"with at least {RECOMMENDED_TRAIN_EXAMPLES}", split="train"))
    if not validation:
        warnings.append(PreflightIssue("warning", "missing_validation_split",
                                       "there is no validation split: OpenAI will report no validation loss",
                                       split="validation"))
    epochs = auto_epochs(len(train)) if n_epochs == "auto" else n_epochs
    return PreflightReport(model=model, token_limit=limit, n_epochs=epochs, epochs_estimated=n_epochs == "auto",
                           train=stats["train"], validation=stats["validation"], errors=errors, warnings=warnings)


def _check_split(
    split: Split, examples: list[dict], limit: int, count: Callable[[dict], ExampleTokens]
) -> tuple[list[PreflightIssue], list[PreflightIssue], SplitStats]:
    errors: list[PreflightIssue] = []
    no_role: dict[str, list[int]] = {"system": [], "user": []}
    near: list[int] = []
    counted: list[ExampleTokens] = []
    for number, example in enumerate(examples, start=1):
        where = f"{split} example {number}"
        found, countable = format_errors(example)
        errors.extend(PreflightIssue("error", code, f"{where} {detail}", split, number) for code, detail in found)
        if not countable:
            continue
        roles = {m.get("role") for m in example["messages"] if isinstance(m, dict)}
        for role, numbers in no_role.items():
            if role not in roles:
                numbers.append(number)
        tokens = count(example)
        counted.append(tokens)
        if tokens.total > limit:
            errors.append(PreflightIssue("error", "too_long",
                                         f"{where} has about {tokens.total} tokens, over the model's limit of "
                                         f"{limit} per example", split, number))
        elif tokens.total >= NEAR_LIMIT_SHARE * limit:
            near.append(number)
    warnings = [_grouped_warning(f"missing_{role}_message", split, numbers, f"no {role} message")
                for role, numbers in no_role.items() if numbers]
    if near:
        warnings.append(_grouped_warning("near_token_limit", split, near,
                                         f"at least {NEAR_LIMIT_SHARE:.0%} of the {limit}-token limit "
                                         "(counts are estimates)"))
    return errors, warnings, _split_stats(len(examples), counted, limit)


def _grouped_warning(code: str, split: Split, numbers: list[int], what: str) -> PreflightIssue:
    shown = ", ".join(map(str, numbers[:10])) + (", …" if len(numbers) > 10 else "")
    noun = "example has" if len(numbers) == 1 else "examples have"
    return PreflightIssue("warning", code, f"{len(numbers)} {split} {noun} {what} (examples {shown})", split)


def _split_stats(examples: int, counted: list[ExampleTokens], limit: int) -> SplitStats:
    totals = [tokens.total for tokens in counted]
    return SplitStats(
        examples=examples,
        counted=len(counted),
        total_tokens=sum(totals),
        max_tokens=max(totals, default=0),
        mean_tokens=round(sum(totals) / len(totals), 1) if totals else 0.0,
        assistant_tokens=sum(tokens.assistant for tokens in counted),
        billed_tokens=sum(min(limit, total) for total in totals),
    )


def to_jsonl(examples: Iterable[dict]) -> bytes:
    """One JSON object per line, UTF-8 (non-ASCII kept as is), each line ending in a newline."""
    return "".join(json.dumps(example, ensure_ascii=False) + "\n" for example in examples).encode("utf-8")
