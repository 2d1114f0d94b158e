"""CHAT uploads through parse_upload: zips in the ADReSS and Pitt layouts, labels, splits, and every refusal."""

import struct
import zipfile
from pathlib import Path

import pytest

from app.domain.chat_transcripts import RenderOptions
from app.domain.ingestion import ArchiveLimits, ChatOptions, ColumnMapping, detect_format, parse_upload

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat"
ANIMALS = ["cat", "dog", "owl", "fox", "elk", "yak", "emu", "bat", "ant", "eel"]


def cha(i: int, group: str = "", speaker: str = "PAR") -> str:
    """A distinct, valid, invented CHAT transcript: the speaker's picture description with a filler and a pause."""
    return (
        "@UTF8\n@Begin\n@Languages:\teng\n"
        f"@Participants:\t{speaker} Participant, INV Investigator\n"
        f"@ID:\teng|Pitt|{speaker}|70;|female|{group}||Participant|||\n"
        "@ID:\teng|Pitt|INV|||||Investigator|||\n"
        "*INV:\ttell me what you see in the picture .\n"
        f"*{speaker}:\t&-uh the boy takes cookie number {i} from the jar (.) while the {ANIMALS[i % 10]} watches .\n"
        "@End\n"
    )


def make_zip(tmp_path: Path, entries: dict[str, str | bytes], name: str = "corpus.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, content in entries.items():
            archive.writestr(entry, content)
    return path


def parse(path: Path, *, chat: ChatOptions | None = None, limits: ArchiveLimits | None = None, **kwargs):
    kwargs.setdefault("max_bytes", 10_000_000)
    return parse_upload(path, path.name, ColumnMapping(), chat=chat, archive=limits, **kwargs)


def by_participant(records) -> dict:
    return {r.participant_id: r for r in records}


def codes(issues) -> list[str]:
    return [issue.code for issue in issues]


ADRESS_META_CC = "ID   ; age; gender ; mmse\nS001 ; 74 ; male ; 30\nS003 ; 62 ; female ; 29\n"
ADRESS_META_TEST = "ID   ; age; gender; Label; mmse\nS005 ; 70 ; male ; 0 ; 29\nS006 ; 72 ; female ; 1 ; 18\n"


def adress_entries() -> dict[str, str]:
    """ADReSS: train/cc, train/cd and an unlabelled test/ folder whose labels are in its metadata file."""
    return {
        "train/cc/S001.cha": cha(1), "train/cc/S003.cha": cha(3),
        "train/cd/S002.cha": cha(2), "train/cd/S004.cha": cha(4),
        "test/S005.cha": cha(5), "test/S006.cha": cha(6),
        "train/cc_meta_data.txt": ADRESS_META_CC,
        "test/meta_data_test.txt": ADRESS_META_TEST,
    }


class TestAdressLayout:
    def test_labels_from_folders_and_test_metadata_splits_from_folders(self, tmp_path):
        records, report = parse(make_zip(tmp_path, adress_entries()))
        assert report.ok, report.errors
        assert report.stats["format"] == "zip" and report.stats["split_assigned"] is False
        found = {p: (r.label, r.split, r.source) for p, r in by_participant(records).items()}
        assert found == {
            "S001": ("control", "train", "train/cc/S001.cha"), "S003": ("control", "train", "train/cc/S003.cha"),
            "S002": ("impaired", "train", "train/cd/S002.cha"), "S004": ("impaired", "train", "train/cd/S004.cha"),
            "S005": ("control", "test", "test/S005.cha"), "S006": ("impaired", "test", "test/S006.cha"),
        }
        assert report.stats["label_sources"] == {"folder": 4, "metadata": 2, "@ID": 0}

    def test_rows_number_files_in_path_order(self, tmp_path):
        records, _ = parse(make_zip(tmp_path, adress_entries()))
        assert [(r.row, r.source) for r in records] == list(enumerate(sorted(r.source for r in records), start=1))
        assert "sorted by path" in _.stats["row_numbering"]

    def test_verbatim_keeps_fillers_and_clean_drops_them(self, tmp_path):
        path = make_zip(tmp_path, adress_entries())
        verbatim, _ = parse(path)
        clean, _ = parse(path, chat=ChatOptions(render=RenderOptions(style="clean")))
        assert by_participant(verbatim)["S001"].text.startswith("uh the boy takes cookie number 1")
        assert "..." in by_participant(verbatim)["S001"].text
        assert by_participant(clean)["S001"].text == "the boy takes cookie number 1 from the jar while the dog watches."

    def test_the_fixture_transcripts_render_as_speech(self, tmp_path):
        entries = {**adress_entries(),
                   "train/cc/S007.cha": (FIXTURES / "adress_control.cha").read_bytes(),
                   "train/cd/S008.cha": (FIXTURES / "pitt_probable_ad.cha").read_bytes()}
        records, report = parse(make_zip(tmp_path, entries))
        assert report.ok, report.errors
        assert by_participant(records)["S008"].text.startswith("uh the boy is is")
        assert "chat_old_notation" in codes(report.warnings)

    def test_a_warning_in_many_files_is_reported_once(self, tmp_path):
        old = {f"train/cc/S1{i}.cha": cha(10 + i).replace("&-uh", "&uh") for i in range(3)}
        _, report = parse(make_zip(tmp_path, adress_entries() | old))
        [warning] = [w for w in report.warnings if w.code == "chat_old_notation"]
        assert (warning.file, warning.row) == ("train/cc/S10.cha", 8)
        assert warning.message.endswith("(and in 2 more files: train/cc/S11.cha, train/cc/S12.cha)")


def pitt_entries() -> dict[str, str]:
    """Pitt: Control/ and Dementia/, visits named <participant>-<visit>.cha; 001 has two visits."""
    control = {f"Control/{p:03d}-0.cha": cha(p, "Control") for p in (2, 3, 5, 7)}
    dementia = {f"Dementia/{name}.cha": cha(i, "ProbableAD")
                for i, name in enumerate(["001-0", "001-2", "004-0", "006-0", "008-1"], start=10)}
    return {**control, **dementia}


class TestPittLayout:
    def test_two_visits_are_one_participant(self, tmp_path):
        records, report = parse(make_zip(tmp_path, pitt_entries()))
        assert report.ok, report.errors
        visits = [r for r in records if r.participant_id == "001"]
        assert [r.source for r in visits] == ["Dementia/001-0.cha", "Dementia/001-2.cha"]
        assert report.stats["participants"] == 8 and report.stats["records"] == 9
        assert report.stats["split_assigned"] is True
        assert {r.label for r in visits} == {"impaired"}

    @pytest.mark.parametrize("seed", range(12))
    def test_two_visits_land_in_one_split(self, tmp_path, seed):
        records, report = parse(make_zip(tmp_path, pitt_entries()), split_seed=seed)
        assert report.ok, report.errors
        assert len({r.split for r in records if r.participant_id == "001"}) == 1
        assert {r.split for r in records} == {"train", "validation", "test"}

    def test_a_custom_participant_pattern(self, tmp_path):
        entries = {f"Control/visit-{v}-of-P{p}.cha": cha(2 * p + v, "Control") for p in range(3) for v in range(2)}
        entries |= {f"Dementia/visit-0-of-P{p}.cha": cha(20 + p, "ProbableAD") for p in range(3, 6)}
        records, report = parse(make_zip(tmp_path, entries), chat=ChatOptions(participant_pattern=r"of-(P\d+)"))
        assert report.ok, report.errors
        assert sorted({r.participant_id for r in records}) == [f"P{p}" for p in range(6)]

    def test_folders_outrank_the_id_group(self, tmp_path):
        entries = pitt_entries() | {"Control/009-0.cha": cha(30, "ProbableAD")}
        records, report = parse(make_zip(tmp_path, entries))
        assert by_participant(records)["009"].label == "control"
        assert report.stats["label_sources"]["folder"] == 10


    def test_one_participant_in_two_label_folders_names_both_files(self, tmp_path):
        _, report = parse(make_zip(tmp_path, pitt_entries() | {"Control/001-5.cha": cha(50, "Control")}))
        [issue] = report.errors
        assert (issue.code, issue.file, issue.participant) == ("label_conflict", "Dementia/001-0.cha", "001")
        assert "'control' in Control/001-5.cha and 'impaired' in Dementia/001-0.cha" in issue.message


class TestLabelsWithoutFolders:
    def test_from_the_id_group(self, tmp_path):
        groups = ["Control", "Control", "Control", "ProbableAD", "PossibleAD", "MCI", "Vascular", "Memory"]
        entries = {f"transcripts/P{i}.cha": cha(i, group) for i, group in enumerate(groups)}
        records, report = parse(make_zip(tmp_path, entries))
        assert report.ok, report.errors
        assert [r.label for r in records] == ["control"] * 3 + ["impaired"] * 5
        assert report.stats["label_sources"] == {"folder": 0, "metadata": 0, "@ID": 8}

    def test_from_a_csv_metadata_file(self, tmp_path):
        entries = {f"audio/adrso{i:03d}.cha": cha(i) for i in range(6)}
        entries["labels.csv"] = "adressfname,mmse,dx\n" + "".join(
            f"adrso{i:03d},{29 - i},{['cn', 'ad'][i % 2]}\n" for i in range(6))
        records, report = parse(make_zip(tmp_path, entries))
        assert report.ok, report.errors
        assert [r.label for r in records] == ["control", "impaired"] * 3

    def test_metadata_outranks_the_id_group(self, tmp_path):
        entries = {f"t/S{i}.cha": cha(i, "ProbableAD") for i in range(6)}
        entries["t/meta_data.txt"] = "ID ; dx\n" + "".join(f"S{i} ; {['Control', 'ProbableAD'][i % 2]}\n"
                                                          for i in range(6))
        records, report = parse(make_zip(tmp_path, entries))
        assert [r.label for r in records] == ["control", "impaired"] * 3, report.errors

    def test_a_custom_label_map(self, tmp_path):
        entries = {f"{folder}/P{i}{folder}.cha": cha(i) for i in range(3) for folder in ("hc", "ad")}
        records, report = parse(make_zip(tmp_path, entries), chat=ChatOptions(label_map={"hc": "control",
                                                                                           "ad": "impaired"}))
        assert report.ok, report.errors
        assert {r.source.split("/")[0]: r.label for r in records} == {"hc": "control", "ad": "impaired"}

    def test_no_label_anywhere_names_the_file(self, tmp_path):
        entries = pitt_entries() | {"Other/010-0.cha": cha(40, "Other")}
        records, report = parse(make_zip(tmp_path, entries))
        [issue] = [i for i in report.errors if i.code == "unknown_label"]
        assert issue.file == "Other/010-0.cha" and "'Other'" in issue.message
        assert issue.message.startswith("Other/010-0.cha: ")

    def test_an_unmapped_metadata_label_names_the_metadata_line(self, tmp_path):
        entries = {"t/S1.cha": cha(1), "t/S2.cha": cha(2), "labels.csv": "id,label\nS1,control\nS2,unsure\n"}
        _, report = parse(make_zip(tmp_path, entries))
        [issue] = [i for i in report.errors if i.code == "unknown_label"]
        assert (issue.file, issue.row) == ("labels.csv", 3)
        assert "'unsure'" in issue.message and "t/S2.cha" in issue.message

    def test_a_table_without_an_id_column_is_not_metadata(self, tmp_path):
        entries = pitt_entries() | {"notes/meta.csv": "\nname,mmse\nx,30\n"}
        _, report = parse(make_zip(tmp_path, entries))
        assert report.ok, report.errors
        [issue] = report.warnings
        assert (issue.code, issue.file, issue.row) == ("metadata_columns", "notes/meta.csv", 2)


class TestSingleChatFile:
    def test_one_transcript_is_one_record_but_cannot_train_alone(self):
        data = (FIXTURES / "pitt_probable_ad.cha").read_bytes()
        records, report = parse_upload(data, "001-0.cha", ColumnMapping(), max_bytes=100_000)
        assert report.stats["format"] == "chat"
        [record] = records
        assert (record.participant_id, record.label, record.source) == ("001", "impaired", "001-0.cha")
        assert record.text.startswith("uh the boy is is")
        # Label-conditioned training needs both labels: one file alone is refused, naming why.
        assert codes(report.errors) == ["missing_label"]

    def test_recognised_by_content_whatever_its_name(self):
        data = (FIXTURES / "adress_control.cha").read_bytes()
        records, report = parse_upload(data, "S900.txt", ColumnMapping(), max_bytes=100_000)
        assert report.stats["format"] == "chat"
        assert [(r.participant_id, r.label) for r in records] == [("S900", "control")]

    def test_a_malformed_file_is_named_with_its_lines(self):
        data = (FIXTURES / "malformed.cha").read_bytes()
        records, report = parse_upload(data, "broken.cha", ColumnMapping(), max_bytes=100_000)
        assert records == [] and report.errors
        assert all(i.file == "broken.cha" and i.row and i.message.startswith(f"broken.cha: line {i.row}: ")
                   for i in report.errors), report.errors


class TestDetection:
    @pytest.mark.parametrize(("filename", "head", "fmt"), [
        ("corpus.zip", b"", "zip"),
        ("upload", b"PK\x03\x04rest", "zip"),
        ("S001.cha", b"", "chat"),
        ("transcript.txt", b"\xef\xbb\xbf@UTF8\n@Begin\n", "chat"),
        ("data.csv", b"PK\x03\x04", "csv"),
        ("data.xlsx", b"id,text,label", None),
    ])
    def test_by_name_then_content(self, filename, head, fmt):
        assert detect_format(filename, head) == fmt


def lie_about_size(path: Path, entry: str, declared: int) -> None:
    """Set ``entry``'s uncompressed size to ``declared`` in its local and central headers, as a zip bomb would."""
    data, name = bytearray(path.read_bytes()), entry.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = data.find(signature)
        while data[at + name_at: at + name_at + len(name)] != name:
            at = data.find(signature, at + 1)
        struct.pack_into("<I", data, at + size_at, declared)
    path.write_bytes(bytes(data))


class TestRefusals:
    @pytest.mark.parametrize(("entry", "code"), [
        ("/etc/cron.d/S009.cha", "unsafe_path"),
        ("C:/Users/S009.cha", "unsafe_path"),
        ("train/../../S009.cha", "unsafe_path"),
        ("train/cc/inner.zip", "nested_archive"),
        ("train/cc/more.tar.gz", "nested_archive"),
    ])
    def test_unsafe_entry_refuses_the_archive(self, tmp_path, entry, code):
        records, report = parse(make_zip(tmp_path, adress_entries() | {entry: b"PK\x03\x04"}))
        assert records == []
        [issue] = report.errors
        assert (issue.code, issue.file) == (code, entry) and issue.message.startswith(entry)

    def test_symlink(self, tmp_path):
        path = make_zip(tmp_path, adress_entries())
        with zipfile.ZipFile(path, "a") as archive:
            link = zipfile.ZipInfo("train/cc/S009.cha")
            link.external_attr = 0o120777 << 16
            archive.writestr(link, "/etc/passwd")
        records, report = parse(path)
        assert records == [] and [(i.code, i.file) for i in report.errors] == [("symlink", "train/cc/S009.cha")]

    def test_too_many_files_names_the_first_beyond(self, tmp_path):
        records, report = parse(make_zip(tmp_path, adress_entries()), limits=ArchiveLimits(max_files=7))
        [issue] = report.errors
        assert records == [] and issue.code == "too_many_files"
        assert issue.file == "test/meta_data_test.txt" and "8 files" in issue.message

    def test_too_many_declared_bytes(self, tmp_path):
        entries = adress_entries()
        total = sum(len(text.encode()) for text in entries.values())
        records, report = parse(make_zip(tmp_path, entries), limits=ArchiveLimits(max_bytes=total - 1))
        [issue] = report.errors
        assert records == [] and issue.code == "archive_too_large" and issue.file == "test/meta_data_test.txt"

    def test_a_header_that_lies_about_the_size(self, tmp_path):
        entries = adress_entries() | {"train/cc/S009.cha": "a" * 1_000_000}
        path = make_zip(tmp_path, entries)
        lie_about_size(path, "train/cc/S009.cha", 100)
        records, report = parse(path, limits=ArchiveLimits(max_bytes=50_000))
        [issue] = report.errors
        assert records == [] and (issue.code, issue.file) == ("corrupt_entry", "train/cc/S009.cha")

    def test_a_malformed_transcript_is_named_with_its_lines(self, tmp_path):
        entries = adress_entries() | {"train/cd/S009.cha": (FIXTURES / "malformed.cha").read_bytes()}
        records, report = parse(make_zip(tmp_path, entries))
        assert report.errors and all(i.file == "train/cd/S009.cha" for i in report.errors)
        assert all(i.row and i.message.startswith(f"train/cd/S009.cha: line {i.row}: ") for i in report.errors)
        assert "S009" not in {r.participant_id for r in records}

    def test_an_undecodable_transcript(self, tmp_path):
        entries = adress_entries() | {"train/cd/S009.cha": cha(9).encode().replace(b"jar", b"j\xe9r")}
        _, report = parse(make_zip(tmp_path, entries))
        [issue] = report.errors
        assert (issue.code, issue.file, issue.row) == ("undecodable", "train/cd/S009.cha", 8)

    def test_splits_in_some_folders_only(self, tmp_path):
        entries = adress_entries() | {"extra/cc/S009.cha": cha(9)}
        _, report = parse(make_zip(tmp_path, entries))
        [issue] = report.errors
        assert (issue.code, issue.file) == ("mixed_splits", "extra/cc/S009.cha")

    def test_not_a_zip(self, tmp_path):
        path = tmp_path / "corpus.zip"
        path.write_bytes(b"PK\x03\x04 but nothing more")
        _, report = parse(path)
        assert codes(report.errors) == ["invalid_archive"]

    def test_no_transcripts(self, tmp_path):
        _, report = parse(make_zip(tmp_path, {"README": "nothing here", "notes/a.doc": "x"}))
        assert codes(report.errors) == ["no_records"]
        assert codes(report.warnings) == ["ignored_entries"]


class TestTolerated:
    def test_macos_droppings_are_skipped_silently(self, tmp_path):
        entries = adress_entries() | {"__MACOSX/train/cc/._S001.cha": b"\x00\x05\x16\x07", "train/.DS_Store": b"\x00"}
        records, report = parse(make_zip(tmp_path, entries))
        assert report.ok and report.warnings == [], (report.errors, report.warnings)
        assert len(records) == 6

    def test_other_files_are_ignored_with_a_warning(self, tmp_path):
        records, report = parse(make_zip(tmp_path, adress_entries() | {"train/cc/S001.mp3": b"ID3"}))
        assert report.ok and len(records) == 6
        [warning] = report.warnings
        assert warning.code == "ignored_entries" and "train/cc/S001.mp3" in warning.message
