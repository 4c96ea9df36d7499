"""Requests to the hubs, in one place: the HTTP client and its headers, a JSON GET (bounded), a ranged
streaming GET, a hub's HTTP status as one of our errors (a 401/403 saying what to do with the token), and a
request that got no answer as one (a dropped connection is retryable).

Every request goes over huggingface_hub's shared client (`huggingface_hub.get_session`: its proxies,
redirects and request ids), for both hubs and for every download. Sources build URLs and parse answers;
the transfer streams files; neither touches the HTTP client itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mirror.bounded import HUB_ANSWER, parse_json
from mirror.errors import HubError, NotFoundError, RetryableError

if TYPE_CHECKING:
    import httpx2

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class TokenHint:
    """What a hub refusing access (401/403) should tell the user about the token: the variable it is read
    from (a manifest's `token_env`, else the hub's usual one) and whether a token was sent. Never the token."""

    var: str
    sent: bool
    named: bool = False  # `var` is a manifest's token_env

    def todo(self) -> str:
        """What to do with the token for a repo that is private or gated."""
        if self.sent:
            return (
                f"the token from {self.var} was sent and refused: set {self.var} to a token that may read "
                "this repo (for a gated repo, accept its terms on the hub with that account)"
            )
        other = "" if self.named else " (or name another variable with the manifest's token_env:)"
        return f"no token was sent: set {self.var}{other} to a token that may read it"

    def access_denied(self, where: str, status: int | str) -> NotFoundError:
        """The one message for a 401/403, on a listing or a file download alike."""
        # a hub answers 401 to an anonymous request for a repo that does not exist, too
        what = (
            "private or gated" if status == 403 else "private or gated, or does not exist (check the repo id)"
        )
        return NotFoundError(f"{where}: access denied (HTTP {status}); the repo is {what}: {self.todo()}")


@dataclass(frozen=True)
class FileRequest:
    """A GET to a hub: where, with the headers (auth) it needs, and what to say when the hub denies it."""

    url: str
    headers: dict[str, str] = field(repr=False)
    token_hint: TokenHint


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def status_error(status: int, headers: Mapping[str, str], where: str, token: TokenHint) -> HubError | None:
    """A hub's answer as our error, None for a 200: a 401/403 says what to do with the token; the Hugging
    Face Hub's `X-Error-Code` names a gated repo, a repo or a revision not found; 408, 429 and 5xx may pass
    (retryable, after the answer's Retry-After); any other status fails."""
    if status == 200:
        return None
    if status in (401, 403):
        return token.access_denied(where, status)
    code = headers.get("X-Error-Code")
    if code == "GatedRepo":
        return NotFoundError(f"{where}: the repo is gated; accept its terms on the hub and set HF_TOKEN")
    if code == "RepoNotFound":
        return NotFoundError(
            f"{where}: repo not found (check the repo id; if it is private or gated: {token.todo()})"
        )
    if code == "RevisionNotFound":
        return NotFoundError(f"{where}: revision not found (check the branch, tag or commit)")
    if status in RETRY_STATUS:
        return RetryableError(
            f"{where}: the hub answered HTTP {status}", retry_after_seconds(headers.get("Retry-After"))
        )
    if status == 404:
        return NotFoundError(f"{where}: not found on the hub (HTTP 404); check the repo id and revision")
    return HubError(f"{where}: the hub answered HTTP {status}")


def request_error(error: Exception, where: str) -> HubError:
    """The HTTP client's failure to get an answer, as ours: a dropped or refused connection (TLS errors
    included) may pass and is retried; a redirect loop, a body that cannot be decoded (a Content-Encoding
    that lies) or anything else the client refuses does not."""
    import httpx2

    if isinstance(error, httpx2.TransportError):
        return RetryableError(f"{where}: connection failed: {type(error).__name__}: {error}")
    if isinstance(error, httpx2.TooManyRedirects):
        return HubError(f"{where}: the hub redirects in a loop ({error}); check the endpoint")
    if isinstance(error, httpx2.DecodingError):
        return HubError(
            f"{where}: the hub's answer cannot be decoded ({error}); a proxy or its Content-Encoding lies"
        )
    return HubError(f"{where}: the request failed: {type(error).__name__}: {error}")


def session() -> httpx2.Client:
    """huggingface_hub's shared HTTP client (made on first use; its imports are slow under threads, so a
    caller about to start threads makes it first)."""
    from huggingface_hub import get_session

    return get_session()


def hf_headers(token: str | None) -> dict[str, str]:
    """The headers huggingface_hub sends to the Hugging Face Hub (its user agent, naming mirror; the token)."""
    # public (in the `__all__` huggingface_hub.utils builds at run time, which mypy cannot read)
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    return build_hf_headers(token=token, library_name="mirror")


def modelscope_headers(token: str | None) -> dict[str, str]:
    """The headers of a request to ModelScope: our user agent and, with a token, the Bearer header
    modelscope_hub sends to its /api/v1 routes (`_LegacyApi._headers`), and only it: its session cookie
    `m_session_id` would travel in a `Cookie` header, which huggingface_hub's HF_DEBUG request log (our
    client's) prints, while it hides Authorization."""
    headers = {"User-Agent": "mirror"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def get_json(
    url: str,
    where: str,
    token: TokenHint,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
) -> Any:
    """GET a hub's JSON answer, read within the HUB_ANSWER bound. Our errors for a status other than 200,
    a request that failed or an answer too large; ValueError (saying why) for a body that is not JSON, so the
    source says what it expected."""
    return _json_answer("GET", url, where, token, headers=headers, params=params)


def post_form_json(
    url: str, where: str, token: TokenHint, *, headers: Mapping[str, str], form: Mapping[str, Any]
) -> Any:
    """POST a form (a list value repeats its field, as huggingface_hub sends paths-info) and read the hub's
    JSON answer as `get_json` does."""
    return _json_answer("POST", url, where, token, headers=headers, form=form)


def _json_answer(
    method: str,
    url: str,
    where: str,
    token: TokenHint,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    form: Mapping[str, Any] | None = None,
) -> Any:
    import httpx2

    body = bytearray()
    try:
        with session().stream(method, url, headers=dict(headers), params=params, data=form) as response:
            error = status_error(response.status_code, response.headers, where, token)
            if error is not None:
                raise error
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > HUB_ANSWER.size:
                    raise HubError(f"{where}: the hub's answer is larger than {HUB_ANSWER.size} bytes")
    except httpx2.HTTPError as e:
        raise request_error(e, where) from None
    return parse_json(bytes(body), HUB_ANSWER)


@dataclass
class Ranged:
    """A file's answer being streamed: the first byte it carries (0 for a whole file, None when a 206 does
    not say), whether the server honoured Range (206), and its chunks."""

    start: int | None
    partial: bool
    _response: httpx2.Response = field(repr=False)
    _where: str = field(repr=False)

    def chunks(self) -> Iterator[bytes]:
        """The body; a failure while it streams (a dropped connection, a Content-Encoding that lies) is raised
        as ours, naming the byte it reached."""
        import httpx2

        position = self.start or 0
        try:
            for chunk in self._response.iter_bytes():
                position += len(chunk)
                yield chunk
        except httpx2.HTTPError as e:
            raise request_error(e, f"{self._where} (at byte {position})") from None


@contextmanager
def get_range(request: FileRequest, where: str, start: int = 0, end: int | None = None) -> Iterator[Ranged]:
    """GET a file from byte `start` (through byte `end` - 1 when given; the whole file for 0 and None),
    as stored (`Accept-Encoding: identity`). A 200 or a 206 is streamed; any other status raises our error
    (see status_error), and so does a request that got no answer."""
    import httpx2

    headers = {**request.headers, "Accept-Encoding": "identity"}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
    try:
        with session().stream("GET", request.url, headers=headers) as response:
            status = 200 if response.status_code == 206 else response.status_code
            error = status_error(status, response.headers, where, request.token_hint)
            if error is not None:
                raise error
            partial = response.status_code == 206
            first = _range_start(response.headers) if partial else 0
            yield Ranged(first, partial, response, where)
    except httpx2.HTTPError as e:
        raise request_error(e, f"{where} (at byte {start})") from None


def _range_start(headers: Mapping[str, str]) -> int | None:
    """The first byte a 206 answer carries, from `Content-Range: bytes N-M/T`."""
    value = str(headers.get("Content-Range", ""))
    try:
        return int(value.split()[1].split("-")[0]) if value.startswith("bytes ") else None
    except (IndexError, ValueError):
        return None
