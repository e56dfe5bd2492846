"""Product limits (protocol.md "Limits") and the pure checks that enforce them."""

from __future__ import annotations

import msgspec

from domain.errors import InvalidInput, TooLarge


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Defaults are the published ones; every value is configurable through settings."""

    max_text_chars: int = 4000
    #: The assistant's answers are longer than people's messages (LLM_MAX_TOKENS is ~4 characters a token).
    max_assistant_text_chars: int = 32_000
    max_title_chars: int = 200
    max_frame_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024
    messages_per_second: float = 10.0
    message_burst: int = 20
    sockets_per_user: int = 10
    joins_per_socket: int = 100
    max_participants_per_request: int = 100
    max_page_size: int = 200


def _clean(value: str, what: str, max_chars: int) -> str:
    trimmed = value.strip()
    if not trimmed:
        raise InvalidInput(f"{what} must not be empty")
    if "\x00" in trimmed:  # PostgreSQL text cannot store NUL
        raise InvalidInput(f"{what} must not contain NUL characters")
    if len(trimmed) > max_chars:
        raise TooLarge(f"{what} is longer than {max_chars} characters")
    return trimmed


def clean_text(text: str, limits: Limits, *, max_chars: int | None = None) -> str:
    """Trim a message text and check it; the trimmed text is what gets stored."""
    return _clean(text, "text", limits.max_text_chars if max_chars is None else max_chars)


def clean_title(title: str, limits: Limits) -> str:
    return _clean(title, "title", limits.max_title_chars)


def clean_client_msg_id(client_msg_id: str) -> str:
    """Client ids are opaque to us but bounded: they are part of a unique index."""
    if not client_msg_id or len(client_msg_id) > 100 or "\x00" in client_msg_id:
        raise InvalidInput("client_msg_id must be 1 to 100 characters, none of them NUL")
    return client_msg_id
