"""Canonical configs (`base.get_config`) and the helpers that parse config args."""
