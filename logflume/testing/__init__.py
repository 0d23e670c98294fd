"""Test suites a plugin author runs on their own plugin (they need pytest, not shipped as a dependency)."""
