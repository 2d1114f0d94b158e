"""Properties of the readers, on generated input: any bytes uploaded as CSV, JSONL or CHAT give a report,
never an exception; a valid table written by the csv and json modules reads back as the records written.

Deterministic (derandomized) and bounded; ``SYNTHAUG_FUZZ_EXAMPLES`` raises the examples.
"""

from __future__ import annotations

import csv
import io
import json
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from app.domain.ingestion import READERS, SPLITS, ColumnMapping, parse_upload
from app.domain.ingestion.reader import ReadOptions, Upload
from app.domain.ingestion.records import MAX_PARTICIPANT_CHARS, NUL, SPLIT_ALIASES
from app.domain.splits import participant_key
from app.domain.validation_report import ValidationReport

EXAMPLES = int(os.environ.get("SYNTHAUG_FUZZ_EXAMPLES", "100"))
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

# Any character UTF-8 can carry but NUL (refused by design); surrogates alone cannot be encoded.
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters=NUL)
# Characters that trip table syntax, mixed in so quoting, line breaks and escapes come up often.
TRICKY = st.sampled_from(['"', ",", "\n", "\r", "\r\n", "\\", "'", "\t", " ", "\u2028", "\ufeff", "é", "日本", "😀"])
TEXT = st.lists(st.one_of(CHARS, TRICKY), min_size=1, max_size=60).map("".join)
RAW_LABELS = {"0": "control", "1": "impaired", "control": "control", "impaired": "impaired",
              " Control ": "control", "IMPAIRED": "impaired"}


def cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.upper(), word.capitalize()])


@st.composite
def rows(draw) -> list[dict[str, str]]:
    """Rows of a valid table: every cell non-blank as the reader strips it, participants unique."""
    count = draw(st.integers(1, 12))
    result = []
    for i in range(count):
        participant = f"P{i}-" + draw(TEXT).strip()
        if len(participant) > MAX_PARTICIPANT_CHARS or not participant_key(participant):
            participant = f"P{i}"
        text = draw(TEXT.filter(lambda s: s.strip()))
        result.append({
            "id": participant,
            "text": text,
            "label": draw(st.sampled_from(sorted(RAW_LABELS))),
            "split": draw(st.sampled_from(sorted(SPLIT_ALIASES)).flatmap(cased)),
            "note": draw(TEXT),
        })
    return result


def expected(table: list[dict[str, str]]) -> list[tuple]:
    """What the reader must return: cells stripped, labels and splits canonical."""
    return [(row["id"].strip(), row["text"].strip(), RAW_LABELS[row["label"]], SPLIT_ALIASES[row["split"].lower()])
            for row in table]


def read(fmt: str, data: bytes):
    report = ValidationReport()
    parsed = READERS[fmt].read(Upload(f"upload.{fmt}", data=data), ReadOptions(ColumnMapping()), report)
    return parsed, report


def as_csv(table: list[dict[str, str]], columns: list[str], line_end: str) -> bytes:
    out = io.StringIO(newline="")
    # The csv module quotes a cell holding "\r" only when "\r" is in the line terminator; spreadsheets
    # writing "\n" line ends quote every text cell, as here.
    quoting = csv.QUOTE_MINIMAL if line_end == "\r\n" else csv.QUOTE_ALL
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator=line_end, quoting=quoting)
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue().encode()


class TestRoundTrip:
    @BOUNDED
    @given(table=rows(), columns=st.permutations(["id", "text", "label", "split", "note"]),
           bom=st.booleans(), line_end=st.sampled_from(["\r\n", "\n"]))
    def test_csv_reads_back_what_was_written(self, table, columns, bom, line_end):
        data = (b"\xef\xbb\xbf" if bom else b"") + as_csv(table, columns, line_end)
        parsed, report = read("csv", data)
        assert report.ok, report.errors
        assert [(r.participant_id, r.text, r.label, r.split) for r in parsed.records] == expected(table)
        assert parsed.splits_given
        starts = [r.row for r in parsed.records]
        assert starts[0] == 2 and starts == sorted(set(starts))

    @BOUNDED
    @given(table=rows(), ascii_only=st.booleans(), int_labels=st.booleans())
    def test_jsonl_reads_back_what_was_written(self, table, ascii_only, int_labels):
        objects = [{**row, "label": int(row["label"]) if int_labels and row["label"] in ("0", "1") else row["label"]}
                   for row in table]
        data = "\n".join(json.dumps(obj, ensure_ascii=ascii_only) for obj in objects).encode()
        parsed, report = read("jsonl", data)
        assert report.ok, report.errors
        assert [(r.participant_id, r.text, r.label, r.split) for r in parsed.records] == expected(table)
        assert [r.row for r in parsed.records] == list(range(1, len(table) + 1))


def table_like(separator: str) -> st.SearchStrategy[bytes]:
    """Text shaped like a table (fields, quotes, line breaks) with anything in between."""
    syntax = st.sampled_from(['"', '""', "{", "}", "[", "null"])
    cell = st.one_of(TEXT, st.just(""), TEXT.map(lambda s: f'"{s}"'), syntax)
    line = st.lists(cell, max_size=6).map(separator.join)
    return st.lists(line, max_size=8).map("\n".join).map(str.encode)


ANY_BYTES = st.one_of(st.binary(max_size=400), TEXT.map(str.encode), table_like(","), table_like(": "))


class TestAnyInput:
    @BOUNDED
    @given(data=ANY_BYTES, fmt=st.sampled_from(["csv", "jsonl", "cha"]))
    def test_any_bytes_give_a_report_never_an_exception(self, data, fmt):
        records, report = parse_upload(data, f"upload.{fmt}", ColumnMapping(), max_bytes=1_000_000)
        if report.ok:
            assert records and all(r.split in SPLITS and r.text.strip() for r in records)
        else:
            assert report.errors and all(issue.code and issue.message for issue in report.errors)
        json.dumps(report.to_dict())

    @BOUNDED
    @given(objects=st.lists(st.dictionaries(st.sampled_from(["id", "text", "label", "split", "x"]),
                                            st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                                                         | TEXT, lambda inner: st.lists(inner, max_size=3)
                                                         | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)),
                            min_size=1, max_size=6))
    def test_any_json_values_in_the_columns_give_a_report(self, objects):
        data = "\n".join(json.dumps(obj) for obj in objects).encode()
        records, report = parse_upload(data, "upload.jsonl", ColumnMapping(), max_bytes=1_000_000)
        assert report.ok or report.errors
        json.dumps(report.to_dict())
