"""The Telegram bot: chat messages in, intents out; `/status` and `/projects` read the database."""
