# The deploy target of docker-compose: a Debian machine the deployer reaches over SSH, as it
# reaches a real server. Built from local files on the app image's base (no other registry
# image) by `make app-image` or `docker compose build`.
#
# It carries what `orchestrator servers bootstrap` (infra/ansible/prepare_server.yml) expects
# to find, so bootstrapping it needs no network: Debian's python3 with venv, sudo and acl for
# Ansible's become, git for the releases, nftables for the orchestrator's table, dpkg's
# start-stop-daemon. The deploy account itself is made by that playbook, run by the
# `register-target` one-shot at every `docker compose up` (idempotent), the same path every
# production server takes.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        openssh-server sudo acl python3 python3-venv git nftables ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/ssh/ssh_host_* \
    && install -d -m 0755 /run/sshd /etc/ssh/orchestrator /etc/ssh/orchestrator/shared \
    && install -d -m 0700 /etc/ssh/orchestrator/host
COPY infra/docker/deploy-target/sshd_config /etc/ssh/sshd_config
# start.sh is executable in git, and COPY keeps the mode.
COPY infra/docker/deploy-target/start.sh /usr/local/sbin/deploy-target
EXPOSE 22
ENTRYPOINT ["/usr/local/sbin/deploy-target"]
