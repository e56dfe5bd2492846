"""Adapters to the outside world: PostgreSQL, Redis, auth, LLM and embedding providers, settings, metrics."""
