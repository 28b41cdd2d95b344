"""Model packages, versions and aliases."""
