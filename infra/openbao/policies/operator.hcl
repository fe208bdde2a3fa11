# operator: the CLI a person runs to register servers, set platform tokens and project secrets.
path "secret/data/servers/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}

path "secret/data/projects/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}

path "secret/data/platform/*" {
  capabilities = ["create", "read", "update", "patch", "delete"]
}

path "secret/metadata/servers/*" {
  capabilities = ["list", "read", "delete"]
}

path "secret/metadata/projects/*" {
  capabilities = ["list", "read", "delete"]
}

path "secret/metadata/platform/*" {
  capabilities = ["list", "read", "delete"]
}

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
