"""The repo consumer: creates the project's repository and pushes the scaffold of its spec."""
