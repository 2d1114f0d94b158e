"""configure_logging and job_context: JSON lines that carry the job they belong to."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest

from app.logs import configure_logging, context_fields, job_context
from app.settings import Settings


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def configured(log_format: str, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(Settings(log_format=log_format, log_level=level), stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_root_logging")
class TestJsonLogs:
    def test_each_record_is_one_json_object_with_the_base_fields(self):
        stream = configured("json")
        logging.getLogger("synthaug.test").info("hello %s", "world")
        [entry] = json_lines(stream)
        assert entry["message"] == "hello world"
        assert entry["level"] == "INFO"
        assert entry["logger"] == "synthaug.test"
        ts = datetime.fromisoformat(entry["ts"])
        assert ts.utcoffset().total_seconds() == 0

    def test_job_context_fields_are_on_every_record_inside_it_only(self):
        stream = configured("json")
        log = logging.getLogger("worker.test")
        with job_context(task="finetune.run", job_id="ftjob_1", celery_task_id="c-1", attempt=2):
            log.info("claimed")
            with job_context(generation_id="gen_9", report_id=None):
                log.warning("nested")
            log.info("after nested")
        log.info("outside")
        claimed, nested, after, outside = json_lines(stream)
        assert {k: claimed[k] for k in ("task", "job_id", "celery_task_id", "attempt")} == {
            "task": "finetune.run", "job_id": "ftjob_1", "celery_task_id": "c-1", "attempt": 2,
        }
        assert nested["job_id"] == "ftjob_1" and nested["generation_id"] == "gen_9"
        assert "report_id" not in nested
        assert "generation_id" not in after and after["job_id"] == "ftjob_1"
        assert "job_id" not in outside and "task" not in outside

    def test_exception_text_is_kept(self):
        stream = configured("json")
        with job_context(job_id="ftjob_2"):
            try:
                raise ValueError("bad step")
            except ValueError:
                logging.getLogger("worker.test").exception("training failed")
        [entry] = json_lines(stream)
        assert entry["level"] == "ERROR" and entry["job_id"] == "ftjob_2"
        assert "ValueError: bad step" in entry["exc_info"] and "Traceback" in entry["exc_info"]

    def test_extra_fields_and_values_json_cannot_encode(self):
        stream = configured("json")
        logging.getLogger("x").info("with extra", extra={"step": 3, "path": object()})
        [entry] = json_lines(stream)
        assert entry["step"] == 3 and entry["path"].startswith("<object object")

    def test_threads_do_not_share_their_context(self):
        stream = configured("json")
        log = logging.getLogger("worker.test")

        def task(job_id: str, ready: threading.Barrier) -> None:
            with job_context(job_id=job_id):
                ready.wait()
                log.info("working")

        ready = threading.Barrier(2)
        threads = [threading.Thread(target=task, args=(job_id, ready)) for job_id in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(entry["job_id"] for entry in json_lines(stream)) == ["a", "b"]
        assert context_fields() == {}


@pytest.mark.usefixtures("restore_root_logging")
class TestConfigureLogging:
    def test_idempotent_one_handler_and_the_last_settings_win(self):
        configured("text")
        stream = configured("json", level="WARNING")
        ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_Handler"]
        assert len(ours) == 1
        logging.getLogger("x").info("dropped")
        logging.getLogger("x").warning("kept")
        assert [entry["message"] for entry in json_lines(stream)] == ["kept"]

    def test_text_lines_carry_the_context_as_key_value(self):
        stream = configured("text")
        with job_context(job_id="ftjob_3", task="finetune.run"):
            logging.getLogger("worker.test").info("step done")
        line = stream.getvalue().strip()
        assert line.endswith("INFO worker.test: step done job_id=ftjob_3 task=finetune.run")

    def test_library_loggers_reach_the_same_handler(self):
        stream = configured("json")
        access = logging.getLogger("uvicorn.access")
        access.addHandler(logging.NullHandler())
        access.propagate = False
        configured_again = configured("json")
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/healthz", "1.1", 200)
        assert stream.getvalue() == ""
        [entry] = json_lines(configured_again)
        assert entry["logger"] == "uvicorn.access"
        assert entry["message"] == '127.0.0.1:1 - "GET /healthz HTTP/1.1" 200'
