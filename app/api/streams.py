"""Framing of streamed rows: JSONL, CSV and Parquet, chunk by chunk (services yield lists of plain dicts)."""

from __future__ import annotations

import csv
import io
import itertools
import json
from typing import Any, Iterable, Iterator, Sequence

import orjson

ROWS_PER_PARQUET_GROUP = 1000


def jsonl(chunks: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    """UTF-8 JSON lines, one bytes object per chunk of rows: a chunk is one write to the client."""
    for rows in chunks:
        yield b"".join([orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows])


def lines(chunks: Iterable[list[str]]) -> Iterator[bytes]:
    """Chunks of ready JSON lines (without their newlines), one bytes object per chunk."""
    for chunk in chunks:
        yield ("\n".join(chunk) + "\n").encode()


def csv_text(chunks: Iterable[list[dict[str, Any]]], columns: Sequence[str]) -> Iterator[str]:
    """CSV with a header, one string per chunk of rows; nested values (dicts, lists) as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    yield _drained(buffer)
    for rows in chunks:
        writer.writerows([["" if row.get(c) is None else _text(row[c]) for c in columns] for row in rows])
        yield _drained(buffer)


def _drained(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def parquet(
    chunks: Iterable[list[dict[str, Any]]], columns: Sequence[str], types: dict[str, str]
) -> Iterator[bytes]:
    """Parquet written one row group at a time, each handed out as soon as it is encoded.

    ``types`` maps columns to "int64", "bool" or "string" (the default); nested values become JSON text.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, {"int64": pa.int64(), "bool": pa.bool_()}.get(types.get(c, ""), pa.string())) for c in columns])
    sink = _Drain()
    with pq.ParquetWriter(sink, schema) as writer:
        group: list[dict[str, Any]] = []
        for row in itertools.chain.from_iterable(chunks):
            group.append(row)
            if len(group) == ROWS_PER_PARQUET_GROUP:
                writer.write_table(_table(pa, schema, group))
                group = []
                yield sink.take()
        if group:
            writer.write_table(_table(pa, schema, group))
    yield sink.take()


def _table(pa: Any, schema: Any, rows: list[dict[str, Any]]) -> Any:
    data = {}
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if field.type == pa.string():
            values = [None if v is None else _text(v) for v in values]
        data[field.name] = values
    return pa.Table.from_pydict(data, schema=schema)


def _text(value: Any) -> str:
    """Nested values as JSON text, other values as their str()."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value if isinstance(value, str) else str(value)


class _Drain(io.RawIOBase):
    """A write-only file that hands its bytes out as they are written."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data
