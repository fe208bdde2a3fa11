# engineer: calls the LLM provider and pushes generated code to the git host.
path "secret/data/platform/llm" {
  capabilities = ["read"]
}

# The coder's own provider key when ORCH_CODER_LLM__API_KEY_SECRET=platform/llm_coder.
path "secret/data/platform/llm_coder" {
  capabilities = ["read"]
}

path "secret/data/platform/github" {
  capabilities = ["read"]
}

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Its own NATS user's password (infra/bus/credentials.py), written by the launcher at each start.
path "secret/data/platform/nats/engineer" {
  capabilities = ["read"]
}
