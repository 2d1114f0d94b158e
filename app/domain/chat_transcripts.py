"""Read one TalkBank CHAT transcript (.cha) and render the chosen speaker's speech as plain text.

pylangacq reads the structure (headers, @Participants, @ID, utterances with their tier text); this
module only checks what pylangacq lets through silently, turns what it refuses into problems with a
line number, and renders the main-tier text of the chosen speaker (default ``PAR``; ``INV`` and
every other speaker are dropped). Utterances are joined with single spaces, one transcript a file.

``verbatim`` (default) keeps what was said, disfluencies included:

- fillers ``&-uh`` -> ``uh``; fragments and nonwords ``&+ja``, ``&~gaga`` -> ``ja``, ``gaga``
  (dropped when ``keep_fragments`` is off); events ``&=laughs``, ``&{l=laughs``/``&}l=laughs`` and
  another speaker's interposed ``&*INV:yeah`` are dropped, since none of them is this speaker's word;
- retraced words stay: ``the boy is [/] is`` -> ``the boy is is``, ``<the boy> [//] the boy`` ->
  ``the boy the boy`` (also ``[///]``, ``[/-]``, ``[/?]``); ``dog [x 3]`` -> ``dog dog dog``;
- pauses ``(.)``, ``(..)``, ``(...)``, ``(1.5)``, ``(1:05.3)`` -> ``...`` (one for a run of pauses;
  dropped with ``pauses="drop"``); a pause just before the terminator is dropped, the utterance end
  already being one, so ``...`` never fuses with the full stop;
- ``xxx``, ``yyy``, ``www`` (with or without an ``@`` marker) -> ``xxx`` (or dropped);
- ``word [: target]`` -> the word as said; every other bracketed code (``[* m]``, ``[= ...]``,
  ``[+ exc]``, ``[!]``, ``[?]``, ``[<]``, ``[% ...]``, ``[e]``) is removed; ``<...>`` keep their words;
- ``dog@o``, ``gonna@s:spa`` -> ``dog``, ``gonna``; ``0is`` (omitted word) is dropped;
  ``takin(g)`` -> ``takin`` (the sound left out was not said); ``ice+cream``, ``the_water`` ->
  ``ice cream``, ``the water``; ``wa:ter`` and ``hel^lo`` lose their prosody marks;
- terminators become one punctuation mark on the last word: ``?`` for any question terminator
  (``?``, ``+/?``, ``+..?``, ``+//?``), ``!`` for ``!``, ``.`` for the rest (``.``, ``+...``,
  ``+/.``, ``+//.``, ``+"/.``, ``+".``), so every utterance ends a sentence for the markers in
  ``app.domain.markers``; commas stay on their word; linkers (``+<``, ``+,``, ``++``, ``+"``),
  time bullets, ``‡``, ``„``, quotes and CA intonation arrows are removed.

``clean`` gives pylangacq's tokens (fillers, fragments, retraced words, pauses, unintelligible
material and omitted words gone; ``word [: target]`` -> the target, ``takin(g)`` -> ``taking``),
with the same punctuation, compound, marker and symbol rules as ``verbatim``.

Older transcripts (the ADReSS release among them) write fillers and fragments as ``&uh``,
``&ja``; pylangacq 0.23 refuses that notation, so it is rewritten first: a known filler (see
``markers.FILLERS``) becomes ``&-uh``, anything else the fragment ``&+ja``.

DementiaBank (Pitt, ADReSS) writes the MMSE in the ninth @ID field, which generic CHAT calls
education (``eng|Pitt|PAR|57;|male|ProbableAD||Participant|18||``); ``mmse_slot`` says where to look.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import pylangacq
from pydantic import BaseModel, ConfigDict, Field

from app.domain.markers import FILLERS

__all__ = ["ChatFile", "ChatProblem", "IdFields", "RenderOptions", "parse_chat"]

# Not a ".cha" name: pylangacq then skips matching @Media against the file name, which an upload
# may have renamed; the file's own name goes into our messages instead.
_SOURCE_ID = "transcript"
ID_FIELDS = 10  # language|corpus|code|age|sex|group|SES|role|education|custom|
UNINTELLIGIBLE = frozenset({"xxx", "yyy", "www"})

_BULLET = re.compile("\x15[^\x15]*\x15|\x15")
_PAUSE = re.compile(r"\((?:\.{1,3}|\d+(?::\d+)?(?:\.\d*)?)\)")  # (.) (..) (...) (1.5) (1:05.3)
# Main-tier items: a [code], a pause, the +< linker, a scope angle, a word, or a stray character.
_ITEM = re.compile(rf"\[[^\[\]]*\]|{_PAUSE.pattern}|\+<|[<>]|[^\s<>\[\]]+|\S")
_REPEAT = re.compile(r"\[x\s*(\d{1,2})\]")  # [x 3]; more than 99 is not expanded
_TERMINATOR = re.compile(r"[.?!]|\+[./\"!?]*[.?!]")
_OMITTED_SOUND = re.compile(r"\([^()]*\)")
_SYMBOLS = re.compile(r"[:^ˈˌ‡„“”‹›↑↓⇗↗→↘⇘∞≡≈≋∙⌈⌉⌊⌋∆∇°▔▁☺♋∲§∾↻〔〕…\"]")
_MAIN_LINE = re.compile(r"\*([^:\s]+):")
_OLD_AMPERSAND = re.compile(r"(?<![^\s<])&([^\W\d_][^\s<>\[\]]*)")
_MMSE = re.compile(r"(?:mmse\s*[=:]?\s*)?(\d{1,2})", re.IGNORECASE)


class RenderOptions(BaseModel):
    """How a CHAT transcript becomes text; chosen once per upload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    style: Literal["verbatim", "clean"] = Field(
        "verbatim", description="verbatim keeps disfluencies as said; clean gives pylangacq's words."
    )
    speaker: str = Field(
        "PAR", pattern=r"^[A-Za-z0-9_]{1,8}$", description="Speaker code whose utterances are kept."
    )
    keep_fragments: bool = Field(True, description="verbatim: keep word fragments (&+ja -> ja).")
    pauses: Literal["ellipsis", "drop"] = Field("ellipsis", description="verbatim: pauses as '...' or dropped.")
    unintelligible: Literal["marker", "drop"] = Field(
        "marker", description="verbatim: xxx/yyy/www as 'xxx' or dropped."
    )
    mmse_slot: Literal["education", "custom", "none"] = Field(
        "education", description="@ID field holding the MMSE: education (DementiaBank), custom, or none."
    )


@dataclass(frozen=True)
class ChatProblem:
    """One problem in a CHAT file, named by file and line (None only when no line could be found)."""

    file: str
    line: int | None
    code: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "line unknown"
        return f"{self.file}, {where}: {self.message}"


@dataclass(frozen=True)
class IdFields:
    """The chosen speaker's @ID fields that matter here."""

    group: str | None = None
    mmse: int | None = None
    age: str | None = None  # as written, years;months.days ("57;", "61;06.")
    age_years: int | None = None
    sex: str | None = None


@dataclass
class ChatFile:
    """One parsed transcript: the rendered speech of one speaker plus what the headers say."""

    name: str
    transcript: str = ""
    utterances: int = 0
    participants: list[str] = field(default_factory=list)
    id_fields: IdFields = field(default_factory=IdFields)
    errors: list[ChatProblem] = field(default_factory=list)
    warnings: list[ChatProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing blocks the file."""
        return not self.errors


class _MalformedTier(ValueError):
    """A main tier whose brackets do not pair up."""


@dataclass
class _Layout:
    """Where things are in the raw text: line numbers (1-based) found by a line-by-line scan."""

    mains: list[tuple[str, int]] = field(default_factory=list)  # (speaker, line) of each main tier
    blocks: list[tuple[int, int]] = field(default_factory=list)  # [start, end) line index of each tier
    ids: dict[str, tuple[int, list[str]]] = field(default_factory=dict)  # code -> (line, fields)
    headers: dict[str, int] = field(default_factory=dict)  # first line of each @Header
    header_end: int = 0  # line index of the first main tier (or of @End)


def parse_chat(text: str, *, name: str, options: RenderOptions | None = None) -> ChatFile:
    """Parse one CHAT transcript; problems come back in ``errors``, never as an exception."""
    options = options or RenderOptions()
    result = ChatFile(name=name)
    lines = [line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n")]
    layout = _scan(lines, result)
    if result.errors:
        return result
    lines = _rewrite_old_ampersands(lines, result)
    try:
        chat = _read("\n".join(lines))
        utterances = chat.utterances()
        participants = chat.participants()
    except BaseException as exc:  # noqa: BLE001 - a Rust panic arrives as pyo3's PanicException(BaseException)
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        message = str(exc).removeprefix(f"{_SOURCE_ID}: ")
        result.errors.append(ChatProblem(name, _locate(message, lines, layout), "chat_unreadable", message))
        return result

    result.participants = [p.code for p in participants]
    speaker = options.speaker
    _read_id(next((p for p in participants if p.code == speaker), None), layout, options, result)
    declared_at = layout.headers.get("@Participants", layout.headers.get("@Begin"))
    if speaker not in result.participants:
        result.errors.append(ChatProblem(
            name, declared_at, "chat_speaker_undeclared",
            f"speaker {speaker} is not in @Participants ({', '.join(result.participants) or 'none'})",
        ))
    spoken = [u for u in utterances if u.participant == speaker]
    tier_lines = [line for code, line in layout.mains if code == speaker]
    if len(tier_lines) != len(spoken):
        tier_lines = [None] * len(spoken)
    result.utterances = len(spoken)
    if not spoken:
        found = sorted({code for code, _ in layout.mains})
        result.errors.append(ChatProblem(
            name, declared_at, "chat_no_utterances",
            f"no main tiers by {speaker} (speakers with tiers: {', '.join(found) or 'none'})",
        ))
        return result

    rendered = []
    for utterance, line in zip(spoken, tier_lines):
        try:
            rendered.append(_render(utterance, speaker, options))
        except _MalformedTier as exc:
            result.errors.append(ChatProblem(name, line, "chat_malformed_tier", str(exc)))
    result.transcript = "" if result.errors else " ".join(part for part in rendered if part)
    if not result.transcript and not result.errors:
        result.errors.append(ChatProblem(
            name, tier_lines[0], "chat_empty_transcript", f"nothing left of {speaker}'s speech once rendered",
        ))
    return result


def _scan(lines: list[str], result: ChatFile) -> _Layout:
    """Check what pylangacq skips silently (lines it cannot read, @Begin/@End, @ID field counts)."""
    layout, name = _Layout(), result.name
    end_at = None
    for number, line in enumerate(lines, start=1):
        if end_at is not None:
            if line.strip():
                result.errors.append(ChatProblem(name, number, "chat_after_end", f"text after @End (line {end_at})"))
        elif not line.strip() or line[0] in " \t%":
            continue
        elif line.startswith("@"):
            header = line.split(":", 1)[0].split("\t", 1)[0].strip()
            layout.headers.setdefault(header, number)
            if header == "@End":
                end_at = number
            elif header == "@ID":
                _check_id_line(line, number, layout, result)
        elif line.startswith("*") and (main := _MAIN_LINE.match(line)):
            layout.mains.append((main.group(1), number))
        elif line.startswith("*"):
            result.errors.append(ChatProblem(
                name, number, "chat_unreadable_line", "main tier without a speaker code and colon ('*PAR:')",
            ))
        else:
            result.errors.append(ChatProblem(
                name, number, "chat_unreadable_line",
                "not a CHAT line (expected @Header, *SPEAKER:, %tier: or a tab-indented continuation)",
            ))
    # A tier runs from its main line to the next main tier or header (a line index range).
    boundaries = [i for i, line in enumerate(lines) if line[:1] in ("*", "@")] + [len(lines)]
    layout.blocks = [(line - 1, next(b for b in boundaries if b >= line)) for _, line in layout.mains]
    layout.header_end = layout.mains[0][1] - 1 if layout.mains else (end_at - 1 if end_at else len(lines))
    if "@Begin" not in layout.headers:
        result.errors.append(ChatProblem(name, 1, "chat_no_begin", "no @Begin line"))
    if end_at is None:
        last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=1)
        result.errors.append(ChatProblem(name, last, "chat_no_end", "no @End line (the file may be cut short)"))
    return layout


def _check_id_line(line: str, number: int, layout: _Layout, result: ChatFile) -> None:
    fields = line.split(":", 1)[1].strip().split("|") if ":" in line else []
    if fields and fields[-1] == "":
        fields = fields[:-1]
    if len(fields) < ID_FIELDS:
        result.errors.append(ChatProblem(
            result.name, number, "chat_bad_id",
            f"@ID has {len(fields)} fields, CHAT needs {ID_FIELDS} "
            "(language|corpus|code|age|sex|group|SES|role|education|custom|)",
        ))
        return
    layout.ids.setdefault(fields[2].strip(), (number, fields))


def _rewrite_old_ampersands(lines: list[str], result: ChatFile) -> list[str]:
    """Rewrite the older ``&uh``/``&ja`` notation (refused by pylangacq) on main tiers."""
    rewritten, first, in_main = [], None, False
    for number, line in enumerate(lines, start=1):
        if line[:1] not in (" ", "\t"):
            in_main = line.startswith("*")
        if in_main:
            new = _OLD_AMPERSAND.sub(_modern_ampersand, line)
            if new != line and first is None:
                first = number
            line = new
        rewritten.append(line)
    if first is not None:
        result.warnings.append(ChatProblem(
            result.name, first, "chat_old_notation", "old '&word' notation read as filler '&-' or fragment '&+'",
        ))
    return rewritten


def _modern_ampersand(match: re.Match[str]) -> str:
    word = match.group(1)
    return ("&-" if word.split("@", 1)[0].lower() in FILLERS else "&+") + word


def _read_id(participant: pylangacq.Participant | None, layout: _Layout, options: RenderOptions, result: ChatFile) -> None:
    """Fill ``id_fields`` from the speaker's @ID; a value that cannot be read is an error on that line."""
    if participant is None:
        return
    line, raw = layout.ids.get(participant.code, (None, [""] * ID_FIELDS))
    if raw[3].strip() and participant.age is None:
        result.errors.append(ChatProblem(
            result.name, line, "chat_bad_id", f"@ID age {raw[3].strip()!r} is not years;months.days",
        ))
    slot = {"education": participant.education, "custom": participant.custom}.get(options.mmse_slot)
    mmse = None
    if slot and slot.strip():
        match = _MMSE.fullmatch(slot.strip())
        if match is None or int(match.group(1)) > 30:
            result.errors.append(ChatProblem(
                result.name, line, "chat_bad_id",
                f"@ID {options.mmse_slot} field {slot.strip()!r} is not an MMSE score from 0 to 30",
            ))
        else:
            mmse = int(match.group(1))
    age = participant.age
    result.id_fields = IdFields(
        group=participant.group or None, mmse=mmse, age=raw[3].strip() or None,
        age_years=age.years if age else None, sex=participant.sex or None,
    )


def _locate(message: str, lines: list[str], layout: _Layout) -> int | None:
    """Find the line behind a pylangacq error, by re-reading the headers and each tier on its own."""
    head = lines[: layout.header_end]
    tail = message.rsplit(": ", 1)[-1]
    if _refuses("\n".join([*head, "@End"])):
        return _header_line(message, tail, head, layout)
    for start, stop in layout.blocks:
        if _refuses("\n".join([*head, *lines[start:stop], "@End"])):
            return next((i + 1 for i in range(start, stop) if tail in lines[i]), start + 1)
    return None


def _read(text: str) -> pylangacq.CHAT:
    """pylangacq's reader, %mor/%gra ignored (their alignment is no concern of ours)."""
    return pylangacq.CHAT.from_strs([text], ids=[_SOURCE_ID], parallel=False, mor_tier=None, gra_tier=None)


def _refuses(text: str) -> bool:
    try:
        _read(text)
    except Exception:  # noqa: BLE001 - any refusal is what we are looking for
        return True
    return False


def _header_line(message: str, tail: str, head: list[str], layout: _Layout) -> int | None:
    if re.search(r"participant \S+ is missing", message):
        return layout.headers.get("@Participants")
    role = re.match(r"(\S+) has @ID role", message)
    if role and role.group(1) in layout.ids:
        return layout.ids[role.group(1)][0]
    if tail != message:
        found = next((i + 1 for i, line in enumerate(head) if line.startswith("@") and tail in line), None)
        if found:
            return found
    named = re.search(r"@[A-Z][A-Za-z]*(?: [A-Z][a-z]+)?", message)
    if named and named.group(0) in layout.headers:
        return layout.headers[named.group(0)]
    return layout.headers.get("@Begin", 1)


def _render(utterance: pylangacq.Utterance, speaker: str, options: RenderOptions) -> str:
    """Render one utterance of the chosen speaker in the chosen style."""
    tier = _BULLET.sub(" ", utterance.tiers.get(speaker, ""))
    items = _ITEM.findall(tier)
    stray = next((item for item in items if item in ("[", "]")), None) or _unpaired_angles(items)
    if stray:
        raise _MalformedTier(f"unpaired '{stray}' in the main tier")
    if options.style == "clean":
        clean = RenderOptions(keep_fragments=False, pauses="drop", unintelligible="drop")
        return _render_items([token.word for token in utterance.tokens or []], clean)
    return _render_items(items, options)


def _unpaired_angles(items: list[str]) -> str | None:
    depth = 0
    for item in items:
        depth += {"<": 1, ">": -1}.get(item, 0)
        if depth < 0:
            return ">"
    return "<" if depth else None


def _render_items(items: list[str], options: RenderOptions) -> str:
    """Render main-tier items (words, codes, pauses, scopes) or pylangacq's token words as speech."""
    out: list[str] = []
    opened: list[int] = []
    last: tuple[int, int] | None = None  # the word or <group> a following [x N] repeats
    final = ""
    for item in items:
        if item == "<":
            opened.append(len(out))
        elif item == ">":
            last = (opened.pop(), len(out))
        elif item.startswith("["):
            repeat = _REPEAT.fullmatch(item)
            if repeat and last:
                out.extend(out[last[0]: last[1]] * (int(repeat.group(1)) - 1))
        elif _PAUSE.fullmatch(item):
            if options.pauses == "ellipsis" and (not out or out[-1] != "..."):
                out.append("...")
            last = None
        elif _TERMINATOR.fullmatch(item):
            final = "?" if "?" in item else "!" if item.endswith("!") else "."
        elif item.startswith("+"):
            continue  # a linker: +<, +,, ++, +", +^
        elif item == ",":
            if out and out[-1] != "..." and not out[-1].endswith(","):
                out[-1] += ","
        else:
            word = _render_word(item, options)
            last = (len(out), len(out) + 1) if word else None
            if word:
                out.append(word)
    if final:
        while out and out[-1] == "...":
            out.pop()
        if out:
            out[-1] = out[-1].rstrip(",") + final
    return " ".join(out)


def _render_word(item: str, options: RenderOptions) -> str:
    """One word as said: fillers and (optionally) fragments kept, markers and symbols removed."""
    if item.startswith("&"):
        kind, item = item[:2], item[2:]
        if kind not in ("&-", "&+", "&~") or (kind != "&-" and not options.keep_fragments):
            return ""
    elif item.startswith("0"):
        return ""
    item = item.split("@", 1)[0]
    if item.lower() in UNINTELLIGIBLE:
        return "xxx" if options.unintelligible == "marker" else ""
    item = _SYMBOLS.sub("", _OMITTED_SOUND.sub("", item))
    return " ".join(item.replace("+", " ").replace("_", " ").split())
