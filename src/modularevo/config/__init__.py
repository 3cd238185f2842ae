"""Typed, frozen configs loaded from YAML with ``key=value`` overrides."""

from modularevo.config.load import apply_overrides, load_config, load_yaml, parse_override, validate

__all__ = ["apply_overrides", "load_config", "load_yaml", "parse_override", "validate"]
