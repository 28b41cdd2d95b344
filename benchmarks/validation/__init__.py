"""Validation benchmark: statistics + 15 checks, Keel vs Great Expectations vs pandera vs DuckDB."""
