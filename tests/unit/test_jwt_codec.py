"""Access tokens: a token verified once is taken at its word until it expires, and nothing else is."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import Unauthorized
from infrastructure.auth import jwt_codec
from infrastructure.auth.jwt_codec import LEEWAY_SECONDS, JwtCodec
from infrastructure.settings import AuthSettings

SETTINGS = AuthSettings(jwt_secret="s" * 32, access_ttl_seconds=60)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_accepted_again_until_it_expires() -> None:
    clock = Clock()
    codec = JwtCodec(SETTINGS, clock=clock)
    token, ttl = codec.issue(uuid.uuid4(), datetime.now(UTC))
    first = codec.verify(token)
    clock.now += ttl + LEEWAY_SECONDS - 2  # exp is whole seconds: up to one before issue time + ttl
    assert codec.verify(token) == first
    clock.now += 3  # past exp and the leeway
    with pytest.raises(Unauthorized):
        codec.verify(token)


def test_another_payload_under_a_verified_tokens_signature_is_refused() -> None:
    codec = JwtCodec(SETTINGS)
    token, _ = codec.issue(uuid.uuid4(), datetime.now(UTC))
    codec.verify(token)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(uuid.uuid4())
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized):
        codec.verify(f"{header}.{forged}.{signature}")


def test_a_refusal_is_not_remembered() -> None:
    """A token issued by a node whose clock is ahead is refused until this one catches up, then taken."""
    codec = JwtCodec(SETTINGS)
    token, _ = codec.issue(uuid.uuid4(), datetime.now(UTC) + timedelta(seconds=LEEWAY_SECONDS + 2))
    with pytest.raises(Unauthorized):  # iat more than the leeway in this node's future
        codec.verify(token)
    time.sleep(3)
    codec.verify(token)


def test_at_most_a_bounded_number_of_tokens_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jwt_codec, "VERIFIED_KEPT", 2)
    codec = JwtCodec(SETTINGS)
    tokens = [codec.issue(uuid.uuid4(), datetime.now(UTC))[0] for _ in range(3)]
    claims = [codec.verify(t) for t in tokens]
    assert len(codec._verified) == 2
    assert [codec.verify(t) for t in tokens] == claims  # the forgotten one is verified in full again
