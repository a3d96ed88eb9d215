"""Errors shared by modules that must not import each other (config ↔ extensions)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that composes but cannot run; the message says what is valid."""
