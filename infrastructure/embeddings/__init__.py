"""Embedding providers (flow 5): texts -> unit vectors for semantic search and the assistant's retrieval."""
