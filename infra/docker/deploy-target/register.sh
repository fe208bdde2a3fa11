#!/bin/sh
# The `register-target` one-shot of docker-compose (app image, root): make the `deploy-target`
# service a ready deploy target, at every `docker compose up`, idempotently.
#
# The project ports 20000-20019 are the ones docker-compose.yml publishes from the target.
# The first time it makes the deployer's key pair, authorizes the public half for root on the
# target (the shared volume), registers the server with `orchestrator servers add`, which
# stores the private half in Vault at servers/deploy-target and pins the host key the target
# published, never scanned over the network. Every time it then runs `orchestrator servers
# bootstrap`, the playbook every production server gets (a re-run changes nothing), which
# creates the orch-deploy account and authorizes the same key for it; a failed bootstrap
# leaves the server `new` with the reason (`orchestrator servers list`).
#
# Arguments go to `servers bootstrap` (e.g. --deploy-root). The defaults below are compose's;
# tests point them at a throwaway sshd.
set -eu
name=deploy-target
host="${DEPLOY_TARGET_HOST:-deploy-target}"
ssh_port="${DEPLOY_TARGET_SSH_PORT:-22}"
shared="${DEPLOY_TARGET_KEYS:-/run/deploy-target}"
init_file="${OPENBAO_INIT_FILE:-/var/lib/openbao-keys/init.json}"
ORCH_VAULT__TOKEN="$(python -m infra.stack.openbao_unseal root-token --init-file "$init_file")"
export ORCH_VAULT__TOKEN

registered() {
    orchestrator servers list --json | python -c \
        "import json, sys; sys.exit(not any(s['name'] == sys.argv[1] for s in json.load(sys.stdin)))" "$name"
}

if ! registered; then
    keys="$(mktemp -d)"
    trap 'rm -rf "$keys"' EXIT
    ssh-keygen -q -t ed25519 -N '' -C orchestrator-deployer -f "$keys/id"
    install -m 0644 "$keys/id.pub" "$shared/authorized_keys"
    orchestrator servers add "$name" --host "$host" --ssh-port "$ssh_port" --user orch-deploy \
        --host-key "$(cat "$shared/ssh_host_ed25519_key.pub")" --key-file "$keys/id" \
        --ports 20000-20019 --capacity 20 --public-host "${DEPLOY_TARGET_PUBLIC_HOST:-localhost}"
    rm -rf "$keys"
elif [ ! -s "$shared/authorized_keys" ]; then
    echo "register-target: $name is registered but its authorized key is gone (was the" \
        "deploy-target-keys volume removed?); run \`orchestrator servers remove $name --force\`" \
        "and \`docker compose up register-target\` to register it with a new key" >&2
    exit 1
fi
exec orchestrator servers bootstrap "$name" "$@"
