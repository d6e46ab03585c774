"""authgate.client."""
