"""Placeholder replaced by the gateway work."""
