"""Monitoring: drift of served inputs against the training statistics."""
