# analyst: turns user descriptions (the text most exposed to prompt injection) into specs. It
# reads no secret at all, so nothing it sends to a model or writes to a spec can contain one.

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
