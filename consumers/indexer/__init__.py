"""Indexer: project memory in Qdrant, written from events and searched over request/reply."""
