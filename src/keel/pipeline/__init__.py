"""Steps, caching and the local runner."""
