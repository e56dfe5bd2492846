"""Background roles: the outbox relay, read-model projectors, arq jobs, the janitor."""
