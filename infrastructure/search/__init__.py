"""Search and retrieval over messages (flow 5): full text, pgvector, and their fusion."""
