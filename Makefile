# Two entry points do all set-up on a fresh Debian machine (Python 3.11, root):
#   make demo   the whole pipeline end to end on this machine, offline unless an LLM is configured
#   make test   lint, types, import layers and the full test suite against real servers
# Both install what they need (Debian packages, the venv, pinned wheels) and are idempotent.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := git openssh-server openssh-client postgresql-15 prometheus docker-compose \
	docker.io busybox-static sudo acl bubblewrap libseccomp2 debootstrap prometheus-alertmanager nftables
STAMP_APT := $(VENV)/.apt-$(shell echo $(DEBIAN_PACKAGES) | md5sum | cut -c1-8)
STAMP_PIP := $(VENV)/.pip-$(shell cat pyproject.toml constraints.txt | md5sum | cut -c1-8)

.PHONY: setup demo up test lint bench coder-image app-image

$(STAMP_APT):
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES) >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): $(STAMP_APT)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

# Bytecode for our own packages, brought up to date at every run (a no-op when it is): pip
# compiles what it installs, but the editable install leaves our sources to each process, and
# where PYTHONDONTWRITEBYTECODE is set (CI's machines set it) every CLI call, stack and test
# worker would compile them again at import (about 0.15 s of CPU each).
setup: $(STAMP_PIP)
	@$(BIN)/python -m compileall -q -j 0 producers infra consumers contracts >/dev/null

demo: setup
	$(BIN)/orchestrator demo

up: setup
	$(BIN)/orchestrator up

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Three workers (pytest-xdist), a test file each at a time, in the order tests/conftest.py gives
# (heaviest folders first; xdist's own, most tests first, left the longest e2e files for last).
# Much of an e2e test is waiting on its stack: two workers kept the two cores about 66% busy
# (11:54 with three against 14:59 with two, same code, same machine). Four were hardly faster
# (11:35) and loaded the machine further. Port ranges are split between the workers
# (tests/ports.py).
test: lint
	$(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadfile --no-loadscope-reorder --durations=30

bench: setup
	$(BIN)/python bench/runtime_throughput.py

# The coding agent's image for ORCH_ENGINEER_MODE=container, built against DOCKER_HOST (default
# the local engine) from a debootstrap base and pinned wheels; cached in ~/.cache, no registry.
coder-image: setup
	$(BIN)/python -m consumers.engineer.coder_image

# The images of docker-compose.yml, from local files only: the orchestrator's
# (codegen-orchestrator:local, every dependency at its constraints.txt version) and the deploy
# target's. Needs a Docker engine, not the venv. `docker compose up` then uses them as built.
APP_IMAGE ?= codegen-orchestrator:local
DEPLOY_TARGET_IMAGE ?= codegen-orchestrator-deploy-target:local
app-image:
	docker build -f infra/docker/app.Dockerfile -t $(APP_IMAGE) .
	docker build -f infra/docker/deploy-target.Dockerfile -t $(DEPLOY_TARGET_IMAGE) .
