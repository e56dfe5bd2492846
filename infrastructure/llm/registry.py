"""Which provider, model, prompt and temperature answer in a conversation: its ``assistant`` settings,
falling back to the server's LLM_* settings. Providers are built once per process, on first use."""

from __future__ import annotations

import msgspec

from domain.assistant import Price, parse_prices
from domain.values import AssistantSettings
from infrastructure.llm.anthropic_sdk import AnthropicProvider
from infrastructure.llm.base import LLMError, LLMProvider, Policy
from infrastructure.llm.offline import OfflineProvider
from infrastructure.llm.openai_compat import OpenAICompatProvider
from infrastructure.settings import LLMSettings


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    model: str
    system_prompt: str
    temperature: float


def choose(assistant: AssistantSettings, defaults: LLMSettings) -> Choice:
    return Choice(
        provider=assistant.provider or defaults.provider,
        model=assistant.model or defaults.model,
        system_prompt=assistant.system_prompt or defaults.system_prompt,
        temperature=defaults.temperature if assistant.temperature is None else assistant.temperature,
    )


class Providers:
    def __init__(self, settings: LLMSettings) -> None:
        self._settings = settings
        self._built: dict[str, LLMProvider] = {}
        self.prices: dict[str, Price] = parse_prices(settings.prices)
        self.policy = Policy(
            first_token_timeout=settings.first_token_timeout,
            total_timeout=settings.total_timeout,
            retries=settings.retries,
        )

    def get(self, name: str) -> LLMProvider:
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str) -> LLMProvider:
        s = self._settings
        if name == "anthropic":
            if not s.anthropic_api_key:
                raise LLMError("UNAVAILABLE", "the anthropic provider has no ANTHROPIC_API_KEY on this server")
            return AnthropicProvider(api_key=s.anthropic_api_key, base_url=s.anthropic_base_url, policy=self.policy)
        if name == "openai":
            return OpenAICompatProvider(base_url=s.openai_base_url, api_key=s.openai_api_key, policy=self.policy)
        if name == "offline":
            return OfflineProvider(delay=s.offline_delay, policy=self.policy)
        raise LLMError("VALIDATION", f"unknown provider {name!r}")

    async def aclose(self) -> None:
        for provider in self._built.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        self._built.clear()
