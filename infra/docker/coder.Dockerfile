# The engineer's coding agent, run per task by consumers/engineer/container_coder.py.
#
# Build from the repository root (BuildKit reads coder.Dockerfile.dockerignore beside it):
#   docker build -f infra/docker/coder.Dockerfile -t codegen-orchestrator/coder:latest .
#
# At run time the engineer bind-mounts the task's checkout at /workspace and an I/O directory
# at /agent-io, runs the container as the engineer's own uid:gid (so no files end up owned by
# root), and passes the LLM settings as ORCH_LLM__* and the key (read from Vault just before
# the run) as ORCH_CODER_API_KEY. Nothing secret is baked into the image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/orchestrator
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY infra ./infra
COPY consumers ./consumers
COPY producers ./producers
RUN pip install --no-compile .

# Any uid works (the engineer passes its own); HOME must be writable for pip's cache.
ENV HOME=/tmp
WORKDIR /workspace
CMD ["python", "-m", "consumers.engineer.container_entry", "/workspace", "/agent-io"]
