"""WebSocket frames (protocol.md "WebSocket"): client frames decoded as one tagged union, server frames
encoded once per event and node, not once per socket."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec

from domain.errors import DomainError
from domain.values import Message

ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class _ClientFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    pass


class Join(_ClientFrame, frozen=True, kw_only=True, tag="join"):
    conversation_id: UUID
    after_seq: Seq | None = None


class Leave(_ClientFrame, frozen=True, kw_only=True, tag="leave"):
    conversation_id: UUID


class Send(_ClientFrame, frozen=True, kw_only=True, tag="send"):
    conversation_id: UUID
    client_msg_id: ClientMsgId
    text: str


class Read(_ClientFrame, frozen=True, kw_only=True, tag="read"):
    conversation_id: UUID
    seq: Seq


class Typing(_ClientFrame, frozen=True, kw_only=True, tag="typing"):
    conversation_id: UUID
    active: bool


class Cancel(_ClientFrame, frozen=True, kw_only=True, tag="cancel"):
    reply_id: UUID


class Resume(_ClientFrame, frozen=True, kw_only=True, tag="resume"):
    reply_id: UUID
    from_index: Seq = 0


class Ping(_ClientFrame, frozen=True, kw_only=True, tag="ping"):
    pass


class Refresh(_ClientFrame, frozen=True, kw_only=True, tag="refresh"):
    """A new access token for this socket's session (answered ``refreshed {expires_in}``)."""

    access_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


ClientFrame = Join | Leave | Send | Read | Typing | Cancel | Resume | Ping | Refresh

_decoder = msgspec.json.Decoder(ClientFrame)
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    """A client frame that cannot be understood; answered with an ``error`` frame, never fatal."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref


def decode(data: str | bytes) -> ClientFrame:
    try:
        frame: ClientFrame = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise FrameError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise FrameError("frame is not a JSON object") from exc
    except RecursionError as exc:  # msgspec refuses deep nesting this way; a hostile frame, not a bug
        raise FrameError("frame is nested too deeply") from exc
    return frame


def message_frame(message: Message) -> str:
    """``{"type": "message", ...message}``: built around the encoded message, so it is encoded once.

    Frames are ``str`` because WebSocket text frames are; the hub builds one per event and node and
    every socket's writer sends that same object."""
    body = _encoder.encode(message)
    return '{"type":"message",' + body[1:].decode()


def frame(kind: str, **fields: Any) -> str:
    return _encoder.encode({"type": kind, **fields}).decode()


def error_frame(code: str, message: str, ref: str | None = None) -> str:
    fields: dict[str, Any] = {"code": code, "message": message}
    if ref is not None:
        fields["ref"] = ref
    return frame("error", **fields)


def domain_error_frame(exc: DomainError, ref: str | None = None) -> str:
    return error_frame(exc.code, exc.message, ref)
