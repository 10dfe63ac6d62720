"""From indicator snapshot to signal: levels, ensemble vote, the engine and the scanning service."""
