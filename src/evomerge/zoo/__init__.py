"""Offline world: tiny example models (and, later, the trained demo zoo)."""
