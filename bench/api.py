"""API load: the distributed deployment on loopback, driven by an async HTTP client, in one run.

    python bench/api.py [--duration 60] [--rate 200] [--samples 100000] [--database-url URL] [--redis-url URL]

It empties and migrates its own Postgres database, seeds a tenant, an adapter and a corpus of
``--samples`` accepted samples (bulk-inserted), and starts uvicorn with ``--workers`` processes
serving the service's app exactly as ``synthaug serve`` builds it in distributed mode (a Celery
queue on ``--redis-url``; no worker runs, so submitted generations stay queued), plus one trivial
``GET /bare`` route on the same app and server. Then, one scenario after another:

  bare       GET /bare: the floor (uvicorn and the app's middleware; no key check, no database)
  submit     POST /generate appending to a corpus: a generation row and a Celery message
  metadata   GET /corpora/{id} of the big corpus
  samples    GET /corpora/{id}/samples, 100 a page, at random depths
  export     GET /corpora/{id}/export (jsonl) of the whole corpus, streamed, ``--exports`` times

The request scenarios are open loop: requests start at a fixed ``--rate`` whatever the answers do, and
latency counts from each request's scheduled start (a slow server is not excused by the client
waiting for it). ``--capacity`` adds a closed-loop pass per request scenario (``--concurrency`` clients
back to back) for the most requests per second. Peak memory is the summed resident memory of the
server's processes, sampled every 0.1 s. The client shares the machine with the server.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, process_tree, tree_rss_mib  # noqa: E402

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/synthaug_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/9"
PAGE = 100
WORDS = ("the boy uh is on the stool um reaching for the cookie jar and the mother is drying a plate while "
         "the water runs over the sink and the girl laughs well I think that is all").split()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="Seconds per request scenario.")
    parser.add_argument("--rate", type=float, default=200, help="Requests per second (open loop).")
    parser.add_argument("--samples", type=int, default=100_000, help="Samples in the exported corpus.")
    parser.add_argument("--exports", type=int, default=2, help="Full exports, one after another.")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes.")
    parser.add_argument("--capacity", action="store_true", help="Also measure closed-loop rps of each request scenario.")
    parser.add_argument("--concurrency", type=int, default=16, help="Clients of the closed-loop passes.")
    parser.add_argument("--connections", type=int, default=64, help="The client's connection pool.")
    parser.add_argument("--only", nargs="*", default=None, help="A subset of: bare submit metadata samples export.")
    parser.add_argument("--database-url", default=os.environ.get("SYNTHAUG_BENCH_DATABASE_URL", DEFAULT_DATABASE),
                        help="A Postgres database of its own: the benchmark empties it.")
    parser.add_argument("--redis-url", default=os.environ.get("SYNTHAUG_BENCH_REDIS_URL", DEFAULT_REDIS),
                        help="The broker; the benchmark empties this Redis database when done.")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    return parser.parse_args()


# the server: what uvicorn imports in each worker process

def bench_app():
    """The app `synthaug serve` builds in distributed mode, plus GET /bare (uvicorn --factory)."""
    from app.db.session import Database
    from app.main import create_app
    from app.settings import get_settings
    from worker.celery_app import CeleryQueue, celery_app

    settings = get_settings()
    app = create_app(settings, db=Database.of(settings, CeleryQueue(celery_app)))

    @app.get("/bare", include_in_schema=False)
    async def bare() -> dict[str, bool]:
        return {"ok": True}

    return app


@dataclass
class Seeded:
    key: str
    adapter_id: str
    corpus_id: str
    submit_corpus_id: str


def seed(database_url: str, pepper: str, samples: int, artifacts: Path) -> Seeded:
    """An empty, migrated database with a key, an adapter and a corpus of ``samples`` accepted samples."""
    from sqlalchemy import insert, text

    from app.db.migrate import upgrade
    from app.db.models import Adapter, Corpus, Dataset, FinetuneJob, Generation, Sample
    from app.db.session import Database
    from app.domain.prompts import default_prompt_set
    from app.domain.sampling import FilterSettings, SamplingParams
    from app.services import prompt_sets
    from app.services.auth import create_key

    db = Database(database_url)
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(database_url)
    params = SamplingParams().model_dump()
    with db.transaction() as s:
        tenant, key = create_key(s, "bench", pepper)
        default = prompt_sets.ensure_default(s)
        dataset = Dataset(tenant_id=tenant.id, name="bench", filename="bench.csv", column_mapping={}, report={})
        s.add(dataset)
        s.flush()
        job = FinetuneJob(tenant_id=tenant.id, dataset_id=dataset.id, prompt_set_id=default.id,
                          base_model="smollm2-135m-instruct", method="qlora", hyperparameters={}, status="succeeded")
        s.add(job)
        s.flush()
        adapter = Adapter(tenant_id=tenant.id, job_id=job.id, prompt_set_id=default.id,
                          base_model="smollm2-135m-instruct", method="qlora", path=str(artifacts / "adapter"))
        corpus = Corpus(tenant_id=tenant.id, name="export", dataset_id=dataset.id)
        submit_corpus = Corpus(tenant_id=tenant.id, name="submissions", dataset_id=dataset.id)
        s.add_all([adapter, corpus, submit_corpus])
        s.flush()
        generation = Generation(
            tenant_id=tenant.id, adapter_id=adapter.id, corpus_id=corpus.id, label=None,
            counts={"control": samples // 2, "impaired": samples - samples // 2}, n=samples, done=samples,
            candidates=samples, params=params, filters=FilterSettings().model_dump(), sampler="hf",
            status="succeeded", progress={}, rejected={})
        s.add(generation)
        s.flush()
        ids = Seeded(key, adapter.id, corpus.id, submit_corpus.id)
        generation_id = generation.id
    messages = {label: default_prompt_set().inference_messages(label) for label in ("control", "impaired")}
    rng = random.Random(0)
    started = time.perf_counter()
    for start in range(0, samples, 10_000):
        rows = []
        for i in range(start, min(start + 10_000, samples)):
            label = ("control", "impaired")[i % 2]
            words = rng.randint(40, 90)
            provenance = {"generation_id": generation_id, "adapter_id": ids.adapter_id,
                          "base_model": "smollm2-135m-instruct", "method": "qlora", "prompt_set_id": "ps_default",
                          "prompt": messages[label], "params": params, "seed": params["seed"], "sampler": "hf",
                          "label": label, "index": i, "sample_seed": 1000 + i}
            rows.append({"corpus_id": ids.corpus_id, "generation_id": generation_id, "index": i, "label": label,
                         "text": " ".join(rng.choice(WORDS) for _ in range(words)) + ".", "status": "accepted",
                         "finish_reason": "stop", "checks": {"words": words}, "provenance": provenance})
        with db.transaction() as s:
            s.execute(insert(Sample), rows)
    print(f"seeded {samples:,} samples in {time.perf_counter() - started:.0f} s", flush=True)
    db.dispose()
    return ids


class Server:
    """uvicorn with N workers in its own process group, and the peak RSS of its process tree."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uvicorn", "--factory", "api:bench_app", "--app-dir", str(ROOT / "bench"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
                   "--no-access-log", "--log-level", "warning"]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log_path.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.log_path = log_path
        self.workers = workers

    def wait_ready(self, timeout_s: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"uvicorn exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                # With --workers > 1 the parent supervises that many children; with 1 it serves itself.
                processes = self.workers + 1 if self.workers > 1 else 1
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200 and \
                        len(process_tree(self.process.pid)) >= processes:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"uvicorn not ready after {timeout_s} s:\n{self.log_path.read_text()[-3000:]}")

    def rss_mib(self) -> float:
        return tree_rss_mib(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class MemoryPeak:
    """The peak (and first and last) summed RSS of the server's processes while a scenario runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "MemoryPeak":
        self.samples.append(self.server.rss_mib())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.server.rss_mib())

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(self.server.rss_mib())


# the client

@dataclass
class Outcome:
    scenario: str
    mode: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    error_kinds: dict[str, int] = field(default_factory=dict)
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_end_mib: float = 0.0
    extra: dict = field(default_factory=dict)

    def failed(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict:
        data = asdict(self)
        del data["latencies_ms"]
        return {**data, "rps": self.rps, "p50_ms": self.percentile(0.50), "p99_ms": self.percentile(0.99),
                "max_ms": max(self.latencies_ms, default=float("nan"))}


Request = tuple[str, str, dict | None]  # method, path, JSON body


async def open_loop(client, name: str, make: callable, rate: float, duration: float, in_flight: int) -> Outcome:
    """Start a request every 1/rate s for ``duration`` s, each timed from its scheduled start.

    At most ``in_flight`` are sent at once (the client's pool); later ones wait their turn in a
    semaphore, not in httpcore's pool, whose request scan grows with the backlog and took the client's
    whole core when 6,000 requests waited there."""
    outcome = Outcome(name, f"open loop {rate:g}/s")
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.05
    turns = asyncio.Semaphore(in_flight)
    pending = []

    async def when_free(request: Request, scheduled: float) -> None:
        async with turns:
            await _one(client, request, scheduled, outcome)

    for i in range(int(rate * duration)):
        scheduled = begin + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(when_free(make(i), scheduled)))
    await asyncio.gather(*pending)
    outcome.seconds = loop.time() - begin
    return outcome


async def closed_loop(client, name: str, make: callable, concurrency: int, duration: float) -> Outcome:
    """``concurrency`` clients sending back to back for ``duration`` s."""
    outcome = Outcome(name, f"closed loop x{concurrency}")
    loop = asyncio.get_running_loop()
    begin = loop.time()
    counter = iter(range(10**9))

    async def client_loop() -> None:
        while loop.time() - begin < duration:
            await _one(client, make(next(counter)), loop.time(), outcome)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    outcome.seconds = loop.time() - begin
    return outcome


async def _one(client, request: Request, scheduled: float, outcome: Outcome) -> None:
    method, path, body = request
    outcome.requests += 1
    try:
        response = await client.request(method, path, json=body)
        await response.aread()
    except Exception as exc:  # a refused or dropped connection is an error to count, not to stop on
        outcome.failed(type(exc).__name__)
        return
    outcome.latencies_ms.append((asyncio.get_running_loop().time() - scheduled) * 1000)
    if response.status_code >= 400:
        outcome.failed(str(response.status_code))


async def export(client, corpus_id: str, expected: int) -> Outcome:
    """One full jsonl export, read as it streams: samples/s, bytes/s and time to the first byte."""
    outcome = Outcome("export", "one stream")
    loop = asyncio.get_running_loop()
    begin = loop.time()
    lines = size = 0
    first_byte = None
    outcome.requests = 1
    try:
        async with client.stream("GET", f"/corpora/{corpus_id}/export", params={"format": "jsonl"}) as response:
            if response.status_code != 200:
                outcome.failed(str(response.status_code))
            async for chunk in response.aiter_bytes():
                first_byte = first_byte or loop.time() - begin
                lines += chunk.count(b"\n")
                size += len(chunk)
    except Exception as exc:
        outcome.failed(type(exc).__name__)
    outcome.seconds = loop.time() - begin
    outcome.latencies_ms.append(outcome.seconds * 1000)
    if lines != expected and not outcome.errors:
        outcome.failed(f"{lines} lines, expected {expected}")
    outcome.extra = {"samples": lines, "bytes": size, "samples_per_s": lines / outcome.seconds,
                     "mib_per_s": size / outcome.seconds / 2**20, "first_byte_ms": (first_byte or 0) * 1000}
    return outcome


async def sample_cursors(client, corpus_id: str, pages: int) -> list[str | None]:
    """Cursors of the first ``pages`` pages, walked once, so page requests can start at any of them."""
    cursors: list[str | None] = [None]
    while len(cursors) < pages:
        response = await client.get(f"/corpora/{corpus_id}/samples", params={"limit": PAGE, "cursor": cursors[-1]}
                                    if cursors[-1] else {"limit": PAGE})
        response.raise_for_status()
        cursor = response.json().get("next_cursor")
        if not cursor:
            break
        cursors.append(cursor)
    return cursors


async def run(args: argparse.Namespace, server: Server, ids: Seeded) -> list[Outcome]:
    import httpx

    wanted = set(args.only or ["bare", "submit", "metadata", "samples", "export"])
    # A bounded pool: httpcore assigns each request by scanning every connection, and with a backlog of
    # 1000 connections that scan took the client's whole core (the server sat idle). Requests beyond it
    # wait in the client, their latency still counted from their scheduled start.
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    headers = {"Authorization": f"Bearer {ids.key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(30.0)) as client:
        cursors = await sample_cursors(client, ids.corpus_id, 200) if "samples" in wanted else [None]
        rng = random.Random(1)
        submit_body = {"adapter_id": ids.adapter_id, "label": "control", "n": 10, "corpus_id": ids.submit_corpus_id}

        def page(_i: int) -> Request:
            cursor = rng.choice(cursors)
            return "GET", f"/corpora/{ids.corpus_id}/samples?limit={PAGE}" + (f"&cursor={cursor}" if cursor else ""), None

        requests = {
            "bare": lambda _i: ("GET", "/bare", None),
            "submit": lambda _i: ("POST", "/generate", submit_body),
            "metadata": lambda _i: ("GET", f"/corpora/{ids.corpus_id}", None),
            "samples": page,
        }
        outcomes = []
        for name, make in requests.items():
            if name not in wanted:
                continue
            await open_loop(client, name, make, min(args.rate, 20), 1, args.connections)  # warm the pools
            outcomes.append(await _measured(server, open_loop(client, name, make, args.rate, args.duration,
                                                              args.connections)))
            _shown(outcomes[-1])
            if args.capacity:
                outcomes.append(await _measured(
                    server, closed_loop(client, name, make, args.concurrency, args.duration / 2)))
                _shown(outcomes[-1])
        if "export" in wanted:
            for _ in range(args.exports):
                outcomes.append(await _measured(server, export(client, ids.corpus_id, args.samples)))
                _shown(outcomes[-1])
    return outcomes


async def _measured(server: Server, scenario) -> Outcome:
    with MemoryPeak(server) as memory:
        outcome = await scenario
    outcome.rss_start_mib, outcome.rss_peak_mib, outcome.rss_end_mib = (
        memory.samples[0], max(memory.samples), memory.samples[-1])
    return outcome


def _shown(o: Outcome) -> None:
    extra = "".join(f" {k}={v:.1f}" if isinstance(v, float) else f" {k}={v}" for k, v in o.extra.items())
    print(f"measured {o.scenario} ({o.mode}): {o.requests} requests in {o.seconds:.1f} s, {o.rps:.1f} rps ok, "
          f"p50 {o.percentile(0.5):.1f} ms, p99 {o.percentile(0.99):.1f} ms, errors {o.errors} {o.error_kinds or ''}, "
          f"server RSS {o.rss_start_mib:.0f} -> peak {o.rss_peak_mib:.0f} -> {o.rss_end_mib:.0f} MiB{extra}",
          flush=True)


def main() -> None:
    args = parse_args()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    print(f"{started} UTC  {platform.node()}  {os.cpu_count()} CPUs  {cpu_model()}")
    print(f"python {platform.python_version()}  command: python {' '.join(sys.argv)}")
    print(f"uvicorn workers={args.workers} duration={args.duration:g}s rate={args.rate:g}/s samples={args.samples:,}\n",
          flush=True)
    pepper = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="synthaug-bench-api-") as tmp:
        ids = seed(args.database_url, pepper, args.samples, Path(tmp))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAUG_")}
        env.update(SYNTHAUG_ENV="test", SYNTHAUG_KEY_PEPPER=pepper, SYNTHAUG_DATABASE_URL=args.database_url,
                   SYNTHAUG_BROKER_URL=args.redis_url, SYNTHAUG_DATA_DIR=tmp,
                   SYNTHAUG_CACHE_DIR=os.environ.get("SYNTHAUG_CACHE_DIR", str(ROOT / ".cache")))
        server = Server(env, args.workers, Path(tmp) / "uvicorn.log")
        try:
            server.wait_ready()
            outcomes = asyncio.run(run(args, server, ids))
        finally:
            server.stop()
            _empty_redis(args.redis_url)
    _report(outcomes, args)


def _empty_redis(url: str) -> None:
    """Drop the queued generations' messages: nothing will ever run them."""
    import redis

    redis.Redis.from_url(url).flushdb()


def _report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print(f"\n{'scenario':<9} {'mode':<18} {'requests':>8} {'ok rps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'RSS start/peak/end MiB':>24}")
    for o in outcomes:
        rss = f"{o.rss_start_mib:.0f}/{o.rss_peak_mib:.0f}/{o.rss_end_mib:.0f}"
        print(f"{o.scenario:<9} {o.mode:<18} {o.requests:>8} {o.rps:>7.1f} {o.percentile(0.5):>7.1f} "
              f"{o.percentile(0.99):>7.1f} {o.errors:>6} {rss:>24}"
              + (f"  {o.extra['samples_per_s']:,.0f} samples/s, {o.extra['mib_per_s']:.1f} MiB/s, first byte "
                 f"{o.extra['first_byte_ms']:.0f} ms" if o.extra else ""))
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "results": [o.summary() for o in outcomes]}, indent=2))





if __name__ == "__main__":
    main()
