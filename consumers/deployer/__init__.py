"""Deployer: a commit onto a server with Ansible, a full .env from Vault, health check, rollback."""
