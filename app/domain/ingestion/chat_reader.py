"""One CHAT transcript (``.cha``, TalkBank) as one record: the chosen speaker's speech, rendered by
``app.domain.chat_transcripts``, labelled by folder, metadata file or ``@ID`` group, in that order."""

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from app.domain.chat_transcripts import ChatProblem, parse_chat
from app.domain.ingestion.chat_layout import ChatOptions, folder_split
from app.domain.ingestion.metadata import MetadataRow
from app.domain.ingestion.reader import UTF8_BOM, Parsed, ReadOptions, Upload, decode_utf8
from app.domain.ingestion.records import MAX_PARTICIPANT_CHARS, NUL, Record, warn_about_length
from app.domain.splits import participant_key
from app.domain.validation_report import ValidationReport

ROW_NUMBERING = "position of the .cha file among the upload's .cha files, sorted by path (issues name the file)"
LABEL_SOURCES = ("folder", "metadata", "@ID")
SHOWN_FILES = 5


class ChatReader:
    name = "chat"
    suffixes = (".cha",)

    def sniff(self, head: bytes) -> bool:
        return head.removeprefix(UTF8_BOM).lstrip().startswith((b"@UTF8", b"@Begin"))

    def read(self, upload: Upload, options: ReadOptions, report: ValidationReport) -> Parsed | None:
        path = PurePosixPath(upload.filename.replace("\\", "/")).name or "upload.cha"
        text = decode_utf8(upload.read_bytes(), report, file=path)
        if text is None:
            return None
        report.stats.update(row_numbering=ROW_NUMBERING, rows=1)
        chat = ChatFiles(options.chat)
        record = chat.record(path, text, 1, report)
        chat.finish(report)
        return None if record is None else Parsed([record], splits_given=False)


@dataclass
class ChatFiles:
    """The CHAT files of one upload: shared options and metadata, and what the report tallies over all files."""

    options: ChatOptions
    metadata: dict[str, MetadataRow] = field(default_factory=dict)
    label_sources: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABEL_SOURCES, 0))
    warnings: dict[str, list[tuple[str, ChatProblem]]] = field(default_factory=dict)

    def record(self, path: str, text: str, row: int, report: ValidationReport) -> Record | None:
        """The file's record, or None with its errors (each naming ``path``) in the report."""
        if (nul := text.find(NUL)) >= 0:
            line = text.count("\n", 0, nul) + 1
            report.error("nul_byte", f"{path}: line {line}: a NUL byte (\\x00), which a text cannot store; "
                         "remove it", row=line, file=path)
            return None
        chat = parse_chat(text, name=path, options=self.options.render)
        for problem in chat.errors:
            report.error(problem.code, _located(path, problem), row=problem.line, file=path)
        for problem in chat.warnings:
            self.warnings.setdefault(problem.code, []).append((path, problem))
        if chat.errors:
            return None
        errors = report.error_count
        participant = self.options.participant(path)
        if participant is None or not participant_key(participant):
            report.error("missing_participant", f"{path}: participant_pattern {self.options.participant_pattern!r} "
                         "finds no participant id in the file name", file=path)
        elif len(participant) > MAX_PARTICIPANT_CHARS:
            report.error("participant_too_long", f"{path}: the participant id has {len(participant)} characters, "
                         f"over {MAX_PARTICIPANT_CHARS}", file=path, participant=participant)
        transcript = chat.transcript.strip()
        if not transcript:
            report.error("empty_text", f"{path}: speaker {self.options.render.speaker} says nothing in this "
                         "transcript", file=path, participant=participant)
        label = self._label(path, participant, chat.id_fields.group, report)
        if report.error_count > errors:
            return None
        record = Record(row, participant, transcript, label, folder_split(path), source=path)
        warn_about_length(record, report, file=path)
        return record

    def finish(self, report: ValidationReport) -> None:
        """Tallies into the report; a warning found in many files is one warning naming the first few."""
        report.stats["label_sources"] = self.label_sources
        for code, found in self.warnings.items():
            path, problem = found[0]
            files = list(dict.fromkeys(p for p, _ in found))
            also = ""
            if len(files) > 1:
                shown = ", ".join(files[1:SHOWN_FILES]) + (", …" if len(files) > SHOWN_FILES else "")
                also = f" (and in {len(files) - 1} more files: {shown})"
            report.warn(code, _located(path, problem) + also, row=problem.line, file=path)

    def _label(self, path: str, participant: str | None, group: str | None, report: ValidationReport) -> str | None:
        """From a folder in label_map, else a metadata row for the file or participant, else the @ID group."""
        options = self.options
        found = options.folder_label(path)
        if found is not None:
            self.label_sources["folder"] += 1
            return found[0]
        keys = [participant_key(PurePosixPath(path).stem), participant_key(participant or "")]
        row = next((self.metadata[key] for key in keys if key in self.metadata), None)
        if row is not None and row.label is not None:
            self.label_sources["metadata"] += 1
            return row.label
        if row is not None and row.raw_label is not None:
            report.error(
                "unknown_label",
                f"{row.file}: line {row.line}: label {row.raw_label!r} of {path} is not in label_map "
                f"({', '.join(options.label_map)}) nor a known group; add it to label_map",
                row=row.line, file=row.file, participant=participant,
            )
            return None
        label = options.value_label(group) if group else None
        if label is not None:
            self.label_sources["@ID"] += 1
            return label
        report.error(
            "unknown_label",
            f"{path}: no label: no folder in its path is in label_map ({', '.join(options.label_map)}), no "
            f"metadata file lists it, and its @ID group {group or ''!r} is not a known group; put it in a labelled "
            "folder or list it in a metadata file",
            file=path, participant=participant,
        )
        return None


def _located(path: str, problem: ChatProblem) -> str:
    return f"{path}: line {problem.line if problem.line is not None else 'unknown'}: {problem.message}"
