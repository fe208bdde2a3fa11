# analyst: turns user descriptions (the text most exposed to prompt injection) into specs. It
# reads no project, server or platform secret except the LLM provider key, which goes to the
# HTTP client only: never into a prompt, a spec, an event or a log line. Besides that it reads
# only its own NATS password.
path "secret/data/platform/llm" {
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
path "secret/data/platform/nats/analyst" {
  capabilities = ["read"]
}
