"""The one HTTP layer (mirror.http): a hub's status as our error with the token advice, a request without an
answer as retryable, a JSON GET held to its bound, a ranged GET. The mapping is tested as a pure function;
the requests against the loopback hub, in this process."""

from __future__ import annotations

import json

import pytest

from mirror import http
from mirror.bounded import Bound
from mirror.errors import HubError, NotFoundError, RetryableError
from mirror.http import FileRequest, TokenHint, get_json, get_range, request_error, status_error
from tests.hub import Fault, GarbageServer, HubFile, LoopbackHub

WHERE = "model org/a at revision 'main' on http://hub"
ANONYMOUS = TokenHint("HF_TOKEN", sent=False)
SENT = TokenHint("HF_TOKEN", sent=True)
NAMED = TokenHint("MY_TOKEN", sent=False, named=True)
DATA = bytes(range(256)) * 40  # 10 KiB


def error(status: int, token: TokenHint = ANONYMOUS, **headers: str) -> HubError | None:
    return status_error(status, {k.replace("_", "-"): v for k, v in headers.items()}, WHERE, token)


def test_a_200_is_no_error() -> None:
    assert error(200) is None


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_say_what_to_do_with_the_token(status: int) -> None:
    anonymous, sent, named = (error(status, t) for t in (ANONYMOUS, SENT, NAMED))
    assert isinstance(anonymous, NotFoundError) and not isinstance(anonymous, RetryableError)
    assert str(anonymous).startswith(f"{WHERE}: access denied (HTTP {status}); the repo is private or gated")
    assert str(anonymous).endswith(
        "no token was sent: set HF_TOKEN (or name another variable with the manifest's token_env:) to a token "
        "that may read it"
    )
    assert (
        "the token from HF_TOKEN was sent and refused: set HF_TOKEN to a token that may read this repo"
        in str(sent)
    )
    assert str(named).endswith("no token was sent: set MY_TOKEN to a token that may read it")
    # a 401 is also what a hub answers for a repo that does not exist
    assert ("does not exist (check the repo id)" in str(anonymous)) == (status == 401)
    # whatever the hub's error code says
    assert str(error(status, X_Error_Code="RepoNotFound")) == str(anonymous)


def test_the_hubs_error_codes_name_what_is_missing() -> None:
    gated = error(404, X_Error_Code="GatedRepo")
    assert isinstance(gated, NotFoundError)
    assert str(gated) == f"{WHERE}: the repo is gated; accept its terms on the hub and set HF_TOKEN"
    for token, says in [(ANONYMOUS, "no token was sent: set HF_TOKEN"), (SENT, "the token from HF_TOKEN")]:
        missing = error(404, token, X_Error_Code="RepoNotFound")
        assert isinstance(missing, NotFoundError)
        assert str(missing).startswith(
            f"{WHERE}: repo not found (check the repo id; if it is private or gated: {says}"
        )
    revision = error(404, X_Error_Code="RevisionNotFound")
    assert isinstance(revision, NotFoundError)
    assert str(revision) == f"{WHERE}: revision not found (check the branch, tag or commit)"
    plain = error(404, X_Error_Code="EntryNotFound")
    assert isinstance(plain, NotFoundError) and str(plain) == str(error(404))
    assert str(plain) == f"{WHERE}: not found on the hub (HTTP 404); check the repo id and revision"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_server_errors_and_rate_limits_are_retryable_after_retry_after(status: int) -> None:
    plain, told, dated = (
        error(status),
        error(status, Retry_After="7"),
        error(status, Retry_After="Wed, 1 Jan"),
    )
    assert isinstance(plain, RetryableError) and str(plain) == f"{WHERE}: the hub answered HTTP {status}"
    assert plain.retry_after is None and dated is not None and dated.retry_after is None  # type: ignore[attr-defined]
    assert isinstance(told, RetryableError) and told.retry_after == 7.0
    assert error(status, Retry_After="-3").retry_after == 0.0  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [400, 410, 416, 501, 302])
def test_any_other_status_fails_and_is_not_retried(status: int) -> None:
    failed = error(status)
    assert type(failed) is HubError and str(failed) == f"{WHERE}: the hub answered HTTP {status}"


def test_a_request_without_an_answer_is_retryable() -> None:
    import httpx2

    dropped = request_error(httpx2.ConnectError("refused"), WHERE)
    assert isinstance(dropped, RetryableError) and "connection failed: ConnectError: refused" in str(dropped)
    loop = request_error(httpx2.TooManyRedirects("loop"), WHERE)
    assert type(loop) is HubError and "redirects in a loop" in str(loop)
    lying = request_error(httpx2.DecodingError("bad gzip"), WHERE)
    assert type(lying) is HubError and "cannot be decoded" in str(lying)


# ---- against the loopback hub ------------------------------------------------------------------------------


def info_url(hub: LoopbackHub, repo: str = "org/a") -> str:
    return f"{hub.url}/api/models/{repo}/revision/main"


def test_get_json_answers_what_the_hub_said(hub: LoopbackHub) -> None:
    commit = hub.add_commit("org/a", [HubFile("config.json", data=b"{}")])
    info = get_json(info_url(hub), WHERE, ANONYMOUS, headers=http.hf_headers(None), params={"blobs": True})
    assert info["sha"] == commit and info["siblings"][0]["blobId"]
    (request,) = hub.requests
    assert request.path.endswith("?blobs=true") and "mirror" in request.headers.get("user-agent", "")


def test_get_json_maps_the_hubs_refusals(hub: LoopbackHub) -> None:
    hub.add_commit("org/a", [HubFile("config.json", data=b"{}")])
    with pytest.raises(NotFoundError, match="repo not found"):
        get_json(info_url(hub, "org/gone"), WHERE, ANONYMOUS, headers={})
    hub.required_token = "right"
    with pytest.raises(NotFoundError, match=r"access denied \(HTTP 401\).*no token was sent"):
        get_json(info_url(hub), WHERE, ANONYMOUS, headers={})
    with pytest.raises(NotFoundError, match=r"access denied \(HTTP 401\).*was sent and refused"):
        get_json(info_url(hub), WHERE, SENT, headers={"authorization": "Bearer wrong"})
    hub.add_fault(Fault("status", match="/api/", status=403))
    with pytest.raises(NotFoundError, match=r"access denied \(HTTP 403\); the repo is private or gated:"):
        get_json(info_url(hub), WHERE, SENT, headers={"authorization": "Bearer right"})
    hub.add_fault(Fault("status", match="/api/", status=503, retry_after=2))
    with pytest.raises(RetryableError, match="HTTP 503") as e:
        get_json(info_url(hub), WHERE, SENT, headers={"authorization": "Bearer right"})
    assert e.value.retry_after == 2.0


def test_get_json_is_bounded(hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_commit("org/a", [HubFile("config.json", data=b"{}")])
    monkeypatch.setattr(http, "HUB_ANSWER", Bound("hub's answer", 4096, depth=8))
    hub.add_fault(Fault("body", match="/api/", body=json.dumps({"x": "y" * 5000}).encode()))
    with pytest.raises(HubError, match="larger than 4096 bytes"):
        get_json(info_url(hub), WHERE, ANONYMOUS, headers={})
    hub.add_fault(Fault("body", match="/api/", body=b"[" * 9 + b"]" * 9))
    with pytest.raises(ValueError, match="deeper than 8"):
        get_json(info_url(hub), WHERE, ANONYMOUS, headers={})
    hub.add_fault(Fault("body", match="/api/", body=b'{"sha": "\xff"}'))
    with pytest.raises(ValueError, match="not UTF-8"):
        get_json(info_url(hub), WHERE, ANONYMOUS, headers={})


def test_a_dropped_connection_is_retryable(hub: LoopbackHub) -> None:
    with GarbageServer() as garbage, pytest.raises(RetryableError, match="connection failed"):
        get_json(f"{garbage.url()}/api/models/org/a/revision/main", WHERE, ANONYMOUS, headers={})
    hub.add_commit("org/a", [HubFile("w.bin", data=DATA)])
    hub.add_fault(Fault("cut", match="w.bin", at_byte=1000))
    with pytest.raises(RetryableError, match=r"connection failed") as e:
        fetch(file_request(hub))
    assert "w.bin (at byte " in str(e.value)


def file_request(hub: LoopbackHub, path: str = "w.bin", token: TokenHint = ANONYMOUS) -> FileRequest:
    return FileRequest(f"{hub.url}/org/a/resolve/main/{path}", {"user-agent": "test"}, token)


def test_get_range_asks_for_the_bytes_wanted(hub: LoopbackHub) -> None:
    hub.add_commit("org/a", [HubFile("w.bin", data=DATA)])
    with get_range(file_request(hub), "w.bin") as whole:
        assert (whole.start, whole.partial, b"".join(whole.chunks())) == (0, False, DATA)
    with get_range(file_request(hub), "w.bin", 1000) as tail:
        assert (tail.start, tail.partial, b"".join(tail.chunks())) == (1000, True, DATA[1000:])
    with get_range(file_request(hub), "w.bin", 1000, 3000) as piece:
        assert (piece.start, piece.partial, b"".join(piece.chunks())) == (1000, True, DATA[1000:3000])
    sent = [(r.headers.get("range"), r.headers.get("accept-encoding"), r.status) for r in hub.downloads()]
    assert sent == [
        (None, "identity", 200),
        ("bytes=1000-", "identity", 206),
        ("bytes=1000-2999", "identity", 206),
    ]
    hub.ignore_range = True
    with get_range(file_request(hub), "w.bin", 1000, 3000) as ignored:
        assert (ignored.start, ignored.partial) == (0, False)


def fetch(request: FileRequest, start: int = 0) -> bytes:
    with get_range(request, request.url.rsplit("/", 1)[1], start) as answer:
        return b"".join(answer.chunks())


def test_get_range_maps_the_hubs_refusals(hub: LoopbackHub) -> None:
    hub.add_commit("org/a", [HubFile("w.bin", data=DATA)])
    with pytest.raises(NotFoundError, match=r"missing.bin: not found on the hub \(HTTP 404\)"):
        fetch(file_request(hub, "missing.bin"))
    hub.add_fault(Fault("status", match="w.bin", status=403))
    with pytest.raises(NotFoundError, match=r"access denied \(HTTP 403\).*was sent and refused"):
        fetch(file_request(hub, token=SENT), 10)
    hub.add_fault(Fault("status", match="w.bin", status=429, retry_after=1))
    with pytest.raises(RetryableError) as e:
        fetch(file_request(hub))
    assert e.value.retry_after == 1.0
