"""authgate.verifiers."""
