# One image for every orchestrator process (consumers, producers, migrations, Vault bootstrap);
# the process is chosen by the command, e.g. `python -m consumers.coordinator`.
# Built from the repository root: docker build -f infra/docker/app.Dockerfile .
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, so a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p contracts infra producers consumers \
    && touch contracts/__init__.py infra/__init__.py producers/__init__.py consumers/__init__.py \
    && python -m venv /opt/orchestrator \
    && /opt/orchestrator/bin/pip install . \
    && /opt/orchestrator/bin/pip uninstall -y codegen-orchestrator
COPY contracts ./contracts
COPY infra ./infra
COPY producers ./producers
COPY consumers ./consumers
RUN /opt/orchestrator/bin/pip install --no-deps .

FROM python:3.11-slim

# git: the repo and engineer steps clone and push; openssh-client: Ansible reaches servers over SSH.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 orchestrator
COPY --from=build /opt/orchestrator /opt/orchestrator
ENV PATH=/opt/orchestrator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORCH_METRICS__HOST=0.0.0.0 \
    ORCH_METRICS__PORT=9100
USER orchestrator
WORKDIR /home/orchestrator
EXPOSE 9100
CMD ["orchestrator", "--help"]
