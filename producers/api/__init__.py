"""The HTTP API producer: authenticated JSON endpoints that publish intents and read projects."""
