"""The engineer consumer: `CodeRequested` → code whose own tests pass, pushed → `CodeGenerated`."""
