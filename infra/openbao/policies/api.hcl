# api: stores the secrets a user supplies for a generated service; it can write them but never
# read them back, so a compromised API cannot exfiltrate existing values.
path "secret/data/projects/*" {
  capabilities = ["create", "update"]
}

# Secret names (never values) for `GET /projects/{ref}/secrets`, and deletion of every version
# for `DELETE /projects/{ref}/secrets/{name}`; a KV v2 list or delete reads no data.
path "secret/metadata/projects/*" {
  capabilities = ["list", "delete"]
}

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Its own NATS user's password (infra/bus/credentials.py), written by the launcher at each start.
path "secret/data/platform/nats/api" {
  capabilities = ["read"]
}
