"""Ops: health checks of deployed services, incidents opened and resolved."""
