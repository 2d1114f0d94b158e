"""Concurrent readers of one dataset (GET /datasets/{id}) on the embedded SQLite default and on Postgres.

    flock /tmp/synthaug-cpu.lock .venv/bin/python bench/readers.py --seconds 10 --clients 10 50 \\
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/bench]

For each database, the API runs in its own uvicorn process on loopback (one worker, the settings'
defaults: the production pool sizes and timeouts, no job runner), one dataset is uploaded, and N
clients (async httpx, one connection each) read it back-to-back for the given seconds. It prints
requests/s, p50 and p99 latency of the answered requests, and every error by status or exception.
Not a test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.db.session import Database  # noqa: E402
from app.services.auth import create_key  # noqa: E402
from app.settings import Settings  # noqa: E402

EXAMPLE_CSV = ROOT / "examples" / "adress_illustrative.csv"


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_api(env: dict[str, str], port: int) -> subprocess.Popen:
    """The app factory under uvicorn in a process of its own, answering /healthz."""
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env={**os.environ, **env},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not start")


async def read_for(base_url: str, path: str, headers: dict[str, str], clients: int, seconds: float) -> Result:
    result = Result()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=clients)) as client:
        async def loop() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.get(path)
                except httpx.HTTPError as error:
                    result.errors[type(error).__name__] += 1
                    continue
                if response.status_code == 200:
                    result.latencies.append(time.perf_counter() - started)
                else:
                    result.errors[str(response.status_code)] += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def bench(name: str, database_url: str | None, data_dir: Path, clients: list[int], seconds: float) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {"SYNTHAUG_DATA_DIR": str(data_dir), "SYNTHAUG_ENV": "dev"}
    if database_url:
        env["SYNTHAUG_DATABASE_URL"] = database_url
    settings = Settings(data_dir=data_dir, database_url=database_url, env="dev")
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    with db.transaction() as session:
        _tenant, key = create_key(session, f"bench-{time.time_ns()}", settings.key_pepper.get_secret_value())
    db.dispose()
    port = free_port()
    process = start_api(env, port)
    try:
        base_url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        upload = httpx.post(f"{base_url}/datasets", headers=headers, timeout=60,
                            files={"file": (EXAMPLE_CSV.name, EXAMPLE_CSV.read_bytes())})
        upload.raise_for_status()
        path = f"/datasets/{upload.json()['id']}"
        asyncio.run(read_for(base_url, path, headers, 4, 1.0))  # warm-up, not counted
        for n in clients:
            result = asyncio.run(read_for(base_url, path, headers, n, seconds))
            answered = len(result.latencies)
            errors = ", ".join(f"{kind}: {count}" for kind, count in result.errors.most_common()) or "0"
            print(f"{name:9} clients={n:<4} answered={answered:<7} rps={answered / seconds:8.1f}  "
                  f"p50={percentile(result.latencies, 0.5) * 1000:7.1f} ms  "
                  f"p99={percentile(result.latencies, 0.99) * 1000:7.1f} ms  errors={errors}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="Seconds each client count reads for.")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50], help="Concurrent clients, in turn.")
    parser.add_argument("--postgres-url", help="A Postgres database to migrate and use; omit to skip Postgres.")
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, {args.seconds:g} s per run, uvicorn 1 worker")
    with tempfile.TemporaryDirectory(prefix="synthaug-bench-") as folder:
        bench("sqlite", None, Path(folder) / "sqlite", args.clients, args.seconds)
        if args.postgres_url:
            bench("postgres", args.postgres_url, Path(folder) / "postgres", args.clients, args.seconds)


if __name__ == "__main__":
    main()
