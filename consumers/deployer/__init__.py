"""Deployer: puts a commit on a server with Ansible, a complete `.env` from Vault, a health check and rollback."""
