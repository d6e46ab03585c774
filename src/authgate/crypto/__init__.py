"""authgate.crypto."""
