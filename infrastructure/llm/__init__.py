"""LLM providers behind one small interface (``base.LLMProvider``): Anthropic, OpenAI-compatible, offline."""
