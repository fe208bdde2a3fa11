"""Event contracts: the only thing producers and consumers share. Imports nothing of ours."""
