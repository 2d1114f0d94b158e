from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.worker.reporting.factories import (
    PNG_SIGNATURE,
    sample_report,
    with_sample_text,
    without_context,
    without_samples,
    without_semantic,
    without_utility,
)
from worker.reporting.page import render_page, write_report_files

ROOT = Path(__file__).resolve().parents[3]
SECTIONS = ["headline", "markers", "completeness", "diversity", "semantic", "memorization", "fidelity", "utility",
            "dataset", "provenance"]
CHART_IDS = ["chart-markers", "chart-loops", "chart-embedding-map", "chart-utility", "chart-training"]
DATA_URI = "data:image/png;base64,"


class PageParser(HTMLParser):
    """The tags of a page with their attributes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    @classmethod
    def tags_of(cls, html: str) -> list[tuple[str, dict[str, str]]]:
        parser = cls()
        parser.feed(html)
        return parser.tags


def images(html: str) -> dict[str, dict[str, str]]:
    return {attrs["id"]: attrs for tag, attrs in PageParser.tags_of(html) if tag == "img"}


def decode_png(src: str) -> bytes:
    assert src.startswith(DATA_URI)
    return base64.b64decode(src.removeprefix(DATA_URI), validate=True)


class TestRenderPage:
    def test_has_every_section_in_order(self):
        tags = PageParser.tags_of(render_page(sample_report()))

        assert [attrs["id"] for tag, attrs in tags if tag == "section"] == SECTIONS

    def test_embeds_every_chart_as_a_png_data_uri(self):
        shown = images(render_page(sample_report()))

        assert list(shown) == CHART_IDS
        for attrs in shown.values():
            png = decode_png(attrs["src"])
            assert png.startswith(PNG_SIGNATURE) and len(png) > 2048
            assert attrs["alt"]

    def test_formats_shares_numbers_and_intervals(self):
        html = render_page(sample_report())

        assert "87.5%" in html  # impaired read as label by the markers classifier
        assert "0.116 → 0.399" in html  # control fillers per 100 words, real → synthetic
        assert "1.00 [1.00, 1.00]" in html
        assert "2,676 ± 1,099" in html  # Honoré's R, thousands in whole numbers

    def test_explains_each_section(self):
        html = render_page(sample_report())

        assert html.count('<p class="explain">') == len(SECTIONS)
        assert "copy training speech" in html


class TestSelfContained:
    def test_references_no_external_resource(self):
        html = render_page(sample_report())

        for tag, attrs in PageParser.tags_of(html):
            for name in ("src", "href"):
                assert not attrs.get(name, "").lower().startswith(("http:", "https:", "//")), (tag, attrs)
        assert not re.search(r"https?://", html)
        assert "<link" not in html and "<script" not in html and "url(" not in html and "@import" not in html


class TestEscaping:
    def test_escapes_markup_in_sample_texts(self):
        html = render_page(with_sample_text(sample_report(), 'Uh <script>alert("x")</script> the boy'))

        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


class TestSkippedMeasures:
    def test_shows_why_utility_was_skipped(self):
        html = render_page(without_utility(sample_report()))

        assert "the test split has no &#39;impaired&#39; participants" in html
        assert "chart-utility" not in images(html)

    def test_shows_why_semantic_closeness_was_skipped(self):
        html = render_page(without_semantic(sample_report()))

        assert "Not measured: no embedding model." in html
        assert "chart-embedding-map" not in images(html)

    def test_renders_without_provenance_data_set_or_training(self):
        html = render_page(without_context(sample_report()))

        assert "The report holds no training record." in html
        assert "chart-training" not in images(html)


class TestLabelWithoutSamples:
    def test_shows_a_dash_for_every_undefined_figure(self):
        html = render_page(without_samples(sample_report(), "control"))

        headline_row = re.search(r"<tr><td>control</td>(.*?)</tr>", html).group(1)
        assert headline_row.count("<td>–</td>") >= 5
        assert "– → " not in headline_row and "0.116 → –" in headline_row
        assert set(images(html)) == set(CHART_IDS)

    def test_renders_when_every_label_is_empty(self):
        report = without_utility(without_samples(without_samples(sample_report(), "control"), "impaired"))

        assert "Not measured" in render_page(report)


class TestWriteReportFiles:
    def test_writes_the_json_and_the_page(self, tmp_path):
        report = sample_report()

        json_path, html_path = write_report_files(report, tmp_path / "corpus")

        assert json.loads(json_path.read_text(encoding="utf-8")) == report
        assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
        assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["report.html", "report.json"]

    def test_replaces_earlier_files(self, tmp_path):
        write_report_files(without_utility(sample_report()), tmp_path)

        _, html_path = write_report_files(sample_report(), tmp_path)

        assert "chart-utility" in images(html_path.read_text(encoding="utf-8"))


class TestTemplatePackaging:
    def test_the_template_ships_as_package_data(self):
        config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        patterns = config["tool"]["setuptools"]["package-data"]["worker.reporting"]

        shipped = {p for pattern in patterns for p in (ROOT / "worker" / "reporting").glob(pattern)}
        assert ROOT / "worker" / "reporting" / "templates" / "report.html.j2" in shipped


# Solid stand-ins, one per chart, in colours no chart or page style uses: where one shows in a
# screenshot is where its chart lies, the layout being the same.
STAND_IN_COLOURS = [(255, 0, 255), (0, 255, 255), (255, 255, 0), (0, 255, 0), (255, 0, 0)]
# Tall enough for the whole fixture page (about 7,600 px at this width).
WINDOW = (1280, 10000)
CHROMIUM_TIMEOUT_S = 120


def with_stand_ins(html: str) -> tuple[str, dict[str, tuple[tuple[int, int, int], tuple[int, int]]]]:
    """The page with each chart replaced by a solid PNG of its size; each chart's stand-in colour and size."""
    colours = dict(zip(CHART_IDS, STAND_IN_COLOURS))
    stand_ins = {}

    def replace(match: re.Match) -> str:
        size = Image.open(io.BytesIO(base64.b64decode(match.group(3)))).size
        stand_ins[match.group(2)] = (colours[match.group(2)], size)
        buffer = io.BytesIO()
        Image.new("RGB", size, colours[match.group(2)]).save(buffer, format="PNG")
        return match.group(1) + DATA_URI + base64.b64encode(buffer.getvalue()).decode("ascii") + '"'

    pattern = r'(<img id="(chart-[a-z-]+)"[^>]*src=")' + re.escape(DATA_URI) + r'([A-Za-z0-9+/=]+)"'
    return re.sub(pattern, replace, html), stand_ins


def screenshot(chromium: str, page: Path, directory: Path) -> np.ndarray:
    out = directory / f"{page.stem}.png"
    subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--no-first-run", "--force-device-scale-factor=1",
                    f"--user-data-dir={directory / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                    f"--screenshot={out}", page.as_uri()],
                   check=True, capture_output=True, timeout=CHROMIUM_TIMEOUT_S)
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


def distinct_colours(pixels: np.ndarray) -> int:
    packed = (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8) | pixels[..., 2]
    return len(np.unique(packed))


class TestBrowserRendering:
    """The page in headless Chromium beside the same page with solid stand-ins for its charts.

    Each stand-in marks where its chart must show, at the chart's own size; outside those boxes the two
    screenshots must be the same (so every chart took exactly its box), inside each the real page must
    show a drawing, not a flat area or background.
    """

    def test_every_chart_is_visible_in_a_headless_browser(self, tmp_path):
        chromium = shutil.which("chromium")
        if chromium is None:
            pytest.skip("the chromium binary is not installed (Debian package `chromium`)")
        html = render_page(sample_report())
        stand_in_html, stand_ins = with_stand_ins(html)
        (tmp_path / "page.html").write_text(html, encoding="utf-8")
        (tmp_path / "stand_ins.html").write_text(stand_in_html, encoding="utf-8")

        page = screenshot(chromium, tmp_path / "page.html", tmp_path)
        marked = screenshot(chromium, tmp_path / "stand_ins.html", tmp_path)

        assert list(stand_ins) == CHART_IDS
        assert distinct_colours(page[::2, ::2]) > 100, "the screenshot is blank"
        outside = np.ones(page.shape[:2], dtype=bool)
        for chart_id, (colour, (width, height)) in stand_ins.items():
            rows, columns = np.nonzero(np.all(np.abs(marked - colour) <= 8, axis=-1))
            assert len(rows), f"{chart_id} is not in the screenshot (is the window tall enough?)"
            box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
            assert (rows.max() - rows.min() + 1, columns.max() - columns.min() + 1) == (height, width), chart_id
            outside[box] = False
            region = page[box]
            assert distinct_colours(region) > 50, f"{chart_id} shows as a flat area"
            assert np.any(region < 235, axis=-1).mean() > 0.02, f"{chart_id} shows almost nothing but background"
        assert np.any(page != marked, axis=-1)[outside].mean() < 1e-3, "the charts moved the rest of the page"
