"""Coordinator: the only consumer that knows the project lifecycle."""
