"""authgate.tokens."""
