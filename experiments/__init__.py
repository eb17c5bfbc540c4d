"""Runners and experiment configs (the only place flags are parsed)."""
