# ops: health checks and incident handling on deploy targets over SSH.
path "secret/data/servers/*" {
  capabilities = ["read"]
}

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
