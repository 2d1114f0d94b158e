from __future__ import annotations

import io

from PIL import Image

from tests.worker.reporting.factories import (
    PNG_SIGNATURE,
    sample_report,
    with_undefined_markers,
    without_context,
    without_samples,
    without_semantic,
    without_utility,
)
from worker.reporting.charts import (
    draw_charts,
    plot_embedding_map,
    plot_loops,
    plot_markers,
    plot_training,
    plot_utility,
    training_curves,
)

CHART_IDS = {"chart-markers", "chart-loops", "chart-embedding-map", "chart-utility", "chart-training"}


def assert_chart(png: bytes | None) -> Image.Image:
    """A PNG matplotlib drew something on: more than a blank canvas, in more than one colour."""
    assert png is not None and png.startswith(PNG_SIGNATURE)
    assert len(png) > 2048
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert len(image.getcolors(maxcolors=image.width * image.height)) > 20
    return image


class TestDrawCharts:
    def test_draws_every_chart_of_a_full_report(self):
        charts = draw_charts(sample_report())

        assert set(charts) == CHART_IDS
        for png in charts.values():
            assert_chart(png)

    def test_is_deterministic_and_carries_no_software_stamp(self):
        first, second = draw_charts(sample_report()), draw_charts(sample_report())

        assert first == second
        assert all(b"Software" not in png and b"matplotlib" not in png for png in first.values())

    def test_stays_small(self):
        charts = draw_charts(sample_report())

        assert all(Image.open(io.BytesIO(png)).size[0] <= 1000 for png in charts.values())
        assert sum(len(png) for png in charts.values()) < 400_000

    def test_leaves_out_the_charts_a_bare_report_has_no_data_for(self):
        report = without_context(without_semantic(without_utility(sample_report())))

        assert set(draw_charts(report)) == {"chart-markers", "chart-loops"}


class TestMarkerChart:
    def test_copes_with_a_label_without_samples(self):
        assert_chart(plot_markers(without_samples(sample_report(), "control")))

    def test_copes_with_markers_a_text_does_not_define(self):
        assert_chart(plot_markers(with_undefined_markers(sample_report(), "impaired")))

    def test_copes_with_no_values_at_all(self):
        report = sample_report()
        for label in report["labels"]:
            report["markers"][label]["values"] = {"real": [], "synthetic": []}

        assert plot_markers(report) is not None


class TestLoopChart:
    def test_copes_with_a_label_without_drawn_samples(self):
        assert_chart(plot_loops(without_samples(sample_report(), "impaired")))

    def test_marks_runs_beyond_the_real_max(self):
        report = sample_report()
        report["completeness"]["control"]["drawn_runs"] += [5, 9]

        assert_chart(plot_loops(report))


class TestEmbeddingMap:
    def test_none_when_semantic_was_skipped(self):
        assert plot_embedding_map(without_semantic(sample_report())) is None

    def test_copes_with_a_label_without_samples(self):
        assert_chart(plot_embedding_map(without_samples(sample_report(), "control")))

    def test_leaves_out_points_without_coordinates(self):
        report = sample_report()
        report["semantic"]["map"][0]["x"] = None

        assert_chart(plot_embedding_map(report))


class TestUtilityChart:
    def test_none_when_utility_was_skipped(self):
        assert plot_utility(without_utility(sample_report())) is None

    def test_copes_with_undefined_metrics_and_intervals(self):
        report = sample_report()
        metrics = report["utility"]["results"][0]["metrics"]
        metrics["f1"] = {"value": None, "low": None, "high": None}
        metrics["roc_auc"] = {"value": 0.8, "low": None, "high": None}

        assert_chart(plot_utility(report))


class TestTrainingChart:
    def test_none_without_a_training_record(self):
        assert plot_training(without_context(sample_report())) is None

    def test_reads_a_single_record_as_well_as_a_list(self):
        report = sample_report()
        report["training"] = {"eval_loss": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}]}

        assert_chart(plot_training(report))

    def test_skips_points_without_a_loss(self):
        report = sample_report()
        report["training"][0]["eval_loss"].append({"epoch": 4.0, "loss": None})

        assert training_curves(report) == [("ad_x", [(1.0, 1.92), (2.0, 1.71), (3.0, 1.68)])]

    def test_none_when_no_point_has_a_loss(self):
        report = sample_report()
        report["training"] = [{"job_id": "job_x", "eval_loss": [{"epoch": 1.0, "loss": None}]}]

        assert plot_training(report) is None
