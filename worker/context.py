"""What a worker process holds: settings, the database and its backends, built once per process."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any

from app.db.session import Database
from app.settings import Settings


class WorkerContext:
    """Backends are created on first use and kept, so models load once per process."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._samplers: dict[str, Any] = {}
        self._embedder: Any = None
        self._openai: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def new_owner() -> str:
        """A token naming one run of one task here: node, process and a fresh id (two deliveries of
        the same task in one process are two owners)."""
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def sampler(self, name: str) -> Any:
        """The process's sampler of that name (each owns its loaded models or server connection)."""
        from worker.sampling import build_sampler

        with self._lock:
            if name not in self._samplers:
                self._samplers[name] = build_sampler(name, self.settings)
            return self._samplers[name]

    def openai_client(self) -> Any:
        """The process's OpenAI client (settings' key, base URL, retries), built on first use."""
        from app.services.openai_client import openai_client

        with self._lock:
            if self._openai is None:
                self._openai = openai_client(self.settings)
            return self._openai

    def embedder(self) -> Any:
        """The process's sentence embedder for reports (loaded on first use)."""
        from worker.reporting.embeddings import SentenceEmbedder

        with self._lock:
            if self._embedder is None:
                self._embedder = SentenceEmbedder()
            return self._embedder

    def prepare_default_model(self) -> None:
        """Convert the default base model once, so the first job and token stats start fast."""
        from worker.models import materialize_base_model

        materialize_base_model(self.settings.default_base_model, self.settings.resolved_cache_dir)

    def trainer(self, method: str) -> Any:
        from worker.training import get_trainer

        return get_trainer(method)
