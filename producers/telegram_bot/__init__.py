"""telegram_bot."""
