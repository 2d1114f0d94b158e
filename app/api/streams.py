"""Framing of streamed rows: JSONL, CSV and Parquet, chunk by chunk (services yield plain dicts)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Iterator, Sequence

ROWS_PER_PARQUET_GROUP = 1000


def jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    """CSV with a header; nested values (dicts, lists) as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    yield _drained(buffer)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _text(row[c]) for c in columns])
        yield _drained(buffer)


def _drained(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def parquet(rows: Iterable[dict[str, Any]], columns: Sequence[str], types: dict[str, str]) -> Iterator[bytes]:
    """Parquet written one row group at a time, each handed out as soon as it is encoded.

    ``types`` maps columns to "int64", "bool" or "string" (the default); nested values become JSON text.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, {"int64": pa.int64(), "bool": pa.bool_()}.get(types.get(c, ""), pa.string())) for c in columns])
    sink = _Drain()
    with pq.ParquetWriter(sink, schema) as writer:
        group: list[dict[str, Any]] = []
        for row in rows:
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
