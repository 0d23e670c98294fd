"""The parts of the ``tail`` source: file identity, position file, change watching, per-file reading."""
