"""Distances between synthetic and real distributions: per marker and between embedding sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.linalg import sqrtm

from app.domain.report.distances import (
    compare_marker,
    compare_markers,
    frechet_distance,
    kolmogorov_smirnov,
    wasserstein,
)
from app.domain.report.markers import MARKER_NAMES, measure_markers


class TestWasserstein:
    def test_a_shift_moves_every_value_by_its_size(self):
        assert wasserstein([0, 1], [1, 2]) == pytest.approx(1.0)

    def test_sets_of_different_sizes(self):
        # CDFs differ by 1/2 between 0 and 2: area 1/2 * 2.
        assert wasserstein([0], [0, 2]) == pytest.approx(1.0)

    def test_identical_sets_are_at_zero(self):
        assert wasserstein([3, 1, 2], [1, 2, 3]) == 0.0


class TestKolmogorovSmirnov:
    def test_the_largest_gap_between_the_cdfs(self):
        # At 1: 2/4 of the first set, 0 of the second; at 3: 4/4 against 2/4.
        statistic, _ = kolmogorov_smirnov([0, 1, 2, 3], [2, 3, 4, 5])
        assert statistic == pytest.approx(0.5)

    def test_disjoint_sets_are_at_one(self):
        # Exact two-sided p: 2 of the C(6, 3) = 20 orderings of the pooled values are this extreme.
        statistic, p_value = kolmogorov_smirnov([0, 1, 2], [5, 6, 7])
        assert statistic == 1.0
        assert p_value == pytest.approx(0.1)


class TestCompareMarker:
    def test_scaled_by_the_real_sd(self):
        # W = 1 (above); real sd = sqrt(((0 - 1)^2 + (2 - 1)^2) / 1) = sqrt(2).
        distance = compare_marker("words", [0.0], [0.0, 2.0])
        assert (distance.n_synthetic, distance.n_real) == (1, 2)
        assert distance.wasserstein == pytest.approx(1.0)
        assert distance.scaled_wasserstein == pytest.approx(1 / math.sqrt(2))

    def test_no_scale_when_the_real_values_do_not_vary(self):
        distance = compare_marker("words", [1.0, 2.0], [3.0, 3.0])
        assert distance.wasserstein == pytest.approx(1.5)
        assert distance.scaled_wasserstein is None

    def test_an_empty_side_has_no_distance(self):
        distance = compare_marker("honore_r", [], [1.0])
        assert (distance.wasserstein, distance.ks_statistic, distance.ks_p_value) == (None, None, None)


class TestCompareMarkers:
    def test_every_marker_over_the_texts_that_define_it(self):
        synthetic = [measure_markers("a b"), measure_markers("a b c d")]
        real = [measure_markers("a b c d"), measure_markers("a a b c d e")]
        distances = {d.marker: d for d in compare_markers(synthetic, real).markers}
        assert list(distances) == list(MARKER_NAMES)
        # Words 2, 4 against 4, 6: each moves by 2.
        assert distances["words"].wasserstein == pytest.approx(2.0)
        # Honoré's R is defined for "a a b c d e" only; no synthetic text defines it.
        assert (distances["honore_r"].n_synthetic, distances["honore_r"].n_real) == (0, 1)
        assert distances["honore_r"].wasserstein is None

    def test_serialises_to_json(self):
        distances = compare_markers([measure_markers("a b")], [measure_markers("a b c")])
        assert json.loads(json.dumps(distances.as_dict()))["markers"][0]["marker"] == "words"


# Four points with mean 0 and sample covariance (ddof 1) diag(2/3, 2/3).
CROSS = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


class TestFrechetDistance:
    def test_identical_sets_are_at_zero(self):
        assert frechet_distance(CROSS, CROSS) == pytest.approx(0.0, abs=1e-12)

    def test_two_gaussians_of_known_means_and_covariances(self):
        # Second set: mean (3, 4), covariance diag(8/3, 8/3). ||mu||^2 = 25; the trace term is
        # 2/3 * 2 + 8/3 * 2 - 2 * 2 * sqrt(2/3 * 8/3) = 4/3 + 16/3 - 16/3 = 4/3.
        assert frechet_distance(CROSS, 2 * CROSS + [3.0, 4.0]) == pytest.approx(25 + 4 / 3)

    def test_covariances_that_do_not_commute(self):
        # Against the textbook formula with scipy's sqrtm of the product.
        rng = np.random.default_rng(0)
        a = rng.normal(size=(40, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.2, 0.0, 1.0]])
        b = rng.normal(size=(30, 3)) @ np.array([[2.0, 0.0, 0.0], [0.7, 1.0, 0.0], [0.0, 0.4, 0.5]]) + 1.0
        cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        gap = a.mean(axis=0) - b.mean(axis=0)
        expected = gap @ gap + np.trace(cov_a + cov_b - 2 * sqrtm(cov_a @ cov_b).real)
        assert frechet_distance(a, b) == pytest.approx(expected)

    def test_fewer_vectors_than_dimensions_use_shrinkage(self):
        # Three vectors in five dimensions: sample covariances would be singular. Ledoit–Wolf does not
        # depend on the mean, so a pure shift leaves both covariances equal and the distance ||shift||^2.
        rng = np.random.default_rng(1)
        a = rng.normal(size=(3, 5))
        shift = np.array([1.0, 2.0, 0.0, 0.0, 2.0])
        assert frechet_distance(a, a + shift) == pytest.approx(9.0)
        assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
        assert math.isfinite(frechet_distance(a, rng.normal(size=(4, 5))))

    def test_refuses_sets_it_cannot_compare(self):
        with pytest.raises(ValueError, match="same width"):
            frechet_distance(CROSS, np.ones((4, 3)))
        with pytest.raises(ValueError, match="two vectors"):
            frechet_distance(CROSS[:1], CROSS)
