# OpenBao of docker-compose: a real server, not dev mode. The store is raft (OpenBao's built-in
# storage) in the openbao-data volume, mounted at /openbao/file, which the image's entrypoint
# hands to its `openbao` user; it starts sealed and `openbao-unseal`
# (infra/stack/openbao_unseal.py) initialises it once and unseals it at every start.
storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao"
  # One node elects itself after a heartbeat timeout: 1 s instead of 5 s at each start.
  performance_multiplier = 1
}

# Plain HTTP on the compose network; docker-compose.yml publishes it on 127.0.0.1 only.
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}

api_addr     = "http://openbao:8200"
cluster_addr = "http://openbao:8201"

# Raft memory-maps its database; locking all memory would pin it whole (the documented advice
# for integrated storage is to disable mlock), and the container needs no IPC_LOCK for it.
disable_mlock = true
