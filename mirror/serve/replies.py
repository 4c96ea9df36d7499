"""The error answers of `mirror serve` in the shapes the clients read: the Hugging Face Hub's (a JSON
`{"error": message}` with `X-Error-Code` and `X-Error-Message`, which huggingface_hub's
`hf_raise_for_status` turns into its exceptions) and ModelScope's envelope (`Code`, `Success`, `Message`)
on the ModelScope API's paths."""

from __future__ import annotations

import uuid

from starlette.responses import JSONResponse

MODELSCOPE_PREFIXES = ("/api/v1/", "/openapi/v1/")  # the ModelScope API's paths, beside the Hub's


def is_modelscope_path(path: str) -> bool:
    return path.startswith(MODELSCOPE_PREFIXES)


def hub_error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error as the Hugging Face Hub answers it; `code` is the X-Error-Code (`RepoNotFound`, ...)."""
    head = {"X-Error-Message": header_text(message), **(headers or {})}
    if code is not None:
        head["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=head)


def header_text(message: str) -> str:
    """`message` as a header value: printable ASCII, anything else escaped (`\\n`, `\\xe9`), as a header carries
    no line break and no character beyond Latin-1 (a message may quote a file's name or a pickle's global)."""
    if message.isascii() and message.isprintable():
        return message
    return "".join(
        c if c.isascii() and c.isprintable() else c.encode("unicode_escape").decode() for c in message
    )


def modelscope_error(status: int, message: str) -> JSONResponse:
    """An error in ModelScope's envelope."""
    body = {"Code": status, "Success": False, "Message": message, "RequestId": uuid.uuid4().hex, "Data": None}
    return JSONResponse(body, status_code=status)


def error_for(path: str, status: int, message: str, code: str | None = None) -> JSONResponse:
    """The error in the shape of the API the path belongs to (`code` only reaches Hub clients)."""
    if is_modelscope_path(path):
        return modelscope_error(status, message)
    return hub_error(status, message, code)
