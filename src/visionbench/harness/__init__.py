"""Timing loops and statistics. Knows nothing of any engine: it times a callable."""
