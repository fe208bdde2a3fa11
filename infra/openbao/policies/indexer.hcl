# indexer: writes project memory to Qdrant (local mode or a Qdrant server) and answers the
# analyst's and engineer's memory searches. On the embedded forge it reads released commits
# from git daemon with no secret; on GitHub it reads them with a read-only token of its own
# (never platform/github, the token repo and engineer push with).
path "secret/data/platform/github_read" {
  capabilities = ["read"]
}

# With an OpenAI-compatible LLM provider memory is hybrid: the indexer embeds every text it
# stores through the provider's /embeddings, with the provider key (to the HTTP client only).
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
path "secret/data/platform/nats/indexer" {
  capabilities = ["read"]
}
