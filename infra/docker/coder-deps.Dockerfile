# The coder image's dependencies: a venv with the pinned wheels, on the debootstrap base.
#
# Built by `make coder-image` (consumers/engineer/coder_image.py), which supplies the build
# context (a wheelhouse and the requirement list) and builds with no network. The result is
# saved as a tarball keyed by this file, constraints.txt and the requirements, so a machine
# builds it once; infra/docker/coder.Dockerfile adds the agent's code on top in seconds.
# The base is a debootstrap'ed Debian bookworm with python3 (infra/docker/coder_base.sh),
# because these machines have no registry to pull an official Python image from.
ARG BASE=codegen-orchestrator/coder-base:bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    LANG=C.UTF-8

COPY wheelhouse /tmp/wheelhouse
COPY constraints.txt coder-requirements.txt /tmp/
# pip compiles the bytecode here: the containers run with a read-only root, so without it
# every test run would compile fastapi, pydantic and friends again (measured: 29 s instead of
# a few seconds for the http scaffold's two tests).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /tmp/wheelhouse \
        -c /tmp/constraints.txt -r /tmp/coder-requirements.txt \
    && rm -rf /tmp/wheelhouse /tmp/constraints.txt /tmp/coder-requirements.txt
