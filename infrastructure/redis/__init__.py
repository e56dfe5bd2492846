"""Redis: event streams, presence, rate limits, WS tickets and the revocation cache."""
