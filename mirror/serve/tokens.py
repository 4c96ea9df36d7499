"""The tokens of `mirror serve --token-file`: who may read the served store.

The file holds one `NAME:TOKEN` per line (blank lines and `#` comments allowed). Only the SHA-256 of each
token is kept in memory; a request's token is hashed and compared with every one of them in constant time,
so neither the comparison's time nor a log or an error message ever reveals a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import UsageError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
# What an HTTP header and a cookie can carry: visible ASCII but the cookie's separators.
TOKEN = re.compile(r"[!#-+\--:<-\[\]-~]{1,4096}")
SESSION_COOKIE = "m_session_id"  # where the ModelScope client sends the token, beside the header


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """The names and the SHA-256 digests of the tokens that may read the store."""

    entries: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, named: dict[str, str]) -> Tokens:
        return cls(tuple((name, _digest(token)) for name, token in named.items()))

    def name_of(self, token: str) -> str | None:
        """The name the token is given under, None if it is none of them (compared with every one)."""
        given = _digest(token)
        found = None
        for name, digest in self.entries:
            if hmac.compare_digest(given, digest):
                found = name
        return found

    def identify(self, authorization: str | None, cookie: str | None) -> str | None:
        """The name of the token a request presents, as `Authorization: Bearer TOKEN` or as the cookie
        `m_session_id=TOKEN`; None if neither holds a known token."""
        found = None
        for token in (bearer_token(authorization), cookie_token(cookie)):
            if token is not None:
                found = self.name_of(token) or found
        return found


def bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def cookie_token(cookie: str | None) -> str | None:
    """The value of the cookie `m_session_id` in a Cookie header (`a=1; m_session_id=TOKEN`)."""
    for pair in (cookie or "").split(";"):
        key, eq, value = pair.strip().partition("=")
        if eq and key.strip() == SESSION_COOKIE:
            return value.strip().strip('"') or None
    return None


def parse_tokens(text: str, where: str) -> Tokens:
    """The tokens of a token file's text; a UsageError naming `where` and the line of the first bad line,
    never quoting it (a token written where its name goes would show)."""
    names: dict[str, int] = {}
    tokens: dict[str, int] = {}
    named: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = line.partition(":")
        name, token = name.strip(), token.strip()
        if not colon or not NAME.fullmatch(name):
            raise UsageError(
                f"{where}:{number}: not a NAME:TOKEN line (a NAME is letters, digits and . _ @ + -, "
                "starting with a letter or digit)"
            )
        if not token:
            raise UsageError(f"{where}:{number}: the token is empty")
        if not TOKEN.fullmatch(token):
            raise UsageError(
                f"{where}:{number}: the token is not a token a client can send (visible ASCII, "
                "no space, quote, comma, semicolon or backslash, at most 4096 characters)"
            )
        if name in names:
            raise UsageError(f"{where}:{number}: the name is given already on line {names[name]}")
        if token in tokens:
            raise UsageError(f"{where}:{number}: the token is the token of line {tokens[token]}")
        names[name], tokens[token], named[name] = number, number, token
    if not named:
        raise UsageError(f"{where}: no NAME:TOKEN line: every request would be refused")
    return Tokens.of(named)


def read_tokens(path: Path) -> Tokens:
    """The tokens of a token file; a UsageError (exit 2) naming the file, and the line, when it is not
    readable or not a token file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a token file (not UTF-8 text)") from None
    except OSError as e:
        raise UsageError(f"cannot read the token file {path}: {e.strerror or e}") from None
    return parse_tokens(text, str(path))
