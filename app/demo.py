"""``synthaug demo``: the whole pipeline on the example data, embedded, through the real API."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from app.domain.markers import filler_rate
from app.main import create_app
from app.settings import Settings

EXAMPLE_CSV = Path(__file__).resolve().parents[1] / "examples" / "adress_illustrative.csv"

# A short schedule so the demo fits in minutes on two CPU cores; the API defaults are the study's
# (r 64, 10 epochs, lr 2e-4), which take hours here.
DEMO_HYPERPARAMETERS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "learning_rate": 2e-3,
    "max_steps": 70,
    "batch_size": 2,
    "max_seq_length": 128,
    "warmup_ratio": 0.1,
    "lr_scheduler": "cosine",
}
DEMO_SAMPLING: dict[str, Any] = {
    "temperature": 0.6, "top_p": 0.95, "top_k": 50, "max_tokens": 100, "seed": 7, "batch_size": 12,
}

console = Console()


def run_demo(*, samples_per_label: int, data_dir: str) -> None:
    started = time.monotonic()
    root = Path(data_dir)
    shutil.rmtree(root / "run", ignore_errors=True)
    settings = Settings(data_dir=root / "run", cache_dir=root.parent / "cache")
    from worker.local import start_embedded

    stack = start_embedded(settings)
    headers = {"Authorization": f"Bearer {stack.first_key}"}
    try:
        with TestClient(create_app(settings, db=stack.db)) as client:
            ok = _pipeline(client, headers, samples_per_label, settings)
    finally:
        stack.runner.stop()
        stack.db.dispose()
    console.print(f"\n[bold]demo finished in {time.monotonic() - started:.0f} s[/bold]")
    if not ok:
        sys.exit(1)


def _pipeline(client: TestClient, headers: dict, samples_per_label: int, settings: Settings) -> bool:
    console.rule("0. prepare the bundled base model")
    with console.status(f"{settings.default_base_model}: GGUF → safetensors (once; cached in {settings.resolved_cache_dir})"):
        from worker.models import materialize_base_model

        materialize_base_model(settings.default_base_model, settings.resolved_cache_dir)

    console.rule("1. upload the example data")
    with EXAMPLE_CSV.open("rb") as f:
        dataset = _ok(client.post("/datasets", headers=headers, files={"file": (EXAMPLE_CSV.name, f, "text/csv")}))
    stats = dataset["report"]["stats"]
    console.print(f"dataset {dataset['id']}: {dataset['record_count']} records, splits {stats['label_splits']}")
    for warning in dataset["report"]["warnings"]:
        console.print(f"[yellow]warning[/yellow] {warning['message']}")

    console.rule("2. QLoRA fine-tune (short demo schedule)")
    console.print(f"demo schedule (shorter than the study's defaults): {DEMO_HYPERPARAMETERS}")
    job = _ok(client.post("/finetune-jobs", headers=headers, json={
        "dataset_id": dataset["id"], "method": "qlora", "seed": 0, "hyperparameters": DEMO_HYPERPARAMETERS,
    }))
    job = _follow_job(client, headers, job["id"])
    if job["status"] != "succeeded":
        console.print(f"[red]fine-tune {job['status']}: {job['error']}[/red]")
        return False
    adapter = _ok(client.get(f"/adapters/{job['adapter_id']}", headers=headers))
    adapter_path = settings.resolved_artifact_dir / "jobs" / job["id"] / "adapter"
    console.print(f"adapter {adapter['id']} at {adapter_path}")

    console.rule("3. generate")
    corpus_id = None
    for label in ("control", "impaired"):
        gen = _ok(client.post("/generate", headers=headers, json={
            "adapter_id": adapter["id"], "label": label, "n": samples_per_label, "corpus_id": corpus_id,
            **DEMO_SAMPLING,
        }))
        corpus_id = gen["corpus_id"]
        gen = _follow_generation(client, headers, gen["id"], label)
        if gen["status"] != "succeeded":
            console.print(f"[red]generation {gen['status']}: {gen['error']}[/red]")
            return False

    console.rule("4. corpus")
    return _report(client, headers, dataset["id"], corpus_id, settings, adapter_path)


def _follow_job(client: TestClient, headers: dict, job_id: str) -> dict:
    seen = 0
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=None, loss="")
        while True:
            job = _ok(client.get(f"/finetune-jobs/{job_id}", headers=headers))
            events = _ok(client.get(f"/finetune-jobs/{job_id}/events", headers=headers, params={"after": seen}))["data"]
            for event in events:
                seen = event["id"]
                if event["kind"] in ("fallback", "message", "eval", "checkpoint"):
                    progress.console.print(f"  [dim]{event['kind']}[/dim] {_describe(event)}")
            loss = job["metrics"].get("loss")
            progress.update(task, total=job["total_steps"], completed=job["step"],
                            loss=f"loss {loss:.3f}" if loss is not None else "")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(1)


def _describe(event: dict) -> str:
    data = event["data"]
    if event["kind"] == "eval":
        loss = data.get("eval_loss")
        return f"epoch {data.get('epoch', 0):.2f}: validation loss " + (f"{loss:.3f}" if loss is not None else "n/a")
    if event["kind"] == "checkpoint":
        return f"step {data.get('step')} saved"
    return event["message"]


def _follow_generation(client: TestClient, headers: dict, generation_id: str, label: str) -> dict:
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"sampling {label}", total=None)
        while True:
            gen = _ok(client.get(f"/generations/{generation_id}", headers=headers))
            progress.update(task, total=gen["n"], completed=gen["done"])
            if gen["status"] in ("succeeded", "failed", "cancelled"):
                return gen
            time.sleep(1)


def _report(
    client: TestClient, headers: dict, dataset_id: str, corpus_id: str, settings: Settings, adapter_path: Path
) -> bool:
    corpus = _ok(client.get(f"/corpora/{corpus_id}", headers=headers))
    console.print(f"corpus {corpus_id}: counts per label {corpus['counts']}")
    table = Table("label", "real (train) fillers/100 words", "synthetic fillers/100 words", "synthetic n")
    synthetic: dict[str, float] = {}
    for label in ("control", "impaired"):
        real = _all(client, headers, f"/datasets/{dataset_id}/records", {"split": "train", "label": label})
        texts = [s["text"] for s in _all(client, headers, f"/corpora/{corpus_id}/samples", {"label": label})]
        synthetic[label] = filler_rate(texts)
        table.add_row(label, f"{filler_rate(r['text'] for r in real):.1f}", f"{synthetic[label]:.1f}", str(len(texts)))
        console.print(f"\n[bold]{label}[/bold] — a few synthetic transcripts:")
        for text in texts[:3]:
            console.print(f"  • {text[:300]}")
    console.print(table)
    export_path = settings.data_dir / f"{corpus_id}.jsonl"
    with client.stream("GET", f"/corpora/{corpus_id}/export", headers=headers, params={"format": "jsonl"}) as r:
        with export_path.open("w", encoding="utf-8") as out:
            for chunk in r.iter_text():
                out.write(chunk)
    console.print(f"adapter (PEFT directory): [bold]{adapter_path}[/bold]")
    console.print(f"exported corpus: [bold]{export_path.resolve()}[/bold]")
    ok = synthetic["impaired"] > 2 * max(synthetic["control"], 0.5)
    verdict = "[green]label conditioning works[/green]" if ok else "[red]label conditioning NOT shown[/red]"
    console.print(f"{verdict}: impaired {synthetic['impaired']:.1f} vs control {synthetic['control']:.1f} fillers/100 words")
    return ok


def _all(client: TestClient, headers: dict, path: str, params: dict) -> list[dict]:
    items, cursor = [], None
    while True:
        query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = _ok(client.get(path, headers=headers, params=query))
        items += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _ok(response) -> dict:
    if response.status_code >= 400:
        console.print(f"[red]{response.request.method} {response.request.url.path} → {response.status_code}: {response.text}[/red]")
        sys.exit(1)
    return response.json()
