"""Everything the agent says to the Flamenco Manager."""
