import csv
import io
import json
import tracemalloc
from pathlib import Path

import pytest

from app.domain.ingestion import (
    LABELS,
    SPLITS,
    ColumnMapping,
    Issue,
    parse_upload,
)
from app.domain.markers import filler_rate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adress_illustrative.csv"
ANIMALS = ["cat", "dog", "owl", "fox", "elk", "yak", "emu", "bat", "ant", "eel"]


def make_text(i: int) -> str:
    """A distinct description of more than ten words, so no length or duplicate warnings."""
    return f"The boy on the stool takes cookie number {i} while the mother dries a plate near the {ANIMALS[i % 10]}."


def make_csv(rows: list[list], header: tuple = ("id", "text", "label")) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def make_jsonl(objects: list[dict]) -> bytes:
    return "\n".join(json.dumps(obj) for obj in objects).encode()


def balanced_rows(n_per_label: int = 10) -> list[list]:
    return [[f"S{i:03d}", make_text(i), i % 2] for i in range(2 * n_per_label)]


def parse(data: bytes, filename: str = "upload.csv", mapping: ColumnMapping = ColumnMapping(), **kwargs):
    kwargs.setdefault("max_bytes", 1_000_000)
    return parse_upload(data, filename, mapping, **kwargs)


def only_error(report, code: str) -> Issue:
    issues = [issue for issue in report.errors if issue.code == code]
    assert len(issues) == 1, report.errors
    return issues[0]


def only_warning(report, code: str) -> Issue:
    issues = [issue for issue in report.warnings if issue.code == code]
    assert len(issues) == 1, report.warnings
    return issues[0]


class TestValidUpload:
    def test_csv_records_and_stats(self):
        records, report = parse(make_csv(balanced_rows()), count_tokens=lambda text: len(text) // 4)
        assert report.ok and report.warnings == []
        assert len(records) == 20
        first = records[0]
        assert (first.row, first.participant_id, first.label) == (2, "S000", "control")
        assert report.stats["labels"] == {"control": 10, "impaired": 10}
        assert sum(report.stats["splits"].values()) == 20
        assert report.stats["participants"] == 20
        assert report.stats["split_assigned"] is True
        assert set(report.stats["words"]) == {"min", "mean", "max"}
        assert set(report.stats["tokens"]) == {"min", "mean", "p95", "max"}
        assert "header is line 1" in report.stats["row_numbering"]

    def test_jsonl_rows_are_line_numbers(self):
        objects = [{"id": f"P{i}", "text": make_text(i), "label": i % 2} for i in range(6)]
        data = make_jsonl(objects[:3]) + b"\n\n" + make_jsonl(objects[3:])
        records, report = parse(data, "upload.ndjson")
        assert report.ok, report.errors
        assert [r.row for r in records] == [1, 2, 3, 5, 6, 7]
        assert records[1].label == "impaired"

    def test_bom_crlf_and_whitespace(self):
        data = b"\xef\xbb\xbf id , text ,label\r\n" + b"\r\n".join(
            f' S{i} ,"  {make_text(i)}  ", {i % 2} '.encode() for i in range(6)
        ) + b"\r\n"
        records, report = parse(data)
        assert report.ok, report.errors
        assert records[0].participant_id == "S0"
        assert records[0].text == make_text(0)
        assert [r.label for r in records[:2]] == ["control", "impaired"]

    def test_multiline_cell_keeps_line_numbers(self):
        rows = balanced_rows(3)
        rows[0][1] = "The boy takes a cookie.\nThe stool tips over and the sink is overflowing now."
        rows[2][1] = ""
        _, report = parse(make_csv(rows))
        # Header line 1, the two-line cell lines 2-3, then lines 4 and 5.
        assert only_error(report, "empty_text").row == 5

    def test_custom_mapping_and_canonical_labels(self):
        mapping = ColumnMapping(participant="speaker", text="transcript", label="group",
                                label_values={"HC": "control", "AD": "impaired"})
        rows = [[f"S{i}", make_text(i), ["hc", "AD", "impaired"][i % 3]] for i in range(9)]
        records, report = parse(make_csv(rows, header=("Speaker", "Transcript", "Group")), mapping=mapping)
        assert report.ok, report.errors
        assert [r.label for r in records[:3]] == ["control", "impaired", "impaired"]

    def test_several_rows_per_participant(self):
        rows = [[f"S{i // 2}", make_text(i), (i // 2) % 2] for i in range(12)]
        records, report = parse(make_csv(rows))
        assert report.ok, report.errors
        assert report.stats["participants"] == 6
        split_of = {}
        for record in records:
            assert split_of.setdefault(record.participant_id, record.split) == record.split

    def test_report_to_dict(self):
        _, report = parse(make_csv(balanced_rows()) + b"S999,,1\n")
        as_dict = report.to_dict()
        assert as_dict["ok"] is False
        assert as_dict["errors"][0]["code"] == "empty_text"
        assert as_dict["errors"][0]["level"] == "error"


class TestReportCap:
    def test_lists_the_first_issues_and_counts_every_one(self):
        _, report = parse(b"{\n" * 1000 + b"[1]\n", "bad.jsonl", max_listed=3)
        assert [(issue.code, issue.row) for issue in report.errors] == [("invalid_json", r) for r in (1, 2, 3)]
        assert (report.ok, report.error_count) == (False, 1001)
        as_dict = report.to_dict()
        assert (as_dict["errors_total"], as_dict["errors_truncated"]) == (1001, True)
        assert as_dict["error_counts"] == {"invalid_json": 1001}

    def test_memory_stays_bounded_while_collecting(self):
        data = b"{\n" * 20_000
        tracemalloc.start()
        try:
            _, report = parse(data, "bad.jsonl", max_listed=10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert report.error_count == 20_000 and len(report.errors) == 10
        # 20,000 kept issues take about 6.5 MB; the capped parse peaks near 0.3 MB.
        assert peak < 2 * 1024 * 1024, f"peak {peak:,} bytes"

    def test_warnings_are_capped_too(self):
        rows = [[f"S{i:03d}", f"short {i}", i % 2] for i in range(30)]
        _, report = parse(make_csv(rows), max_listed=4)
        assert report.ok and len(report.warnings) == 4 and report.warning_count >= 30
        assert report.to_dict()["warnings_truncated"] is True


class TestFileErrors:
    def test_file_too_large(self):
        records, report = parse(b"x" * 101, max_bytes=100)
        issue = only_error(report, "file_too_large")
        assert records == [] and issue.row is None
        assert "over the limit of 100 bytes" in issue.message

    def test_unsupported_format(self):
        _, report = parse(make_csv(balanced_rows()), "upload.xlsx")
        issue = only_error(report, "unsupported_format")
        assert "upload.xlsx" in issue.message and ".csv" in issue.message and ".jsonl" in issue.message

    def test_undecodable(self):
        data = make_csv(balanced_rows(2)) + "S9,caf\u00e9 au lait for the boy,0\n".encode("latin-1")
        _, report = parse(data)
        issue = only_error(report, "undecodable")
        offset = data.index(b"\xe9")
        assert issue.row == 6
        assert f"offset {offset}" in issue.message and "line 6" in issue.message and "UTF-8" in issue.message

    def test_invalid_json(self):
        objects = [{"id": f"P{i}", "text": make_text(i), "label": i % 2} for i in range(6)]
        data = make_jsonl(objects[:2]) + b'\n{"id": "P9", "text": \n[1, 2]\n' + make_jsonl(objects[2:])
        records, report = parse(data, "upload.jsonl")
        assert [issue.code for issue in report.errors] == ["invalid_json", "invalid_json"]
        assert [issue.row for issue in report.errors] == [3, 4]
        assert report.errors[0].message.startswith("line 3: not valid JSON")
        assert "expected a JSON object" in report.errors[1].message
        assert len(records) == 6

    def test_invalid_csv(self):
        data = make_csv(balanced_rows(2)) + b"S9," + b"x" * 200_000 + b",0\n"
        _, report = parse(data)
        issue = only_error(report, "invalid_csv")
        assert issue.row == 6 and issue.message.startswith("line 6: the CSV cannot be read")

    def test_missing_column(self):
        _, report = parse(make_csv([["S1", "a text"]], header=("id", "transcript")))
        assert [issue.code for issue in report.errors] == ["missing_column", "missing_column"]
        text_issue, label_issue = report.errors
        assert (text_issue.column, label_issue.column) == ("text", "label")
        assert "'text' is missing" in text_issue.message
        assert "'id', 'transcript'" in text_issue.message

    @pytest.mark.parametrize("data, filename", [
        (b"id,text,label\r\n", "upload.csv"),
        (b"", "upload.csv"),
        (b"\n\n", "upload.jsonl"),
    ])
    def test_no_records(self, data, filename):
        records, report = parse(data, filename)
        issue = only_error(report, "no_records")
        assert records == [] and issue.row is None and issue.message


class TestRowErrors:
    def test_empty_text(self):
        rows = balanced_rows()
        rows[12][1] = "   "
        records, report = parse(make_csv(rows))
        issue = only_error(report, "empty_text")
        assert (issue.row, issue.column, issue.participant) == (14, "text", "S012")
        assert issue.message == "line 14: column 'text' is empty (participant S012)"
        assert len(records) == 19

    def test_missing_participant(self):
        rows = balanced_rows()
        rows[3][0] = ""
        _, report = parse(make_csv(rows))
        issue = only_error(report, "missing_participant")
        assert (issue.row, issue.column, issue.participant) == (5, "id", None)
        assert issue.message == "line 5: column 'id' is empty"

    def test_missing_participant_key_in_jsonl(self):
        objects = [{"id": f"P{i}", "text": make_text(i), "label": i % 2} for i in range(6)]
        del objects[4]["id"]
        _, report = parse(make_jsonl(objects), "upload.jsonl")
        assert only_error(report, "missing_participant").row == 5

    def test_unknown_label(self):
        rows = balanced_rows()
        rows[6][2] = "AD"
        _, report = parse(make_csv(rows))
        issue = only_error(report, "unknown_label")
        assert (issue.row, issue.column, issue.participant) == (8, "label", "S006")
        assert "'AD'" in issue.message and "'0', '1', 'control', 'impaired'" in issue.message
        assert issue.message.startswith("line 8:")

    @pytest.mark.parametrize("raw, expected", [
        ("train", "train"), ("Validation", "validation"), ("val", "validation"), ("DEV", "validation"),
        (" test ", "test"),
    ])
    def test_split_aliases(self, raw, expected):
        rows = [row + [raw if i == 0 else "train"] for i, row in enumerate(balanced_rows())]
        records, report = parse(make_csv(rows, header=("id", "text", "label", "split")))
        assert report.ok, report.errors
        assert records[0].split == expected
        assert report.stats["split_assigned"] is False

    def test_unknown_split(self):
        rows = [row + ["train"] for row in balanced_rows()]
        rows[9][3] = "holdout"
        _, report = parse(make_csv(rows, header=("id", "text", "label", "split")))
        issue = only_error(report, "unknown_split")
        assert (issue.row, issue.column, issue.participant) == (11, "split", "S009")
        assert "'holdout'" in issue.message and "'validation'" in issue.message
        assert issue.message.startswith("line 11:")


class TestParticipantErrors:
    def test_participant_in_two_splits(self):
        rows = [row + ["train"] for row in balanced_rows()]
        rows.append(["S004", make_text(40), 0, "test"])
        _, report = parse(make_csv(rows, header=("id", "text", "label", "split")))
        issue = only_error(report, "participant_in_two_splits")
        assert (issue.row, issue.participant) == (22, "S004")
        assert "S004" in issue.message
        assert "'train' on line 6" in issue.message and "'test' on line 22" in issue.message

    def test_label_conflict(self):
        rows = balanced_rows() + [["S002", make_text(42), 1]]
        _, report = parse(make_csv(rows))
        issue = only_error(report, "label_conflict")
        assert (issue.row, issue.participant) == (22, "S002")
        assert "'control' on line 4" in issue.message and "'impaired' on line 22" in issue.message

    def test_missing_label(self):
        rows = [[f"S{i}", make_text(i), 0] for i in range(8)]
        _, report = parse(make_csv(rows))
        issue = only_error(report, "missing_label")
        assert issue.row is None
        assert "'impaired'" in issue.message and "training" in issue.message

    def test_missing_label_when_label_only_in_test(self):
        rows = [[f"S{i}", make_text(i), i % 2, "test" if i % 2 else "train"] for i in range(8)]
        _, report = parse(make_csv(rows, header=("id", "text", "label", "split")))
        assert "'impaired'" in only_error(report, "missing_label").message


SPLIT_HEADER = ("id", "text", "label", "split")
# The same participant as "P01", written another way: case, full width, a zero-width space, a
# non-breaking or ideographic space around it.
OTHER_SPELLINGS = ["p01", " p01", "\uff30\uff10\uff11", "\u200bP01", "P01\u00a0", "\u3000p01"]


def train_rows() -> list[list]:
    """Twenty distinct train rows (S000..S019, both labels); the rows under test come after them."""
    return [row + ["train"] for row in balanced_rows()]


class TestParticipantSpellingsInTwoSplits:
    @pytest.mark.parametrize("spelling", OTHER_SPELLINGS)
    def test_csv_refused_naming_both_rows_and_spellings(self, spelling):
        rows = train_rows() + [["P01", make_text(40), 0, "train"], [spelling, make_text(41), 0, "test"]]
        _, report = parse(make_csv(rows, header=SPLIT_HEADER))
        issue = only_error(report, "participant_in_two_splits")
        written = spelling.strip()  # a cell loses its surrounding whitespace, as it always did
        assert (issue.row, issue.participant) == (23, written)
        assert issue.message.startswith("participant P01 is in 'train' on line 22 and in 'test' on line 23")
        assert (f"written {written!r} there" in issue.message) == (written != "P01")

    def test_jsonl_refused(self):
        objects = [{"id": f"S{i}", "text": make_text(i), "label": i % 2, "split": "train"} for i in range(6)]
        objects += [{"id": "P01", "text": make_text(40), "label": 0, "split": "validation"},
                    {"id": " \uff50\uff10\uff11", "text": make_text(41), "label": 0, "split": "train"}]
        _, report = parse(make_jsonl(objects), "upload.jsonl")
        issue = only_error(report, "participant_in_two_splits")
        assert (issue.row, issue.participant) == (8, "\uff50\uff10\uff11")
        assert "'validation' on line 7" in issue.message and "'train' on line 8" in issue.message

    def test_ids_stay_as_written_and_count_once(self):
        rows = train_rows() + [["P01", make_text(40), 0, "train"], ["p01", make_text(41), 0, "train"]]
        records, report = parse(make_csv(rows, header=SPLIT_HEADER))
        assert report.ok, report.errors
        assert [r.participant_id for r in records[-2:]] == ["P01", "p01"]
        assert report.stats["participants"] == 21
        issue = only_warning(report, "participant_spelling")
        assert (issue.row, issue.participant) == (23, "p01")
        assert "line 22" in issue.message and "'p01' on line 23" in issue.message

    def test_an_id_of_invisible_characters_is_missing(self):
        rows = balanced_rows()
        rows[3][0] = "\u200b\ufeff"
        _, report = parse(make_csv(rows))
        assert only_error(report, "missing_participant").row == 5


class TestParticipantSpellingsWithTwoLabels:
    def test_refused_naming_both_rows_and_spellings(self):
        rows = balanced_rows() + [["P01", make_text(40), 0], ["\uff50\uff10\uff11", make_text(41), 1]]
        _, report = parse(make_csv(rows))
        issue = only_error(report, "label_conflict")
        assert (issue.row, issue.participant) == (23, "\uff50\uff10\uff11")
        assert "'control' on line 22" in issue.message and "'impaired' on line 23" in issue.message
        assert "written '\uff50\uff10\uff11' there" in issue.message


class TestParticipantSpellingsInAssignedSplits:
    def test_spellings_of_one_participant_land_in_one_split(self):
        spellings = ["P01", "p01", "\uff30\uff10\uff11", "P01\u00a0"]
        rows = [[f"S{i:02d}", make_text(i), i % 2] for i in range(30)]
        rows += [[spelling, make_text(50 + i), 0] for i, spelling in enumerate(spellings)]
        for seed in range(30):
            records, report = parse(make_csv(rows), split_seed=seed)
            assert not report.errors, report.errors
            assert len({r.split for r in records[-4:]}) == 1, seed
        assert report.stats["participants"] == 31


class TestTranscriptInTwoSplits:
    def test_refused_naming_both_rows_and_participants(self):
        rows = train_rows()
        copy = "  " + make_text(3).upper().replace(" ", "  ").rstrip(".") + "!"
        rows.append(["T01", copy, 1, "test"])
        _, report = parse(make_csv(rows, header=SPLIT_HEADER))
        issue = only_error(report, "text_in_two_splits")
        assert (issue.row, issue.participant) == (22, "T01")
        assert issue.message.startswith(
            "line 5 (participant S003, 'train') and line 22 (participant T01, 'test') have the same text"
        )
        assert [w.code for w in report.warnings] == []

    def test_full_width_copy_is_the_same_text(self):
        rows = train_rows()
        full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in make_text(5))
        rows.append(["V01", full_width, 1, "validation"])
        _, report = parse(make_csv(rows, header=SPLIT_HEADER))
        assert only_error(report, "text_in_two_splits").row == 22

    def test_jsonl_refused(self):
        objects = [{"id": f"S{i}", "text": make_text(i), "label": i % 2, "split": "train"} for i in range(6)]
        objects.append({"id": "T01", "text": make_text(2), "label": 0, "split": "test"})
        _, report = parse(make_jsonl(objects), "upload.jsonl")
        issue = only_error(report, "text_in_two_splits")
        assert issue.message.startswith("line 3 (participant S2, 'train') and line 7")

    def test_a_short_phrase_in_two_splits_is_a_warning(self):
        rows = train_rows() + [["T01", "I don't know what else.", 0, "test"],
                               ["T02", "i DON'T know what else", 1, "train"]]
        _, report = parse(make_csv(rows, header=SPLIT_HEADER))
        assert report.ok, report.errors
        issue = only_warning(report, "duplicate_text")
        assert issue.row == 23 and "lines 22, 23" in issue.message
        assert "participants T01, T02" in issue.message and "splits 'test', 'train'" in issue.message

    def test_assigned_splits_keep_participants_sharing_a_transcript_together(self):
        rows = [[f"S{i:02d}", make_text(i), i % 2] for i in range(30)]
        rows += [["X01", make_text(7).lower(), 1], ["X02", make_text(7), 1], ["X03", "The " + make_text(7), 1]]
        for seed in range(30):
            records, report = parse(make_csv(rows), split_seed=seed)
            assert report.ok, report.errors
            split_of = {r.participant_id: r.split for r in records}
            assert split_of["S07"] == split_of["X01"] == split_of["X02"], seed


class TestTranscriptSharedInOneSplit:
    def test_two_participants_one_text_is_a_warning_naming_both(self):
        rows = train_rows() + [["T01", make_text(4) + "  ", 0, "train"]]
        _, report = parse(make_csv(rows, header=SPLIT_HEADER))
        assert report.ok, report.errors
        issue = only_warning(report, "duplicate_text")
        assert (issue.row, issue.participant) == (22, "T01")
        assert issue.message == "lines 6, 22 have the same text (participants S004, T01)"


class TestWarnings:
    def test_class_imbalance(self):
        rows = [[f"S{i}", make_text(i), int(i >= 14)] for i in range(20)]
        records, report = parse(make_csv(rows))
        issue = only_warning(report, "class_imbalance")
        assert report.ok
        assert "14 control" in issue.message and "6 impaired" in issue.message

    def test_balanced_enough_is_quiet(self):
        rows = [[f"S{i}", make_text(i), int(i >= 11)] for i in range(20)]
        _, report = parse(make_csv(rows))
        assert report.warnings == []

    def test_duplicate_text(self):
        rows = balanced_rows()
        rows[7][1] = rows[2][1].upper() + "  "
        _, report = parse(make_csv(rows))
        issue = only_warning(report, "duplicate_text")
        assert report.ok
        assert issue.row == 9 and "lines 4, 9" in issue.message

    def test_short_text(self):
        rows = balanced_rows()
        rows[1][1] = "The boy falls."
        _, report = parse(make_csv(rows))
        issue = only_warning(report, "short_text")
        assert (issue.row, issue.participant) == (3, "S001")
        assert "3 words" in issue.message and issue.message.startswith("line 3:")

    def test_long_text(self):
        rows = balanced_rows()
        rows[5][1] = " ".join(f"word{i}" for i in range(1501))
        _, report = parse(make_csv(rows))
        issue = only_warning(report, "long_text")
        assert issue.row == 7 and "1501 words" in issue.message


class TestSplitAssignment:
    def rows(self):
        return [[f"P{i:02d}", make_text(i), int(i < 12)] for i in range(32)]

    def test_stratified_by_label(self):
        records, report = parse(make_csv(self.rows()), split_seed=3)
        label_splits = report.stats["label_splits"]
        # 20 control: 3 + 3 held out (0.15 * 20 rounds to 3); 12 impaired: 2 + 2.
        assert label_splits["control"] == {"train": 14, "validation": 3, "test": 3}
        assert label_splits["impaired"] == {"train": 8, "validation": 2, "test": 2}
        assert all(r.split in SPLITS for r in records)

    def test_deterministic_for_a_seed(self):
        first, _ = parse(make_csv(self.rows()), split_seed=7)
        again, _ = parse(make_csv(self.rows()), split_seed=7)
        other, _ = parse(make_csv(self.rows()), split_seed=8)
        assert [r.split for r in first] == [r.split for r in again]
        assert [r.split for r in first] != [r.split for r in other]

    def test_row_order_does_not_matter(self):
        rows = self.rows()
        forward, _ = parse(make_csv(rows), split_seed=1)
        backward, _ = parse(make_csv(rows[::-1]), split_seed=1)
        assert {r.participant_id: r.split for r in forward} == {r.participant_id: r.split for r in backward}

    def test_never_splits_a_participant(self):
        rows = [[f"P{i % 9}", make_text(i), (i % 9) % 2] for i in range(36)]
        for seed in range(20):
            records, report = parse(make_csv(rows), split_seed=seed)
            assert report.ok, report.errors
            splits = {}
            for record in records:
                splits.setdefault(record.participant_id, set()).add(record.split)
            assert all(len(s) == 1 for s in splits.values())

    @pytest.mark.parametrize("n_per_label", [3, 4, 5])
    def test_small_labels_still_get_validation_and_test(self, n_per_label):
        records, report = parse(make_csv(balanced_rows(n_per_label)))
        for label in LABELS:
            counts = report.stats["label_splits"][label]
            assert counts["validation"] >= 1 and counts["test"] >= 1 and counts["train"] >= 1

    def test_bad_ratios_are_refused(self):
        with pytest.raises(ValueError):
            parse(make_csv(balanced_rows()), split_ratios=(0.8, 0.15, 0.15))


class TestMappingContract:
    def test_mapping_to_unknown_label_is_refused(self):
        with pytest.raises(ValueError):
            ColumnMapping(label_values={"0": "healthy"})


class TestIllustrativeExample:
    def test_example_parses_and_shows_filler_gap(self):
        records, report = parse(EXAMPLE.read_bytes(), EXAMPLE.name)
        assert report.ok, report.errors
        assert report.stats["labels"] == {"control": 60, "impaired": 60}
        assert report.stats["participants"] == 120
        control = filler_rate(r.text for r in records if r.label == "control")
        impaired = filler_rate(r.text for r in records if r.label == "impaired")
        assert impaired >= 4 * control
        assert impaired >= 8
