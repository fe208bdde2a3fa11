"""The embedded local stack: real servers as child processes, a supervisor and `orchestrator up`.

Every server binds 127.0.0.1, keeps its data in a directory it is given, and dies with its
parent, so tests and the single-machine deployment share one way of starting the platform.
"""
