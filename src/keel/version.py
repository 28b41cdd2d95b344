"""Keel's version: a fact lower layers need (run records, server metadata), kept at layer 0 so
nothing imports the package facade for it."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
