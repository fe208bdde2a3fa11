"""The notifier: tells the user in their chat (Telegram, or the console chat) what happens."""
