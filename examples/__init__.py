"""Example applications built on pgbridge (run from the repository root)."""
