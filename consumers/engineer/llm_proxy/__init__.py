"""The LLM metering proxy: the only way model-facing code reaches the provider.

It holds the provider key, accepts one run's one-time token, writes every call to `llm_usage`
as it happens and refuses calls once the run's budget or time is spent. See `server.py`.
"""
