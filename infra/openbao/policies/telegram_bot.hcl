# telegram_bot: talks to the Telegram Bot API with the bot token.
path "secret/data/platform/telegram" {
  capabilities = ["read"]
}

# Stores the secrets users send with /secret (like the API: write, never read back) and lists
# which names a project already has, so the project card offers a button per missing one.
path "secret/data/projects/*" {
  capabilities = ["create", "update"]
}

path "secret/metadata/projects/*" {
  capabilities = ["list"]
}

# Every process may look up and renew its own token, and nothing else by default.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Its own NATS user's password (infra/bus/credentials.py), written by the launcher at each start.
path "secret/data/platform/nats/telegram_bot" {
  capabilities = ["read"]
}
