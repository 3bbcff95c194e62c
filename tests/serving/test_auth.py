"""Bearer-token auth: where the token comes from, how the header is checked, and that the
token never shows in a repr, a str or a log line."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Optional

import pytest

from ecglm.config.schema import SERVE_TOKEN_ENV, ServeConfig
from ecglm.serving.auth import Secret, TokenError, bearer_ok, load_secret, load_token

TOKEN = "s3cr3t-T0ken_value.~+/="


def _serve(token_file: Optional[Path] = None) -> ServeConfig:
    return ServeConfig(token_file=None if token_file is None else str(token_file))


def test_no_token_configured_means_open() -> None:
    assert load_token(_serve(), {}) is None
    assert load_token(_serve(), {SERVE_TOKEN_ENV: ""}) is None
    assert load_token(_serve(), {SERVE_TOKEN_ENV: "   "}) is None
    assert load_secret(_serve(), {}) is None


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("from-file\n")
    assert load_token(_serve(file), {SERVE_TOKEN_ENV: f" {TOKEN}\n"}) == TOKEN
    assert load_token(_serve(file), {SERVE_TOKEN_ENV: ""}) == "from-file"
    assert load_token(_serve(file), {}) == "from-file"
    # the environment alone is enough, even with a token file that does not exist
    assert load_token(_serve(tmp_path / "absent"), {SERVE_TOKEN_ENV: TOKEN}) == TOKEN


def test_first_line_of_the_file_stripped(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text(f"  {TOKEN}  \r\nsecond line\n")
    assert load_token(_serve(file), {}) == TOKEN
    secret = load_secret(_serve(file), {})
    assert secret is not None and secret.reveal() == TOKEN


@pytest.mark.parametrize("content, words", [(None, "no such file"), ("", "empty"),
                                            ("\nlater\n", "empty"), ("   \n", "empty"),
                                            (b"\xff\xfe", "UTF-8"),
                                            ("two words\n", "U+0020"),
                                            ("t\u00f6ken\n", "U+00F6")])
def test_token_file_errors_name_the_setting(tmp_path: Path, content: object,
                                            words: str) -> None:
    file = tmp_path / "token"
    if isinstance(content, bytes):
        file.write_bytes(content)
    elif isinstance(content, str):
        file.write_text(content, encoding="utf-8")
    with pytest.raises(TokenError) as exc:
        load_token(_serve(file), {})
    assert isinstance(exc.value, ValueError)
    assert exc.value.source.startswith("serve.token_file")
    assert "serve.token_file" in str(exc.value) and words in str(exc.value)
    assert str(file) in str(exc.value)


def test_token_file_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="serve.token_file.*folder"):
        load_token(_serve(tmp_path), {})


def test_environment_token_with_spaces_is_refused() -> None:
    with pytest.raises(TokenError) as exc:
        load_token(_serve(), {SERVE_TOKEN_ENV: "two words"})
    assert exc.value.source == SERVE_TOKEN_ENV and "two" not in str(exc.value)


def test_token_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(TokenError("serve.token_file", "x: empty")))
    assert (err.source, err.reason, str(err)) == ("serve.token_file", "x: empty",
                                                  "serve.token_file: x: empty")


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}",
                                    f"  Bearer   {TOKEN}  "])
def test_bearer_accepted(header: str) -> None:
    assert bearer_ok(header, TOKEN)
    assert bearer_ok(header, Secret(TOKEN))


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", TOKEN, f"Basic {TOKEN}",
                                    f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                    f"Bearer {TOKEN.upper()}", f"Bearer {TOKEN} extra",
                                    f"Bearer{TOKEN}", f"Token {TOKEN}", "Bearer \udcff",
                                    "Bearer t\u00f6ken", 42])
def test_bearer_refused(header: object) -> None:
    assert not bearer_ok(header, TOKEN)  # type: ignore[arg-type]


def test_empty_token_never_matches() -> None:
    assert not bearer_ok("Bearer ", "")
    assert not bearer_ok("Bearer x", "")
    assert not bearer_ok("Bearer x", Secret(""))


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert bearer_ok(f"Bearer {TOKEN}", TOKEN) and not bearer_ok("Bearer nope", TOKEN)
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (b"nope", TOKEN.encode())]


def test_secret_never_shows_its_value(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(TOKEN)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}",
             "%s %r" % (secret, secret), repr([secret]), repr({"token": secret}),
             repr(copy.copy(secret)), repr(copy.deepcopy(secret))]
    for text in shown:
        assert TOKEN not in text and "Secret" in text
    logger = logging.getLogger("ecglm.test_auth")
    with caplog.at_level(logging.DEBUG, logger="ecglm.test_auth"):
        logger.info("token %s", secret)
        logger.info("token %r", secret)
        logger.info("token %s", {"secret": secret})
    assert caplog.records and TOKEN not in caplog.text
    assert not hasattr(secret, "__dict__")
    assert secret.reveal() == TOKEN
    assert copy.deepcopy(secret).reveal() == TOKEN
    assert pickle.loads(pickle.dumps(secret)).reveal() == TOKEN
    assert secret == Secret(TOKEN) and secret != Secret("other") and secret != TOKEN
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]
