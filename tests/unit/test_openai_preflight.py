import json

import pytest
from pydantic import ValidationError

from app.domain.openai_finetune import (
    DEFAULT_EXAMPLE_TOKEN_LIMIT,
    ExampleTokens,
    OpenAIHyperparameters,
    auto_epochs,
    base_model_of,
    example_token_limit,
    preflight,
    to_jsonl,
)

MODEL = "gpt-4o-mini-2024-07-18"


def make_example(transcript="I see a boy on a stool.", *, system=True, user=True):
    messages = [{"role": "system", "content": "You are a participant."}] if system else []
    if user:
        messages.append({"role": "user", "content": "Describe the picture."})
    messages.append({"role": "assistant", "content": transcript})
    return {"messages": messages}


def make_examples(n, **kwargs):
    return [make_example(f"transcript {i}", **kwargs) for i in range(n)]


def count_words(example):
    """A stand-in counter: one token per word of every message, assistant words apart."""
    total = assistant = 0
    for message in example["messages"]:
        words = len(str(message.get("content") or "").split()) if isinstance(message, dict) else 0
        total += words
        if isinstance(message, dict) and message.get("role") == "assistant":
            assistant += words
    return ExampleTokens(total=total, assistant=assistant)


def run(train, validation=None, *, n_epochs="auto", token_limit=None, model=MODEL):
    validation = make_examples(3) if validation is None else validation
    return preflight(train, validation, model=model, n_epochs=n_epochs, count=count_words, token_limit=token_limit)


def codes(report):
    return [(issue.code, issue.split, issue.example) for issue in report.errors]


class TestFormatErrors:
    @pytest.mark.parametrize(
        ("bad", "code", "words"),
        [
            (["not", "a", "dict"], "data_type", "is a list"),
            ({"prompt": "x", "completion": "y"}, "missing_messages_list", "'messages'"),
            ({"messages": []}, "missing_messages_list", "'messages'"),
            ({"messages": "hello"}, "missing_messages_list", "'messages'"),
            ({"messages": [{"role": "assistant", "content": "x"}, "text"]}, "data_type", "message 2 is a str"),
            ({"messages": [{"role": "assistant"}]}, "message_missing_key", "message 1 has no 'content'"),
            ({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}, "message_missing_key",
             "message 1 has no 'role'"),
            ({"messages": [{"role": "assistant", "content": "y", "label": "control"}]}, "message_unrecognized_key",
             "message 1 has unrecognized key(s) 'label'"),
            ({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
             "unrecognized_role", "message 1 has role 'bot'"),
            ({"messages": [{"role": "assistant", "content": ""}]}, "missing_content", "message 1 has no text"),
            ({"messages": [{"role": "assistant", "content": 42}]}, "missing_content", "message 1 has no text"),
            ({"messages": [{"role": "user", "content": "x"}]}, "example_missing_assistant_message",
             "has no assistant message"),
            ({"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]},
             "invalid_weight", "message 1 has weight 1"),
            ({"messages": [{"role": "assistant", "content": "y", "weight": 2}]}, "invalid_weight",
             "message 1 has weight 2"),
        ],
    )
    def test_each_check_names_split_example_and_problem(self, bad, code, words):
        train = make_examples(12)
        train.insert(2, bad)
        report = run(train)
        assert not report.ok
        assert codes(report) == [(code, "train", 3)]
        assert report.errors[0].message.startswith("train example 3 ")
        assert words in report.errors[0].message

    def test_validation_examples_are_checked_too(self):
        validation = [make_example(), {"messages": [{"role": "user", "content": "x"}]}]
        report = run(make_examples(10), validation)
        assert codes(report) == [("example_missing_assistant_message", "validation", 2)]
        assert report.errors[0].message.startswith("validation example 2 ")

    def test_a_message_can_have_several_problems(self):
        train = [{"messages": [{"role": "bot", "content": "", "tone": "calm"}]}] + make_examples(10)
        assert [code for code, _, _ in codes(run(train))] == [
            "message_unrecognized_key", "unrecognized_role", "missing_content",
            "example_missing_assistant_message",
        ]

    def test_a_function_call_may_stand_for_content(self):
        call = {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}}
        train = [{"messages": [{"role": "user", "content": "x"}, call]}] + make_examples(10)
        assert run(train).ok

    def test_well_formed_data_passes(self):
        report = run(make_examples(10))
        assert report.ok and report.errors == []


class TestExampleCount:
    def test_nine_train_examples_are_too_few(self):
        report = run(make_examples(9))
        assert codes(report) == [("too_few_examples", "train", None)]
        assert "9 examples" in report.errors[0].message and "at least 10" in report.errors[0].message

    def test_ten_are_enough_with_a_warning_below_fifty(self):
        report = run(make_examples(10))
        assert report.ok
        assert [w.code for w in report.warnings] == ["few_examples"]

    def test_fifty_draw_no_warning(self):
        assert run(make_examples(50)).warnings == []

    def test_a_missing_validation_split_is_a_warning(self):
        report = run(make_examples(50), [])
        assert report.ok
        assert [w.code for w in report.warnings] == ["missing_validation_split"]


class TestTokenLimit:
    def test_an_example_over_the_limit_is_refused_with_its_count(self):
        train = make_examples(10)  # system 4 + user 3 + "transcript i" 2 = 9 words each
        train[4] = make_example("one two three four five six")  # 4 + 3 + 6 = 13
        report = run(train, token_limit=12)
        assert codes(report) == [("too_long", "train", 5)]
        assert report.errors[0].message == (
            "train example 5 has about 13 tokens, over the model's limit of 12 per example"
        )

    def test_an_example_at_the_limit_passes_with_a_warning(self):
        train = make_examples(50)
        report = run(train, token_limit=9)
        assert report.ok
        near = [w for w in report.warnings if w.code == "near_token_limit"]
        assert len(near) == 2  # one per split
        assert near[0].message.startswith("50 train examples have at least 90% of the 9-token limit")

    def test_limits_by_model(self):
        assert example_token_limit("gpt-4o-mini-2024-07-18") == 65_536
        assert example_token_limit("gpt-4.1-nano-2025-04-14") == 65_536
        assert example_token_limit("gpt-3.5-turbo-0613") == 4_096
        assert example_token_limit("ft:gpt-3.5-turbo-0125:org:sfx:id") == 16_385
        assert example_token_limit("gpt-4o-2099-01-01") == DEFAULT_EXAMPLE_TOKEN_LIMIT == 16_385

    def test_the_model_limit_applies_without_an_override(self):
        train = make_examples(10)
        train[0] = make_example(" ".join(["w"] * 4_090))
        assert codes(run(train, model="gpt-3.5-turbo-0613")) == [("too_long", "train", 1)]
        assert run(train, model=MODEL).ok

    def test_base_model_of_a_fine_tune(self):
        assert base_model_of("ft:gpt-4o-mini-2024-07-18:my-org:custom-suffix:7q8mpxmy") == "gpt-4o-mini-2024-07-18"
        assert base_model_of("gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"


class TestWarningsAndStats:
    def test_missing_system_and_user_messages_are_counted(self):
        train = make_examples(48) + [make_example(system=False), make_example(system=False, user=False)]
        report = run(train)
        assert report.ok
        by_code = {w.code: w.message for w in report.warnings}
        assert by_code["missing_system_message"] == "2 train examples have no system message (examples 49, 50)"
        assert by_code["missing_user_message"] == "1 train example has no user message (examples 50)"

    def test_stats_and_billed_estimate(self):
        train = make_examples(10)  # 9 words each
        train[0] = make_example("one two three four five six")  # 13 words, 6 of them the assistant's
        report = run(train, [make_example("a b c")], n_epochs=2, token_limit=20)
        assert report.train.examples == 10 and report.train.counted == 10
        assert report.train.total_tokens == 9 * 9 + 13
        assert report.train.max_tokens == 13
        assert report.train.mean_tokens == 9.4
        assert report.train.assistant_tokens == 9 * 2 + 6
        assert report.validation.total_tokens == 10
        assert report.n_epochs == 2 and not report.epochs_estimated
        assert report.billed_tokens_estimate == 2 * 94

    def test_billed_estimate_counts_over_long_examples_up_to_the_limit_and_auto_epochs(self):
        train = make_examples(10)  # auto: 10 examples → 100 // 10 = 10 epochs
        train[0] = make_example("one two three four five six")  # 13 > 12 counts as 12
        report = run(train, token_limit=12)
        assert report.n_epochs == 10 and report.epochs_estimated
        assert report.billed_tokens_estimate == 10 * (9 * 9 + 12)

    def test_broken_examples_are_not_counted(self):
        report = run(["junk"] + make_examples(10))
        assert report.train.examples == 11 and report.train.counted == 10

    @pytest.mark.parametrize(("n", "epochs"), [(1, 25), (5, 20), (10, 10), (34, 3), (1000, 3), (10_000, 2)])
    def test_auto_epochs_follows_the_cookbook(self, n, epochs):
        assert auto_epochs(n) == epochs


class TestRefusalAndDict:
    def test_refusal_names_the_first_errors(self):
        train = [{"messages": []}, "junk", {"messages": [{"role": "user", "content": "x"}]}, 7] + make_examples(10)
        refusal = run(train).refusal()
        assert refusal.startswith(f"The training data cannot be sent to OpenAI for {MODEL}: train example 1 has")
        assert "train example 2 is a str" in refusal and "train example 3 has no assistant" in refusal
        assert "example 4" not in refusal and refusal.endswith("; and 1 more error.")

    def test_a_report_without_errors_has_no_refusal(self):
        with pytest.raises(ValueError):
            run(make_examples(10)).refusal()

    def test_to_dict_is_json_and_lists_at_most_a_hundred_errors(self):
        report = run(["junk"] * 150)
        body = json.loads(json.dumps(report.to_dict()))
        assert body["ok"] is False
        assert len(body["errors"]) == 100 and body["errors_total"] == 150
        assert body["error_counts"] == {"data_type": 150}
        assert body["errors"][0] == {"level": "error", "code": "data_type", "message": "train example 1 is a str, "
                                     "not a JSON object", "split": "train", "example": 1}
        assert body["stats"]["train"]["examples"] == 150 and body["billed_tokens_estimate"] == 0


class TestToJsonl:
    def test_one_utf8_object_per_line(self):
        examples = [make_example("Ça va, l'enfant tombe.\nFin."), make_example("b")]
        data = to_jsonl(examples)
        lines = data.decode("utf-8").split("\n")
        assert lines[-1] == "" and len(lines) == 3
        assert [json.loads(line) for line in lines[:2]] == examples
        assert "Ça va" in lines[0]  # not \u00c7a

    def test_no_examples_no_bytes(self):
        assert to_jsonl([]) == b""


class TestOpenAIHyperparameters:
    def test_defaults_leave_everything_to_openai(self):
        hp = OpenAIHyperparameters()
        assert hp.supervised_method() == {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}}}

    def test_job_params(self):
        hp = OpenAIHyperparameters(n_epochs=3, learning_rate_multiplier=0.5, suffix="adress-v1_2",
                                   metadata={"dataset": "42"})
        assert hp.job_params("job-1") == {
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5}}},
            "metadata": {"dataset": "42", "synthaug_job_id": "job-1"},
            "suffix": "adress-v1_2",
        }
        assert "suffix" not in OpenAIHyperparameters().job_params("j")

    @pytest.mark.parametrize(
        "values",
        [
            {"n_epochs": 0}, {"n_epochs": 51}, {"n_epochs": "3"}, {"n_epochs": 2.5}, {"n_epochs": "AUTO"},
            {"n_epochs": True},
            {"batch_size": 0}, {"batch_size": 257},
            {"learning_rate_multiplier": 0}, {"learning_rate_multiplier": -1}, {"learning_rate_multiplier": 11},
            {"learning_rate_multiplier": "0.5"}, {"learning_rate_multiplier": True},
            {"lora_r": 8}, {"seed": 7},
        ],
    )
    def test_out_of_range_values_are_refused(self, values):
        with pytest.raises(ValidationError):
            OpenAIHyperparameters(**values)

    def test_in_range_values_are_kept(self):
        values = {"n_epochs": 50, "batch_size": 256, "learning_rate_multiplier": 2}
        hp = OpenAIHyperparameters.model_validate(values)
        assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (50, 256, 2.0)

    @pytest.mark.parametrize("suffix", ["", "x" * 65, "my:model", "my model", "modèle", "a/b"])
    def test_bad_suffixes_are_refused_with_the_rule(self, suffix):
        with pytest.raises(ValidationError, match="letter, a digit, '-' or '_'"):
            OpenAIHyperparameters(suffix=suffix)

    def test_a_64_character_suffix_is_kept(self):
        assert OpenAIHyperparameters(suffix="A-_9" * 16).suffix == "A-_9" * 16

    def test_the_job_id_key_is_reserved(self):
        with pytest.raises(ValidationError, match="'synthaug_job_id' is reserved"):
            OpenAIHyperparameters(metadata={"synthaug_job_id": "mine"})
        with pytest.raises(ValidationError, match="reserved"):
            OpenAIHyperparameters(metadata={"synthaug_tenant": "x"})

    def test_metadata_holds_fifteen_user_keys(self):
        OpenAIHyperparameters(metadata={f"k{i}": "v" for i in range(15)})
        with pytest.raises(ValidationError, match="at most 15 keys"):
            OpenAIHyperparameters(metadata={f"k{i}": "v" for i in range(16)})

    @pytest.mark.parametrize(
        ("metadata", "words"),
        [({"k" * 65: "v"}, "1 to 64 characters"), ({"": "v"}, "1 to 64 characters"),
         ({"k": "v" * 513}, "at most 512"), ({"k": 3}, "valid string")],
    )
    def test_metadata_sizes(self, metadata, words):
        OpenAIHyperparameters(metadata={"k" * 64: "v" * 512})
        with pytest.raises(ValidationError, match=words):
            OpenAIHyperparameters(metadata=metadata)
