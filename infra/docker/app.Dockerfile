# One image for every orchestrator process (consumers, producers, migrations, Vault bootstrap);
# the process is chosen by the command, e.g. `python -m consumers.coordinator`.
# Built from the repository root by `make app-image` (tag codegen-orchestrator:local), or
# `docker compose build`. Every dependency is installed at the version constraints.txt pins,
# the versions the test suite runs, so two builds of one commit get the same packages.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, so a source change does not reinstall them.
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir -p contracts infra producers consumers \
    && touch contracts/__init__.py infra/__init__.py producers/__init__.py consumers/__init__.py \
    && python -m venv /opt/orchestrator \
    && /opt/orchestrator/bin/pip install -c constraints.txt . \
    && /opt/orchestrator/bin/pip uninstall -y codegen-orchestrator
COPY contracts ./contracts
COPY infra ./infra
COPY producers ./producers
COPY consumers ./consumers
RUN /opt/orchestrator/bin/pip install --no-deps -c constraints.txt .

FROM python:3.11-slim

# git: the repo and engineer steps clone and push, and the compose forge serves the repositories
# with `git daemon`; openssh-client: Ansible reaches servers over SSH (and ssh-keygen makes the
# compose deploy target's key); bubblewrap and libseccomp2: the engineer's sandbox for
# model-written code and its seccomp filter
# (consumers/engineer/sandbox/). The two directories are mount points of named volumes, which
# Docker creates with the owner and mode of the directory in the image: the forge's
# repositories, and OpenBao's unseal key and root token (docker-compose.yml).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates bubblewrap libseccomp2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 orchestrator \
    && install -d -o orchestrator -g orchestrator -m 0700 /srv/git /var/lib/openbao-keys
COPY --from=build /opt/orchestrator /opt/orchestrator
ENV PATH=/opt/orchestrator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORCH_METRICS__HOST=0.0.0.0 \
    ORCH_METRICS__PORT=9100
USER orchestrator
WORKDIR /home/orchestrator
EXPOSE 9100
CMD ["orchestrator", "--help"]
