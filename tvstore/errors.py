"""The errors tvstore raises.

Every error a user can cause is a ``TvstoreError`` with a one-line message that
names the offending thing; the CLI prints it and exits with ``exit_code``
(2 for misuse of a command, 1 for a failure), never with a traceback.
"""

from __future__ import annotations


class TvstoreError(Exception):
    """Base of every error tvstore reports to a user."""

    exit_code = 1


class UsageError(TvstoreError):
    """The command or call itself is malformed (bad name, bad option value)."""

    exit_code = 2


class NotFoundError(TvstoreError):
    """A base model, task vector, version, tag or blob does not exist."""


class AlreadyExistsError(TvstoreError):
    """A name that must be unique is taken."""


class InvalidCheckpointError(TvstoreError):
    """A checkpoint cannot be read, or does not fit the base it is pushed on."""


class CorruptBlobError(TvstoreError):
    """A blob's bytes do not hash to its digest (bit rot, truncation, tampering)."""

    def __init__(self, digest: str, detail: str = "", context: str = "") -> None:
        self.digest = digest
        where = f" ({context})" if context else ""
        msg = f"blob {digest} is corrupt{where}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class SchemaError(TvstoreError):
    """The database is missing, not initialised, or at another schema revision."""


class CodecError(TvstoreError):
    """A codec spec is unknown or its parameters are invalid."""

    exit_code = 2


class AuthError(TvstoreError):
    """A served registry refused a request's token: none, unknown, revoked or expired (HTTP 401)."""


class ForbiddenError(TvstoreError):
    """A token lacks the scope, or the name grant, a request needs (HTTP 403)."""


class TooLargeError(TvstoreError):
    """A request body is larger than the server accepts (HTTP 413)."""
