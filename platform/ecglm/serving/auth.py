"""Bearer-token authentication of the endpoint (pure functions, no Ray, no web framework).

The token comes from the environment variable ``ECGLM_SERVE_TOKEN``
(:data:`~ecglm.config.schema.SERVE_TOKEN_ENV`) when it is set and not empty, else from the
first line of ``serve.token_file``; with neither the endpoint is open. With a token, every
route but ``/healthz`` wants ``Authorization: Bearer <token>`` (:func:`bearer_ok`; the
ingress answers 401 otherwise).

A token is visible ASCII without spaces (RFC 6750 ``b64token`` and more), so that it can be
sent in the header at all. Keep it in a :class:`Secret` wherever it could be printed: its
``repr``/``str`` never show the value.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Mapping, Optional, Union

from ecglm.config.schema import SERVE_TOKEN_ENV, ServeConfig

BEARER_SCHEME = "bearer"
"""The ``Authorization`` scheme (compared case-insensitively)."""


class TokenError(ValueError):
    """The configured token cannot be used.

    Attributes:
        source: where it came from (``serve.token_file`` or ``ECGLM_SERVE_TOKEN``).
        reason: what is wrong and what was expected (never the token itself).
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    def __reduce__(self):  # keeps the attributes when pickled across Ray workers
        return (type(self), (self.source, self.reason))


class Secret:
    """A token that does not show itself: ``repr``/``str``/``format`` give ``Secret(****)``;
    :meth:`reveal` returns the value. Equality is constant-time."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret: expected a str, got {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The value (pass it only to :func:`bearer_ok` or a client's header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(****)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    __hash__ = None  # type: ignore[assignment]  # equal by value, so no hash (it would leak)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __getstate__(self) -> dict[str, str]:  # pickles for Ray actors (slots, no __dict__)
        return {"_value": self._value}

    def __setstate__(self, state: dict[str, str]) -> None:
        self._value = state["_value"]


def _check_token(token: str, source: str) -> str:
    """``token`` when it is visible ASCII without spaces (else :class:`TokenError`)."""
    bad = sorted({f"U+{ord(ch):04X}" for ch in token if not 0x21 <= ord(ch) <= 0x7E})
    if bad:
        raise TokenError(source, f"token holds characters that cannot be sent in an "
                                 f"Authorization header ({', '.join(bad)}); expected visible "
                                 f"ASCII without spaces")
    return token


def read_token_file(path: str) -> str:
    """The first line of ``path``, stripped.

    Raises:
        TokenError: ``serve.token_file`` missing, not a readable file, not UTF-8, or with an
            empty first line.
    """
    source = "serve.token_file"
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenError(source, f"{path}: no such file; expected a file whose first line is "
                                 f"the bearer token") from None
    except IsADirectoryError:
        raise TokenError(source, f"{path} is a folder, expected a file") from None
    except PermissionError:
        raise TokenError(source, f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise TokenError(source, f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise TokenError(source, f"{path}: cannot read: {exc.strerror}") from None
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise TokenError(source, f"{path}: the first line is empty, expected the bearer token")
    return _check_token(token, f"{source} ({path})")


def load_token(serve: ServeConfig, environ: Mapping[str, str]) -> Optional[str]:
    """The endpoint's bearer token: ``environ[ECGLM_SERVE_TOKEN]`` (stripped) when set and not
    empty, else the first line of ``serve.token_file``; ``None`` when neither is configured
    (the endpoint is open).

    Raises:
        TokenError: the token file cannot be read or is empty, or a token holds characters an
            ``Authorization`` header cannot carry.
    """
    from_env = (environ.get(SERVE_TOKEN_ENV) or "").strip()
    if from_env:
        return _check_token(from_env, SERVE_TOKEN_ENV)
    if serve.token_file is None:
        return None
    return read_token_file(serve.token_file)


def load_secret(serve: ServeConfig, environ: Mapping[str, str]) -> Optional[Secret]:
    """:func:`load_token` wrapped in a :class:`Secret`."""
    token = load_token(serve, environ)
    return None if token is None else Secret(token)


def bearer_ok(authorization_header: Optional[str], token: Union[str, Secret]) -> bool:
    """True when ``authorization_header`` is ``Bearer <token>`` (scheme case-insensitive,
    surrounding spaces ignored), compared in constant time
    (:func:`hmac.compare_digest` on the UTF-8 bytes). A missing or malformed header, or an
    empty ``token``, gives False."""
    expected = token.reveal() if isinstance(token, Secret) else token
    if not isinstance(authorization_header, str) or not isinstance(expected, str) or not expected:
        return False
    parts = authorization_header.split()
    if len(parts) != 2 or parts[0].lower() != BEARER_SCHEME:
        return False
    try:
        given = parts[1].encode("utf-8")
        wanted = expected.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not a token anyone configured
        return False
    return hmac.compare_digest(given, wanted)
