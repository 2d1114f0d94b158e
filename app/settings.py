"""One Settings object (env prefix ``SYNTHAUG_``), created once and refused at start-up if unsafe."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from app.domain.sampling import SamplerName
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_KEY_PEPPER = "synthaug-dev-pepper"


class Settings(BaseSettings):
    """Service configuration; every field can be set as ``SYNTHAUG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SYNTHAUG_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "prod"] = Field("dev", description="dev allows unsafe defaults.")
    data_dir: Path = Field(Path("data"), description="Root for the SQLite file, artifacts and caches.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir.")
    artifact_dir: Path | None = Field(None, description="Adapters, checkpoints, exports.")
    cache_dir: Path | None = Field(None, description="Converted base models.")
    models_dir: Path | None = Field(
        None, description="Local base models (HF directories) jobs may name; default data_dir/models. A base_model "
        "path elsewhere is refused."
    )
    broker_url: str | None = Field(None, description="Celery broker (redis://...); unset = embedded runner.")
    default_base_model: str = "smollm2-135m-instruct"
    openai_api_key: SecretStr | None = Field(None, description="Never logged or returned.")
    key_pepper: SecretStr = Field(
        SecretStr(DEV_KEY_PEPPER),
        description="HMAC pepper for API keys; unset, `serve` and `keys create` use a random one kept in data_dir.",
    )
    metrics_token: SecretStr | None = Field(None, description="GET /metrics requires `Authorization: Bearer <it>`.")
    metrics_public: bool = Field(False, description="GET /metrics answers without a token (it counts every tenant's jobs).")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, gt=0,
        description="An uploaded file over this is a 413; the request may carry 64 KiB more of form fields.",
    )
    max_json_bytes: int = Field(
        1024 * 1024, gt=0, description="Body of any request but an upload; more is a 413 before it is read."
    )
    max_report_issues: int = Field(
        200, ge=1, description="Errors (and warnings) an upload's validation report lists; all are counted."
    )
    max_attempts: int = Field(3, ge=1)
    report_on_generation: bool = Field(
        True, description="Compute a corpus's report each time a generation into it succeeds."
    )
    report_bootstrap_resamples: int = Field(
        1000, ge=50, le=100_000, description="Bootstrap resamples behind the report's confidence intervals."
    )
    report_seed: int = Field(0, description="Seed of the report's synthetic draws and bootstrap.")

    # sampling
    default_sampler: SamplerName = Field(SamplerName.HF, description="Sampler used when a request names none.")
    hf_max_batch_size: int = Field(64, ge=1, le=1024, description="Upper bound on the hf sampler's batch.")
    hf_memory_fraction: float = Field(
        0.5, gt=0.0, le=0.95, description="Share of free memory the hf sampler's KV cache may take."
    )
    # what one request may ask for: refused with a 422 naming the parameter, its value and the limit
    max_generation_samples: int = Field(100_000, ge=1, description="Samples (the sum of counts) one generation may ask for.")
    max_sample_tokens: int = Field(2048, ge=1, le=8192, description="Largest max_tokens a generation may ask for.")
    max_generation_batch_size: int = Field(256, ge=1, le=1024, description="Largest batch_size a generation may ask for.")
    max_batch_tokens: int = Field(
        262_144, ge=1024,
        description="hf sampler: batch x (256 prompt tokens + max_tokens) a request may ask for and a batch may hold.",
    )
    hf_max_kv_cache_bytes: int = Field(
        8 * 1024**3, ge=1024**2,
        description="hf sampler: estimated KV cache (fp32, from the base model's config) one batch may take.",
    )
    max_pending_requests: int = Field(
        64, ge=0,
        description="Requests one API process works on before their responses start; more are a 503 with "
        "Retry-After at once (0: no limit).",
    )
    key_cache_seconds: float = Field(
        5.0, ge=0,
        description="How long an API process trusts a verified key without reading it again; a revoked key is "
        "refused at most this long after (0: read every request's key).",
    )
    max_train_batch_tokens: int = Field(
        65_536, ge=1024, description="Fine-tunes: largest batch_size x max_seq_length a job may ask for."
    )
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept per fine-tune job; older ones are deleted.")
    cpu_unpacked_base_max_bytes: int = Field(
        2 << 30, ge=0,
        description="QLoRA on CPU: unpack the frozen nf4 base weights once into the compute dtype when they take at "
        "most this many bytes unpacked (the same values, 1.4x the training tokens/s measured); 0 keeps them packed.",
    )
    vllm_base_url: str | None = Field(
        None, description="OpenAI-compatible base URL of a vLLM server, e.g. http://127.0.0.1:8001/v1."
    )
    vllm_api_key: SecretStr | None = Field(None, description="The vLLM server's --api-key, if it has one.")
    vllm_max_loaded_adapters: int = Field(
        4, ge=1, le=256, description="Adapters kept loaded on the vLLM server; the least recently used is unloaded."
    )
    vllm_max_lora_rank: int = Field(64, ge=1, le=512, description="--max-lora-rank of the vLLM server.")
    vllm_max_loras: int = Field(4, ge=1, le=256, description="--max-loras (adapters in one batch) of the vLLM server.")
    vllm_concurrency: int = Field(32, ge=1, le=1024, description="Requests in flight to the vLLM server.")
    vllm_request_timeout_s: float = Field(600.0, gt=0, description="Timeout of one vLLM request.")
    vllm_max_retries: int = Field(5, ge=0, le=50, description="Retries on 429, 5xx and connection errors.")
    vllm_port: int = Field(8001, ge=1, le=65535, description="Port of `synthaug vllm serve` (loopback).")
    vllm_venv: Path = Field(Path(".venv-vllm"), description="Virtual environment `synthaug vllm serve` builds.")

    # OpenAI fine-tunes and sampling from them
    openai_base_url: str | None = Field(
        None, description="OpenAI API base URL ending in /v1; unset = https://api.openai.com/v1."
    )
    openai_models: list[str] = Field(
        default_factory=lambda: ["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14",
                                 "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14"],
        description="Base models an openai fine-tune may name (dated snapshots).",
    )
    openai_max_retries: int = Field(5, ge=0, le=20, description="SDK retries on 408/409/429/5xx (Retry-After honoured).")
    openai_timeout_s: float = Field(120.0, gt=0, description="Timeout of one OpenAI request.")
    openai_concurrency: int = Field(8, ge=1, le=256, description="Chat completions in flight per generation.")
    openai_poll_min_s: float = Field(5.0, gt=0, description="First wait between polls of a remote fine-tune.")
    openai_poll_max_s: float = Field(60.0, gt=0, description="Longest wait between polls (the backoff's cap).")

    # distributed mode (Celery workers on the broker) and the lifecycle of every job
    heartbeat_interval_s: float = Field(10.0, gt=0, description="How often a running job's worker writes its heartbeat.")
    stale_after_s: float = Field(
        120.0, gt=0, description="A running job whose heartbeat is older than this has no live worker."
    )
    reaper_interval_s: float = Field(60.0, gt=0, description="How often Celery beat runs the reaper.")
    requeue_queued_after_s: float = Field(
        1800.0, gt=0, description="The reaper sends a job again that has waited queued this long since it was sent."
    )
    broker_visibility_timeout_s: int = Field(
        3600, ge=1, description="Redis redelivers a task not acknowledged within this time (acks are late)."
    )
    task_soft_time_limit_s: int = Field(43200, ge=1, description="A task is asked to stop after this time.")
    task_time_limit_s: int = Field(46800, ge=1, description="A task's process is killed after this time.")
    broker_timeout_s: float = Field(3.0, gt=0, description="Connect timeout to the broker (sending, readyz).")
    max_running_per_tenant: int = Field(
        0, ge=0, description="Local fine-tunes and generations one tenant may have running at once (0 = no cap)."
    )
    tenant_cap_retry_s: float = Field(30.0, gt=0, description="A job held back by its tenant's cap is tried again after this.")

    # database
    db_pool_size: int = Field(10, ge=1, description="Pooled connections per process (not SQLite).")
    db_max_overflow: int = Field(20, ge=0, description="Connections beyond the pool under load.")
    db_pool_timeout_s: float = Field(3.0, gt=0, description="Wait for a pooled connection before 503.")
    db_pool_recycle_s: int = Field(1800, ge=-1, description="Reconnect pooled connections older than this.")
    sqlite_pool_size: int = Field(
        48, ge=1, description="SQLite connections per process: the 40 request threads plus the runner's, none waiting."
    )

    # server-sent event streams (GET /finetune-jobs/{id}/events with Accept: text/event-stream)
    event_stream_poll_s: float = Field(0.5, gt=0, le=60, description="How often a stream looks for new events.")
    event_stream_keepalive_s: float = Field(
        15.0, gt=0, description="A comment line is sent after this long without an event (proxies, disconnects)."
    )
    event_stream_max_s: float = Field(
        3600.0, gt=0, description="A stream ends after this long with a `reconnect` event; the client resumes."
    )

    # logging
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line, with job ids.")
    log_level: str = Field("INFO", description="Root log level.")

    # zip uploads (CHAT transcripts): refused beyond these, whatever the archive's headers claim
    max_archive_files: int = Field(5000, ge=1, description="Files a zip upload may hold.")
    max_archive_bytes: int = Field(
        200 * 1024 * 1024, gt=0, description="Uncompressed bytes a zip upload's files may add up to."
    )

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> "Settings":
        if self.env != "dev" and self.key_pepper.get_secret_value() == DEV_KEY_PEPPER:
            raise ValueError("SYNTHAUG_KEY_PEPPER must be set to a secret value outside dev")
        if self.default_sampler == SamplerName.OPENAI:
            raise ValueError("SYNTHAUG_DEFAULT_SAMPLER cannot be openai: OpenAI fine-tunes pick it themselves")
        if self.stale_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError("SYNTHAUG_STALE_AFTER_S must be at least twice SYNTHAUG_HEARTBEAT_INTERVAL_S")
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("SYNTHAUG_TASK_SOFT_TIME_LIMIT_S must be below SYNTHAUG_TASK_TIME_LIMIT_S")
        return self

    @property
    def embedded(self) -> bool:
        """True when jobs run in this process (no broker configured)."""
        return not self.broker_url

    @property
    def tenant_running_cap(self) -> int:
        """max_running_per_tenant in distributed mode; embedded lanes run one job each and take turns instead."""
        return 0 if self.embedded else self.max_running_per_tenant

    @property
    def available_samplers(self) -> frozenset[SamplerName]:
        """hf always; vllm when a server is configured; openai when a key is."""
        return frozenset({SamplerName.HF} | ({SamplerName.VLLM} if self.vllm_base_url else set())
                         | ({SamplerName.OPENAI} if self.openai_api_key else set()))

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or a SQLite file under data_dir."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'synthaug.db').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").resolve()

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def base_model_roots(self) -> tuple[Path, ...]:
        """Where a base_model given as a directory may be: the models dir, then the converted-model cache."""
        return self.resolved_models_dir, self.resolved_cache_dir / "models"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
