# lag_exporter: reads JetStream lag and the NATS servers' monitoring; it needs no secret but
# its own NATS user's password.

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Its own NATS user's password (infra/bus/credentials.py), written by the launcher at each start.
path "secret/data/platform/nats/lag_exporter" {
  capabilities = ["read"]
}
