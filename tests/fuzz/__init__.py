"""Fuzzing of every parser that takes outside bytes (issue 8): config, record splitters, wire endpoints."""
