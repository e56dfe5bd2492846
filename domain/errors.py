"""Errors the domain raises; the app layer maps each ``code`` to a transport (HTTP status, WS error frame).

DomainError                      code
├── Unauthorized                 UNAUTHORIZED   bad credentials or token
├── Forbidden                    FORBIDDEN
│   └── NotAParticipant          the caller is not a member of the conversation
├── NotFound                     NOT_FOUND
├── InvalidInput                 VALIDATION     the request is well-formed but breaks a rule
├── TooLarge                     TOO_LARGE      a size limit (text length, frame size)
├── Conflict                     CONFLICT       e.g. an email already registered
├── RateLimited                  RATE_LIMITED   carries ``retry_after`` seconds
└── Unavailable                  UNAVAILABLE    a dependency is down; safe to retry
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error a command can raise on purpose."""

    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthorized(DomainError):
    code = "UNAUTHORIZED"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class NotAParticipant(Forbidden):
    def __init__(self, message: str = "you are not a participant of this conversation") -> None:
        super().__init__(message)


class NotFound(DomainError):
    code = "NOT_FOUND"


class InvalidInput(DomainError):
    code = "VALIDATION"


class TooLarge(DomainError):
    code = "TOO_LARGE"


class Conflict(DomainError):
    code = "CONFLICT"


class RateLimited(DomainError):
    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(DomainError):
    code = "UNAVAILABLE"
