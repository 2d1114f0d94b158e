"""A zip of CHAT transcripts (a folder tree of ``.cha`` files) with optional metadata files.

Nothing is extracted to disk: entries are read in memory one at a time, after the whole listing passed
the safety checks (paths, links, nested archives, counts and declared sizes); sizes are counted again
while reading, since a header can lie about what an entry inflates to.
"""

import zipfile
import zlib
from pathlib import PurePosixPath

from app.domain.ingestion.chat_reader import ROW_NUMBERING, ChatFiles
from app.domain.ingestion.chat_layout import folder_split
from app.domain.ingestion.metadata import is_metadata, read_metadata
from app.domain.ingestion.reader import ArchiveLimits, Parsed, ReadOptions, Upload, decode_utf8
from app.domain.validation_report import ValidationReport

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
NESTED_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".jar")
SYMLINK_MODE = 0o120000
FILE_TYPE_MASK = 0o170000
# Written by macOS archivers beside every file; not part of the corpus.
OS_DROPPINGS = ("__MACOSX/",)
OS_DROPPED_NAMES = (".DS_Store", "Thumbs.db", "desktop.ini")
SHOWN_NAMES = 5
# What zipfile raises for a damaged archive or entry (a bad offset is a ValueError, an unknown version a
# NotImplementedError, an encrypted or damaged stream a RuntimeError or zlib.error).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
              OSError, ValueError)


class ArchiveReader:
    name = "zip"
    suffixes = (".zip",)

    def sniff(self, head: bytes) -> bool:
        return head.startswith(ZIP_MAGIC)

    def read(self, upload: Upload, options: ReadOptions, report: ValidationReport) -> Parsed | None:
        with upload.open() as stream:
            try:
                archive = zipfile.ZipFile(stream)
            except ZIP_ERRORS as exc:
                report.error("invalid_archive", f"'{upload.filename}' cannot be opened as a zip archive ({exc})")
                return None
            with archive:
                return _read_archive(archive, options, report)


def _read_archive(archive: zipfile.ZipFile, options: ReadOptions, report: ValidationReport) -> Parsed | None:
    entries = archive.infolist()
    if not _entries_are_safe(entries, options.archive, report):
        return None
    transcripts, metadata_files, ignored = _sort_entries(entries)
    report.stats.update(row_numbering=ROW_NUMBERING, rows=len(transcripts))
    if ignored:
        shown = ", ".join(ignored[:SHOWN_NAMES]) + (", …" if len(ignored) > SHOWN_NAMES else "")
        report.warn("ignored_entries", f"{len(ignored)} entries are neither .cha transcripts nor metadata "
                    f"files and were not read: {shown}")
    if not transcripts:
        report.error("no_records", "the archive holds no .cha transcripts; zip the folders of .cha files")
        return None
    budget = _Budget(options.archive.max_bytes)
    chat = ChatFiles(options.chat)
    for info in metadata_files:
        data = budget.read(archive, info, report)
        if data is None:
            return None
        text = decode_utf8(data, report, file=info.filename)
        if text is not None:
            read_metadata(info.filename, text, options.chat, report, chat.metadata)
    records = []
    for row, info in enumerate(transcripts, start=1):
        data = budget.read(archive, info, report)
        if data is None:
            return None
        text = decode_utf8(data, report, file=info.filename)
        if text is None:
            continue
        record = chat.record(info.filename, text, row, report)
        if record is not None:
            records.append(record)
    chat.finish(report)
    return _with_splits(records, [info.filename for info in transcripts], report)


def _entries_are_safe(entries: list[zipfile.ZipInfo], limits: ArchiveLimits, report: ValidationReport) -> bool:
    """Refuse the whole archive for any unsafe entry, too many files or too many declared bytes."""
    files = [info for info in entries if not info.is_dir()]
    if len(files) > limits.max_files:
        report.error("too_many_files", f"the archive holds {len(files):,} files, over the limit of "
                     f"{limits.max_files:,}; the first beyond it is '{files[limits.max_files].filename}'",
                     file=files[limits.max_files].filename)
        return False
    errors = report.error_count
    seen: set[str] = set()
    for info in entries:
        problem = _unsafe(info, seen)
        if problem is not None:
            code, why = problem
            report.error(code, f"{info.filename}: {why}; the archive is refused", file=info.filename)
        seen.add(info.filename)
    declared = 0
    for info in files:
        declared += info.file_size
        if declared > limits.max_bytes:
            report.error("archive_too_large", f"{info.filename}: with this entry the archive's files declare "
                         f"{declared:,} bytes uncompressed, over the limit of {limits.max_bytes:,}",
                         file=info.filename)
            break
    return report.error_count == errors


def _unsafe(info: zipfile.ZipInfo, seen: set[str]) -> tuple[str, str] | None:
    """(code, reason) when an entry must not be accepted."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "unsafe_path", "an absolute path"
    if ".." in parts:
        return "unsafe_path", "a path that leaves the archive's folder ('..')"
    if (info.external_attr >> 16) & FILE_TYPE_MASK == SYMLINK_MODE:
        return "symlink", "a symbolic link"
    if name.casefold().endswith(NESTED_ARCHIVES):
        return "nested_archive", "an archive inside the archive; zip the .cha files themselves"
    if info.flag_bits & 0x1:
        return "encrypted_entry", "an encrypted entry"
    if name in seen:
        return "duplicate_entry", "a second entry of the same name"
    return None


def _sort_entries(entries: list[zipfile.ZipInfo]) -> tuple[list, list, list[str]]:
    """(transcripts, metadata files) sorted by path, and the names of the entries left unread."""
    transcripts, metadata, ignored = [], [], []
    for info in sorted(entries, key=lambda i: i.filename):
        name = PurePosixPath(info.filename).name
        if info.is_dir() or info.filename.startswith(OS_DROPPINGS) or name.startswith("._") \
                or name in OS_DROPPED_NAMES:
            continue
        if name.casefold().endswith(".cha"):
            transcripts.append(info)
        elif is_metadata(info.filename):
            metadata.append(info)
        else:
            ignored.append(info.filename)
    return transcripts, metadata, ignored


class _Budget:
    """Uncompressed bytes left to read; an entry is never inflated beyond what remains (zip bombs)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.left = max_bytes

    def read(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, report: ValidationReport) -> bytes | None:
        """The entry's bytes, or None with an error naming it."""
        try:
            with archive.open(info) as entry:
                data = entry.read(min(self.left, info.file_size) + 1)
        except ZIP_ERRORS as exc:
            report.error("corrupt_entry", f"{info.filename}: the entry cannot be read ({exc}); its header may "
                         "not match its contents", file=info.filename)
            return None
        if len(data) > self.left:
            report.error("archive_too_large", f"{info.filename}: reading it takes the archive's files over the "
                         f"limit of {self.max_bytes:,} bytes uncompressed", file=info.filename)
            return None
        if len(data) > info.file_size:
            report.error("corrupt_entry", f"{info.filename}: the entry inflates to more than the {info.file_size:,} "
                         "bytes its header declares", file=info.filename)
            return None
        self.left -= len(data)
        return data


def _with_splits(records: list, paths: list[str], report: ValidationReport) -> Parsed | None:
    """Splits from train/test folders when every transcript is in one; assigned when none is."""
    in_split = [path for path in paths if folder_split(path)]
    if in_split and len(in_split) < len(paths):
        outside = next(path for path in paths if not folder_split(path))
        report.error(
            "mixed_splits",
            f"{outside}: the file is in no train/test folder while {in_split[0]} is in "
            f"'{folder_split(in_split[0])}'; put every .cha file under a split folder, or none to have "
            "splits assigned",
            file=outside,
        )
        return None
    return Parsed(records, splits_given=bool(in_split))
