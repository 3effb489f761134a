"""The operator's settings: every setting's sources, parsers and defaults."""
