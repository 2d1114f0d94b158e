"""How far a synthetic distribution lies from the real one: per marker (Wasserstein, Kolmogorov–Smirnov)
and for sets of embedding vectors (Fréchet distance, as FID computes it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from app.domain.report.markers import MARKER_NAMES, TextMarkers, marker_values


@dataclass(frozen=True)
class MarkerDistance:
    """One marker's synthetic distribution against the real one; None where a side has no values.

    ``scaled_wasserstein`` is the distance in real standard deviations, so markers of different units
    compare; None when the real values have fewer than two or do not vary.
    """

    marker: str
    n_synthetic: int
    n_real: int
    wasserstein: float | None
    scaled_wasserstein: float | None
    ks_statistic: float | None
    ks_p_value: float | None


@dataclass(frozen=True)
class MarkerDistances:
    markers: list[MarkerDistance]

    def as_dict(self) -> dict:
        return asdict(self)


def wasserstein(synthetic: Sequence[float], real: Sequence[float]) -> float:
    """1-D Wasserstein (earth mover's) distance: the area between the two empirical CDFs."""
    return float(stats.wasserstein_distance(synthetic, real))


def kolmogorov_smirnov(synthetic: Sequence[float], real: Sequence[float]) -> tuple[float, float]:
    """Two-sample KS statistic (largest gap between the empirical CDFs) and its two-sided p-value."""
    result = stats.ks_2samp(synthetic, real)
    return float(result.statistic), float(result.pvalue)


def compare_markers(synthetic: Sequence[TextMarkers], real: Sequence[TextMarkers]) -> MarkerDistances:
    """Every marker's distances, over the texts of each side that define it."""
    return MarkerDistances([
        compare_marker(name, marker_values(synthetic, name), marker_values(real, name)) for name in MARKER_NAMES
    ])


def compare_marker(marker: str, synthetic: Sequence[float], real: Sequence[float]) -> MarkerDistance:
    """One marker's distances."""
    if not synthetic or not real:
        return MarkerDistance(marker, len(synthetic), len(real), None, None, None, None)
    distance = wasserstein(synthetic, real)
    sd = float(np.std(real, ddof=1)) if len(real) > 1 else 0.0
    ks, p_value = kolmogorov_smirnov(synthetic, real)
    return MarkerDistance(
        marker, len(synthetic), len(real), distance, distance / sd if sd > 0 else None, ks, p_value
    )


def frechet_distance(synthetic: np.ndarray, real: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of vectors (rows):
    ||mu_s - mu_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2)).

    Covariances are the sample covariances (ddof 1) when both sets have more vectors than dimensions.
    Otherwise a sample covariance is singular and its estimate of the spread poor, so both sets use
    the Ledoit–Wolf shrinkage estimate (towards a scaled identity), which is positive definite.
    The trace of (S_s S_r)^(1/2) is taken as that of the symmetric (S_s^½ S_r S_s^½)^½, whose
    eigenvalues are real and non-negative: no complex parts arise, unlike scipy's sqrtm of the product.
    """
    synthetic, real = np.asarray(synthetic, dtype=float), np.asarray(real, dtype=float)
    if synthetic.ndim != 2 or real.ndim != 2 or synthetic.shape[1] != real.shape[1]:
        raise ValueError("embeddings must be two matrices with one vector per row and the same width")
    if len(synthetic) < 2 or len(real) < 2:
        raise ValueError("a Fréchet distance needs at least two vectors on each side")
    shrink = min(len(synthetic), len(real)) <= synthetic.shape[1]
    cov_s, cov_r = _covariance(synthetic, shrink), _covariance(real, shrink)
    root_s = _symmetric_sqrt(cov_s)
    cross = np.linalg.eigvalsh(root_s @ cov_r @ root_s)
    trace_root = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    mean_gap = synthetic.mean(axis=0) - real.mean(axis=0)
    distance = float(mean_gap @ mean_gap) + float(np.trace(cov_s) + np.trace(cov_r)) - 2.0 * trace_root
    # Rounding can leave identical sets a hair below zero.
    return max(distance, 0.0)


def _covariance(vectors: np.ndarray, shrink: bool) -> np.ndarray:
    if shrink:
        from sklearn.covariance import ledoit_wolf

        return ledoit_wolf(vectors)[0]
    return np.atleast_2d(np.cov(vectors, rowvar=False))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
