#!/bin/sh
# Start of the compose deploy target: make the SSH host key once (in its own volume), publish
# its public half in the volume `register-target` reads to pin it, then run sshd as the
# container's main process.
set -eu
key=/etc/ssh/orchestrator/host/ssh_host_ed25519_key
if [ ! -s "$key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C deploy-target -f "$key"
fi
install -m 0644 "$key.pub" /etc/ssh/orchestrator/shared/ssh_host_ed25519_key.pub
exec /usr/sbin/sshd -D -e
