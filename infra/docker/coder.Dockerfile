# The engineer's coding agent and test runner, run per task by consumers/engineer/container_coder.py.
#
# Built by `make coder-image` (consumers/engineer/coder_image.py), never by hand: it builds
# the dependencies image first (coder-deps.Dockerfile, cached per machine) and then this thin
# layer with the Python packages the agent imports, with no network.
#
# At run time the engineer mounts the checkout at /workspace, an I/O directory at /agent-io and
# the metering proxy's socket directory at /run/llm-proxy; the container has no network, a
# read-only root, no capabilities and an unprivileged uid. Nothing secret is baked in or passed.
ARG DEPS
FROM ${DEPS}

COPY src /opt/orchestrator
RUN python3 -m compileall -q /opt/orchestrator
ENV PATH=/opt/venv/bin:/usr/bin:/bin \
    PYTHONPATH=/opt/orchestrator \
    HOME=/tmp
USER 65534:65534
WORKDIR /workspace
CMD ["python", "-m", "consumers.engineer.container_entry", "/workspace", "/agent-io"]
