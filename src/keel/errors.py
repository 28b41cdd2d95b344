"""Keel's errors: one root, a few subclasses, each with an HTTP status and a CLI exit code.

    KeelError                       500 / exit 1
    ├── ConfigError(ValueError)     400 / exit 2   keel.yaml, CLI usage, bad arguments
    ├── DataValidationError(ValueError)  422 / exit 1   data or a request breaks its schema
    ├── GateError                   409 / exit 1   a check or promotion gate failed
    ├── NotFoundError(LookupError)  404 / exit 1   unknown model, version, alias, run, artifact
    ├── ConflictError               409 / exit 1   the state changed under you
    ├── IntegrityError              500 / exit 1   stored bytes do not match their sha256
    │   └── UnsafeModelError        500 / exit 1   a model file names a type Keel won't build,
    │                                              or its signature is missing or untrusted
    ├── NotFittedError(ValueError)  500 / exit 1   a transform or model used before fit
    └── BackendError                503 / exit 1   a database, filesystem or server is unavailable

Every message says what happened, where, what was expected and what to do, e.g.
``keel.yaml:14: unknown key 'learning_rte' in model.params. Did you mean 'learning_rate'?``
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BackendError",
    "ConfigError",
    "ConflictError",
    "DataValidationError",
    "GateError",
    "IntegrityError",
    "KeelError",
    "NotFittedError",
    "NotFoundError",
    "UnsafeModelError",
]


class KeelError(Exception):
    """Root of every error Keel raises on purpose.

    Args:
        message: What happened, where, and what to do about it.
        field: The offending field or key, when there is one (used in REST error bodies).
        details: Extra machine-readable context.
    """

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The REST error body: ``{"error", "message", "field"}`` plus details when present."""
        body: dict[str, Any] = {
            "error": type(self).__name__,
            "message": self.message,
            "field": self.field,
        }
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(KeelError, ValueError):
    """keel.yaml, an environment variable or a CLI argument is wrong."""

    http_status = 400
    exit_code = 2


class DataValidationError(KeelError, ValueError):
    """Data or a request does not satisfy its schema."""

    http_status = 422


class GateError(KeelError):
    """A quality check or promotion gate did not pass."""

    http_status = 409


class NotFoundError(KeelError, LookupError):
    """A model, version, alias, run or artifact does not exist."""

    http_status = 404


class ConflictError(KeelError):
    """The operation conflicts with the current state."""

    http_status = 409


class IntegrityError(KeelError):
    """Stored bytes do not hash to the sha256 they were recorded with."""


class UnsafeModelError(IntegrityError):
    """A model package is refused before anything in it is loaded: a model file would
    construct a type outside the allowlist, or a required signature is missing, made by an
    untrusted key, or does not match."""


class NotFittedError(KeelError, ValueError):
    """A transform or model was used before it was fitted."""


class BackendError(KeelError):
    """A storage backend or external service failed or is unreachable."""

    http_status = 503
