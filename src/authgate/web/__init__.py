"""authgate.web."""
