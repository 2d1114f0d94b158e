"""The one interface every upload format implements, and what readers share: the upload, its options,
what a reader returns, and UTF-8 decoding with located errors."""

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from app.domain.ingestion.chat_layout import ChatOptions
from app.domain.ingestion.records import ColumnMapping, Record
from app.domain.validation_report import ValidationReport

UTF8_BOM = b"\xef\xbb\xbf"
MAX_ARCHIVE_FILES = 5000
MAX_ARCHIVE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """What a zip may hold: files (directories not counted) and uncompressed bytes in all."""

    max_files: int = MAX_ARCHIVE_FILES
    max_bytes: int = MAX_ARCHIVE_BYTES


@dataclass(frozen=True)
class ReadOptions:
    """Everything the upload form says about how to read the file; each reader uses its part."""

    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    chat: ChatOptions = field(default_factory=ChatOptions)
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


@dataclass(frozen=True)
class Upload:
    """The uploaded file, in memory or spooled to disk (a zip is read from disk, not loaded whole)."""

    filename: str
    data: bytes | None = None
    path: Path | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size

    def head(self, n: int = 512) -> bytes:
        """The first bytes, for sniffing the format."""
        with self.open() as stream:
            return stream.read(n)

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else self.path.open("rb")


@dataclass
class Parsed:
    """A reader's records; ``splits_given`` is false when splits are to be assigned."""

    records: list[Record]
    splits_given: bool


class Reader(Protocol):
    """One upload format: which names it claims, how to recognise its content, how to read it.

    ``read`` returns None when the file cannot be read at all; its problems are in the report.
    """

    name: str
    suffixes: tuple[str, ...]

    def sniff(self, head: bytes) -> bool: ...

    def read(self, upload: Upload, options: ReadOptions, report: ValidationReport) -> Parsed | None: ...


def decode_utf8(data: bytes, report: ValidationReport, *, file: str | None = None) -> str | None:
    """The text without a byte-order mark, or None with an error naming the line and offset."""
    body = data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + len(data) - len(body)
        line = data[:offset].count(b"\n") + 1
        report.error(
            "undecodable",
            f"{file_prefix(file)}line {line}: byte 0x{data[offset]:02x} at offset {offset} is not valid UTF-8; "
            "save the file as UTF-8 and upload it again",
            row=line, file=file,
        )
        return None


def file_prefix(file: str | None) -> str:
    """How messages name a file inside a multi-file upload: 'train/cc/S001.cha: '."""
    return f"{file}: " if file else ""
