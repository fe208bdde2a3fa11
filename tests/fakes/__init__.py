"""Fakes at the edge of the world (LLM provider, ...) that speak the real protocol over HTTP."""
