# api: stores the secrets a user supplies for a generated service; it can write them but never
# read them back, so a compromised API cannot exfiltrate existing values.
path "secret/data/projects/*" {
  capabilities = ["create", "update"]
}

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
