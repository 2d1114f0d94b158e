import hashlib
import os
import socket

import pytest
import requests
import tiktoken
from tiktoken_ext import openai_public

from app.domain.openai_finetune import ExampleTokens
from app.services import openai_tokens
from app.services.openai_tokens import (
    CACHE_ENV,
    ChatTokenCounter,
    EncodingDataError,
    cache_file_name,
    encoding_name_for,
    load_encoding,
    seed_tiktoken_cache,
)

O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"  # sha1 of the o200k_base URL
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"  # tiktoken_ext/openai_public.py
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def refuse_network(*args, **kwargs):
    raise AssertionError("the network was used")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network, and none sees the caller's tiktoken cache settings."""
    monkeypatch.setattr(requests, "get", refuse_network)
    monkeypatch.setattr(socket.socket, "connect", refuse_network)
    monkeypatch.setattr(socket, "create_connection", refuse_network)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestSeedTiktokenCache:
    def test_writes_both_encodings_under_the_names_tiktoken_reads(self, tmp_path):
        assert seed_tiktoken_cache(tmp_path) == tmp_path
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([O200K_FILE, CL100K_FILE])
        assert sha256_of(tmp_path / O200K_FILE) == O200K_SHA256
        assert sha256_of(tmp_path / CL100K_FILE) == CL100K_SHA256
        assert (tmp_path / O200K_FILE).stat().st_size == 3_613_922

    def test_cache_file_names_are_the_sha1_of_the_urls(self):
        assert cache_file_name("o200k_base") == O200K_FILE
        assert cache_file_name("cl100k_base") == CL100K_FILE

    def test_sets_the_cache_variable_when_unset(self, tmp_path):
        seed_tiktoken_cache(tmp_path / "tiktoken")
        assert os.environ[CACHE_ENV] == str(tmp_path / "tiktoken")

    def test_an_empty_cache_variable_is_replaced(self, tmp_path, monkeypatch):
        monkeypatch.setenv(CACHE_ENV, "")
        assert seed_tiktoken_cache(tmp_path) == tmp_path
        assert os.environ[CACHE_ENV] == str(tmp_path)

    def test_seeds_the_directory_the_variable_names(self, tmp_path, monkeypatch):
        configured, ignored = tmp_path / "configured", tmp_path / "argument"
        monkeypatch.setenv(CACHE_ENV, str(configured))
        assert seed_tiktoken_cache(ignored) == configured
        assert (configured / O200K_FILE).is_file()
        assert not ignored.exists()
        assert os.environ[CACHE_ENV] == str(configured)

    def test_a_second_call_keeps_intact_files(self, tmp_path):
        seed_tiktoken_cache(tmp_path)
        os.utime(tmp_path / O200K_FILE, ns=(1_000_000_000, 1_000_000_000))
        seed_tiktoken_cache(tmp_path)
        assert (tmp_path / O200K_FILE).stat().st_mtime_ns == 1_000_000_000

    def test_a_corrupt_file_is_replaced(self, tmp_path):
        (tmp_path / CL100K_FILE).write_bytes(b"truncated")
        seed_tiktoken_cache(tmp_path)
        assert sha256_of(tmp_path / CL100K_FILE) == CL100K_SHA256
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def test_bundled_data_that_does_not_match_is_refused(self, tmp_path, monkeypatch):
        monkeypatch.setitem(openai_tokens.ENCODING_SHA256, "o200k_base", "0" * 64)
        with pytest.raises(EncodingDataError, match="o200k_base"):
            seed_tiktoken_cache(tmp_path)
        assert not (tmp_path / O200K_FILE).exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class TestOfflineEncodings:
    @pytest.mark.parametrize(
        ("constructor", "ids"),
        [(openai_public.o200k_base, [24912, 2375]), (openai_public.cl100k_base, [15339, 1917])],
    )
    def test_tiktoken_loads_the_seeded_files_without_the_network(self, tmp_path, constructor, ids):
        # A fresh Encoding from tiktoken's own constructor reads the cache (tiktoken's registry may
        # already hold one built earlier in this process, which would prove nothing).
        seed_tiktoken_cache(tmp_path)
        encoding = tiktoken.Encoding(**constructor())
        assert encoding.encode("hello world") == ids

    def test_load_encoding_gives_one_encoding_per_process(self, tmp_path):
        encoding = load_encoding("o200k_base", tmp_path)
        assert encoding.name == "o200k_base"
        assert encoding.encode("hello world") == [24912, 2375]
        assert load_encoding("o200k_base", tmp_path) is encoding

    def test_load_encoding_refuses_an_encoding_not_bundled(self, tmp_path):
        with pytest.raises(ValueError, match="p50k_base"):
            load_encoding("p50k_base", tmp_path)


class TestEncodingNameFor:
    @pytest.mark.parametrize(
        "model",
        [
            "gpt-4o-mini-2024-07-18",
            "gpt-4o-2024-08-06",
            "gpt-4.1-2025-04-14",
            "gpt-4.1-nano-2025-04-14",
            "ft:gpt-4.1-mini-2025-04-14:org::x",
            "ft:gpt-4o-mini-2024-07-18:my-org:custom-suffix:96olL566:ckpt-step-2000",
            "o4-mini-2025-04-16",
            "o1",
            "gpt-5-mini",
            "a-model-released-next-year",
        ],
    )
    def test_o200k_models(self, model):
        assert encoding_name_for(model) == "o200k_base"

    @pytest.mark.parametrize(
        "model",
        ["gpt-4-0613", "gpt-4", "gpt-3.5-turbo-0125", "ft:gpt-3.5-turbo-1106:org:sfx:abc", "davinci-002",
         "babbage-002"],
    )
    def test_cl100k_models(self, model):
        assert encoding_name_for(model) == "cl100k_base"

    def test_tiktoken_itself_gets_fine_tuned_gpt_4_1_wrong(self):
        # Why the mapping is ours: if tiktoken learns ft:gpt-4.1, this reminds us to drop it.
        assert tiktoken.model.encoding_name_for_model("ft:gpt-4.1-mini-2025-04-14:org::x") == "cl100k_base"


class TestChatTokenCounter:
    @pytest.fixture
    def counter(self, tmp_path):
        return ChatTokenCounter.for_model("gpt-4o-mini-2024-07-18", tmp_path)

    def test_counts_the_cookbook_way(self, counter):
        example = {"messages": [
            {"role": "system", "content": "hello world"},
            {"role": "user", "content": "hello world", "name": "x"},
            {"role": "assistant", "content": "hello world", "weight": 1},
        ]}
        # o200k: "system", "user", "assistant" and "x" are 1 token each, "hello world" 2.
        # system 3+1+2 = 6; user 3+1+2+1 (+1 for name) = 8; assistant 3+1+2 (weight not encoded) = 6;
        # reply priming 3 → 23. Assistant content alone: 2.
        assert counter.count(example) == ExampleTokens(total=23, assistant=2)

    def test_only_assistant_contents_are_assistant_tokens(self, counter):
        example = {"messages": [
            {"role": "user", "content": "Describe the picture."},  # 4 tokens
            {"role": "assistant", "content": "Bonjour, ça va ?"},  # 5 tokens
            {"role": "assistant", "content": "hello world"},  # 2 tokens
        ]}
        assert counter.count(example) == ExampleTokens(total=3 * 3 + (1 + 4) + (1 + 5) + (1 + 2) + 3, assistant=7)

    def test_special_token_spellings_count_as_text(self, counter):
        example = {"messages": [{"role": "assistant", "content": "<|endoftext|>"}]}
        assert counter.count(example) == ExampleTokens(total=3 + 1 + 7 + 3, assistant=7)

    def test_what_cannot_be_encoded_is_skipped(self, counter):
        example = {"messages": ["not a message", {"role": "assistant", "content": None, "function_call": {}}]}
        assert counter.count(example) == ExampleTokens(total=3 + 1 + 3, assistant=0)

    def test_a_gpt_3_5_fine_tune_counts_with_cl100k(self, tmp_path):
        counter = ChatTokenCounter.for_model("ft:gpt-3.5-turbo-0125:org:sfx:abc", tmp_path)
        assert counter.encoding.name == "cl100k_base"
        assert counter.text_tokens("hello world") == 2
