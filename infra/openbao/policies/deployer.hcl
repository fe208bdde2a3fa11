# deployer: renders a service's complete .env from its project secrets, reaches the target
# server with its SSH key and logs in to the image registry. It never writes a secret; it
# deletes an archived project's secrets once the project's service is gone from its server.
path "secret/data/projects/*" {
  capabilities = ["read"]
}

# Listing names (never values) lets the deployer check that the .env it renders is complete;
# deleting the metadata removes every version of an archived project's secret.
path "secret/metadata/projects/*" {
  capabilities = ["list", "delete"]
}

path "secret/data/servers/*" {
  capabilities = ["read"]
}

path "secret/data/platform/registry" {
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
path "secret/data/platform/nats/deployer" {
  capabilities = ["read"]
}
