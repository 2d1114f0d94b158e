"""A fake OpenAI API on loopback: files, fine-tuning jobs and chat completions, shaped like the real API.

The installed ``openai`` SDK speaks httpx2, which respx does not intercept, so tests point the real SDK
at this server (``OpenAI(api_key=fake.api_key, base_url=fake.base_url)``); a worker in another process
can reach it too. Objects carry every field the API reference marks required, errors are
``{"error": {message, type, param, code}}`` with the real status codes, and lists page with ``has_more``.

A fine-tuning job moves one tick per ``GET /fine_tuning/jobs/{id}`` (or ``fake.advance``):
validating_files → queued → running (``steps_per_tick`` steps a tick, a metrics event per step, a
checkpoint at the end of each of the last three epochs) → succeeded, or failed at ``fail_at_tick``.
Chat completions answer only models the fake's fine-tunes made (404 model_not_found otherwise) with a
text that depends only on (model, seed, messages); one word is one token.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.openai_chat import chat_completion
from tests.fakes.openai_errors import ApiError, api_error, injected_error, masked_key
from tests.fakes.openai_jobs import TERMINAL, FineTuneJobs, JobScript

FINE_TUNABLE = ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14",
                "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14")
DEFAULT_API_KEY = "sk-synthaug-fake-4c1b7e0d9a2f"
FILE_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}


@dataclass
class FakeOptions:
    """What ``running_fake_openai(**options)`` takes; ``fake.options`` may change between calls (a job
    keeps the script it was created with)."""

    api_key: str = DEFAULT_API_KEY
    models: tuple[str, ...] = FINE_TUNABLE  # base models a fine-tune may name (its own ft: models too)
    validating_ticks: int = 1  # the tick at which validating_files becomes queued
    queued_ticks: int = 1  # ticks spent queued
    steps: int = 6  # training steps of every job
    steps_per_tick: int = 1
    fail_at_tick: int | None = None  # the job fails at this tick with ``failure``
    failure: dict = field(default_factory=lambda: {
        "code": "invalid_training_file", "param": "training_file",
        "message": "The job failed due to a file format error in the training file. Invalid file format. "
                   "Example 3, message 2: 'content' must be a string."})
    advance_on_retrieve: bool = True  # False: only fake.advance() moves jobs
    chat_models: tuple[str, ...] = ()  # more models chat completions answers
    chat_any_model: bool = False  # answer every model, base models included
    chat_delay_s: float = 0.0  # how long a completion takes (later seeds answer sooner: seed % 4)
    chat_finish_reason: str | None = None  # answer this finish_reason, e.g. "content_filter"
    chat_text: Callable[[str, int | None, list[dict]], str] | None = None  # replaces the invented transcript
    clock: Callable[[], int] = field(default=lambda: int(time.time()))

    def script(self) -> JobScript:
        return JobScript(self.validating_ticks, self.queued_ticks, self.steps, self.steps_per_tick,
                         self.fail_at_tick, dict(self.failure))


@dataclass
class RecordedRequest:
    """One request as the fake saw it; ``status`` is what it answered."""

    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)  # a file part is recorded as its file name
    retry_count: int = 0  # the SDK's x-stainless-retry-count
    status: int = 0


@dataclass
class _Fault:
    method: str | None
    prefix: str
    status: int
    times: int
    headers: dict[str, str]
    body: dict


class FakeOpenAI:
    """The fake's state. Every read returns copies; every method is safe from any thread."""

    def __init__(self, options: FakeOptions):
        self.options = options
        self.base_url = ""
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._files: dict[str, tuple[dict, bytes]] = {}
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._served: set[str] = set()
        self._in_flight = 0
        self.max_in_flight = 0  # chat completions answered at once, at most
        self.jobs = FineTuneJobs(self)
        self.app = self._build_app()

    @property
    def api_key(self) -> str:
        return self.options.api_key

    # ----- what tests read and script

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path starts with ``path_prefix`` (``/v1`` may be left out)."""
        prefix = _v1(path_prefix)
        return [r for r in self.requests if r.path.startswith(prefix) and method in (None, r.method)]

    def fail_next(self, path_prefix: str, status: int, times: int = 1, retry_after_ms: int | None = None,
                  body: dict | None = None, *, retry_after_s: float | None = None, method: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with ``status`` and the real error body
        for it (or ``body``, the inner error object), with ``retry-after-ms`` / ``retry-after`` if given."""
        extra = dict(headers or {})
        if retry_after_ms is not None:
            extra["retry-after-ms"] = str(retry_after_ms)
        if retry_after_s is not None:
            extra["retry-after"] = f"{retry_after_s:g}"
        error = body or injected_error(status)
        with self._lock:
            self._faults.append(_Fault(method, _v1(path_prefix), status, times, extra, error))

    def serve(self, model: str) -> None:
        """Let chat completions answer ``model`` too."""
        with self._lock:
            self._served.add(model)

    @property
    def served_models(self) -> set[str]:
        with self._lock:
            return set(self._served) | set(self.options.chat_models)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def file(self, file_id: str) -> dict:
        with self._lock:
            return dict(self._files[file_id][0])

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self._files[file_id][1]

    def file_jsonl(self, file_id: str) -> list[dict]:
        """An uploaded JSONL file, one object per non-blank line."""
        return [json.loads(line) for line in self.file_content(file_id).decode().splitlines() if line.strip()]

    def job(self, job_id: str) -> dict:
        """A job as the API would return it, without advancing it."""
        with self._lock:
            return self.jobs.public(job_id)

    def job_ids(self) -> list[str]:
        """Every job, oldest first."""
        with self._lock:
            return list(self.jobs.by_id)

    def events(self, job_id: str) -> list[dict]:
        """A job's events, oldest first (the API lists them newest first)."""
        with self._lock:
            return [dict(e) for e in self.jobs.by_id[job_id].events]

    def checkpoints(self, job_id: str) -> list[dict]:
        """A job's checkpoints, oldest first (the API lists them newest first)."""
        with self._lock:
            return [dict(c) for c in self.jobs.by_id[job_id].checkpoints]

    def advance(self, job_id: str, ticks: int = 1) -> dict:
        with self._lock:
            for _ in range(ticks):
                self.jobs.tick(job_id)
            return self.jobs.public(job_id)

    def finish(self, job_id: str, max_ticks: int = 10_000) -> dict:
        """Advance a job until it ends (a paused job never does: ValueError)."""
        with self._lock:
            for _ in range(max_ticks):
                job = self.jobs.public(job_id)
                if job["status"] in TERMINAL:
                    return job
                if job["status"] == "paused":
                    raise ValueError(f"{job_id} is paused")
                self.jobs.tick(job_id)
        raise ValueError(f"{job_id} did not end within {max_ticks} ticks")

    def fine_tune(self, model: str = FINE_TUNABLE[0], suffix: str | None = "synthaug") -> str:
        """A succeeded fine-tune of ``model`` made without HTTP; its fine-tuned model id."""
        line = json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                        {"role": "assistant", "content": "um the boy is on the stool"}]})
        with self._lock:
            file_id = self.store_file("train.jsonl", "fine-tune", ("\n".join([line] * 10) + "\n").encode())
            job = self.jobs.create({"model": model, "training_file": file_id, "suffix": suffix})
        return self.finish(job["id"])["fine_tuned_model"]

    def client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client on the fake (``max_retries`` 0 unless given)."""
        from openai import OpenAI

        kwargs.setdefault("max_retries", 0)
        return OpenAI(api_key=kwargs.pop("api_key", self.api_key), base_url=self.base_url, **kwargs)

    # ----- what FineTuneJobs uses (the lock is held)

    def new_id(self, prefix: str) -> str:
        return prefix + hashlib.sha256(f"{prefix}{next(self._ids)}".encode()).hexdigest()[:24]

    def now(self) -> int:
        return self.options.clock()

    def stored_file(self, file_id: str) -> tuple[dict, bytes] | None:
        return self._files.get(file_id)

    def store_file(self, filename: str, purpose: str, content: bytes) -> str:
        file_id = self.new_id("file-")
        self._files[file_id] = ({"object": "file", "id": file_id, "purpose": purpose, "filename": filename,
                                 "bytes": len(content), "created_at": self.now(), "expires_at": None,
                                 "status": "processed", "status_details": None}, content)
        return file_id

    def mark_served(self, model: str) -> None:
        self._served.add(model)

    def fine_tunable(self) -> tuple[str, ...]:
        return tuple(self.options.models)

    def job_script(self) -> JobScript:
        return self.options.script()

    # ----- the HTTP side

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        job = r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)"
        routes: list[tuple[str, str, Callable]] = [
            ("POST", r"/v1/files", self._upload),
            ("GET", r"/v1/files/(?P<file_id>[^/]+)", self._get_file),
            ("GET", r"/v1/files/(?P<file_id>[^/]+)/content", self._get_file_content),
            ("DELETE", r"/v1/files/(?P<file_id>[^/]+)", self._delete_file),
            ("POST", r"/v1/fine_tuning/jobs", lambda call: (200, self.jobs.create(call.json))),
            ("GET", r"/v1/fine_tuning/jobs", lambda call: (200, self.jobs.list(call.query))),
            ("GET", job, lambda call: (200, self.jobs.retrieve(call.params["job_id"],
                                                                 self.options.advance_on_retrieve))),
            ("POST", job + r"/(?P<action>cancel|pause|resume)",
             lambda call: (200, self.jobs.act(call.params["job_id"], call.params["action"]))),
            ("GET", job + r"/events", lambda call: (200, self.jobs.list_events(call.params["job_id"], call.query))),
            ("GET", job + r"/checkpoints",
             lambda call: (200, self.jobs.list_checkpoints(call.params["job_id"], call.query))),
        ]
        compiled = [(method, re.compile(pattern + "$"), handler) for method, pattern, handler in routes]

        @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
        async def dispatch(request: Request) -> Response:
            call = await _Call.read(request)
            with self._lock:
                self._requests.append(call.record)
            try:
                self._gate(call, request)
                if call.bad_json:
                    raise api_error(400, "We could not parse the JSON body of your request. (HINT: This likely "
                                         "means you aren't using your HTTP library correctly.)")
                if call.method == "POST" and call.path == "/v1/chat/completions":
                    status, payload = await self._chat(call)
                else:
                    status, payload = self._route(compiled, call)
            except ApiError as exc:
                call.record.status = exc.status
                return JSONResponse({"error": exc.error}, exc.status, headers={**exc.headers, **self._request_id()})
            call.record.status = status
            if isinstance(payload, Response):
                return payload
            return JSONResponse(payload, status, headers=self._request_id())

        return app

    def _request_id(self) -> dict[str, str]:
        return {"x-request-id": "req_" + self.new_id("")[:16]}

    def _gate(self, call: _Call, request: Request) -> None:
        """Injected faults first, then the API key."""
        with self._lock:
            for fault in self._faults:
                if call.path.startswith(fault.prefix) and fault.method in (None, call.method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    raise ApiError(fault.status, fault.body, fault.headers)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise api_error(401, "You didn't provide an API key. You need to provide your API key in an "
                                 "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        if key != self.api_key:
            raise api_error(401, f"Incorrect API key provided: {masked_key(key)}. You can find your API key at "
                                 "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def _route(self, compiled: list, call: _Call) -> tuple[int, Any]:
        for method, pattern, handler in compiled:
            match = pattern.match(call.path)
            if match and method == call.method:
                call.params = match.groupdict()
                with self._lock:
                    return handler(call)
        raise api_error(404, f"Invalid URL ({call.method} {call.path})")

    def _upload(self, call: _Call) -> tuple[int, Any]:
        purpose, upload = call.form.get("purpose"), call.files.get("file")
        if upload is None:
            raise api_error(400, "Missing required parameter: 'file'.", param="file")
        if purpose not in FILE_PURPOSES:
            raise api_error(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose")
        return 200, self._files[self.store_file(upload[0], purpose, upload[1])][0]

    def _file_or_404(self, file_id: str) -> tuple[dict, bytes]:
        if file_id not in self._files:
            raise api_error(404, f"No such File object: {file_id}", param="id")
        return self._files[file_id]

    def _get_file(self, call: _Call) -> tuple[int, Any]:
        return 200, dict(self._file_or_404(call.params["file_id"])[0])

    def _get_file_content(self, call: _Call) -> tuple[int, Any]:
        return 200, Response(self._file_or_404(call.params["file_id"])[1], media_type="application/octet-stream")

    def _delete_file(self, call: _Call) -> tuple[int, Any]:
        self._file_or_404(call.params["file_id"])
        del self._files[call.params["file_id"]]
        return 200, {"id": call.params["file_id"], "object": "file", "deleted": True}

    async def _chat(self, call: _Call) -> tuple[int, Any]:
        body = call.json if isinstance(call.json, dict) else {}
        with self._lock:
            options = replace(self.options)
            served = self.options.chat_any_model or body.get("model") in self._served | set(options.chat_models)
            response = chat_completion(body, served, options.chat_text, options.chat_finish_reason,
                                       self.new_id("chatcmpl-"), self.now())
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if options.chat_delay_s:
                seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
                await asyncio.sleep(options.chat_delay_s / (1 + seed % 4))
        finally:
            with self._lock:
                self._in_flight -= 1
        return 200, response


@dataclass
class _Call:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    form: dict[str, str]
    files: dict[str, tuple[str, bytes]]
    record: RecordedRequest
    bad_json: bool = False
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def read(cls, request: Request) -> _Call:
        query = dict(request.query_params)
        form: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        body: Any = None
        bad_json = False
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form() as parts:
                for name, value in parts.multi_items():
                    if isinstance(value, str):
                        form[name] = value
                    else:
                        files[name] = (value.filename or "file", await value.read())
                        form[name] = value.filename or "file"
        else:
            raw = await request.body()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    bad_json = True
        retries = request.headers.get("x-stainless-retry-count", "0")
        record = RecordedRequest(request.method, request.url.path, query, body, dict(form),
                                 int(retries) if retries.isdigit() else 0)
        return cls(request.method, request.url.path, query, body, form, files, record, bad_json)


def _v1(path: str) -> str:
    return path if path.startswith("/v1") else "/v1" + (path if path.startswith("/") else "/" + path)


@contextmanager
def running_fake_openai(**options: Any) -> Iterator[FakeOpenAI]:
    """A FakeOpenAI served on a free 127.0.0.1 port by uvicorn in a background thread."""
    fake = FakeOpenAI(FakeOptions(**options))
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets whose proto says TCP, and with it on
    # each answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(fake.app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the fake OpenAI server did not start")
        time.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


__all__ = ["DEFAULT_API_KEY", "FINE_TUNABLE", "FakeOpenAI", "FakeOptions", "RecordedRequest", "running_fake_openai"]
