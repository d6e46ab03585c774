"""authgate.config."""
