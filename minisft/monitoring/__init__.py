"""Pull-style monitoring of the daemon: the Prometheus exposition of its live state."""
