"""authgate.policy."""
