"""Settings from the environment the CLI reads once and passes in: where the store is, hub endpoints, tokens."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mirror.errors import UsageError
from mirror.repo import HUBS
from mirror.s3 import is_s3_url

StoreName = (
    Path | str
)  # a store's folder, or its "s3://bucket/prefix" URL (never made a Path: it would lose a "/")

_HF, _MS = HUBS["huggingface"], HUBS["modelscope"]


@dataclass(frozen=True)
class Settings:
    store: StoreName
    hf_endpoint: str = _HF.endpoint
    modelscope_endpoint: str = _MS.endpoint
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, store: str | Path | None, env: Mapping[str, str]) -> Settings:
        """The settings `env` (the CLI's os.environ) gives, with the store `store` when one is named."""
        env = dict(env)
        return cls(
            store=store_name(store) if store else default_store(env),
            hf_endpoint=env.get(_HF.endpoint_env, _HF.endpoint).rstrip("/"),
            modelscope_endpoint=env.get(_MS.endpoint_env, _MS.endpoint).rstrip("/"),
            env=env,
        )

    def token(self, token_env: str | None, default_env: str) -> str | None:
        """The token from the variable a manifest names, else the hub's usual one; never logged."""
        return self.env.get(token_env or default_env) or None


def endpoint_problem(url: str) -> str | None:
    """What is wrong with a hub endpoint (it must be an http:// or https:// URL with a host), or None."""
    if any(c.isspace() for c in url):
        return f"endpoint {url!r} contains whitespace"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        why = f"endpoint {url!r} must be an http:// or https:// URL with a host"
        if url and "://" not in url:
            return f"{why}; it has no scheme: write https://{url} (or http://{url})"
        return f"{why}, such as {_HF.endpoint}"
    if parts.username is not None or parts.password is not None:
        return "endpoint must not contain credentials; put the token in the variable named by token_env"
    if parts.query or parts.fragment:
        return f"endpoint {url!r} must not have a query or fragment"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"endpoint {url!r} has an invalid port"
    return None


def check_endpoint(url: str, origin: str) -> str:
    """`url` without its trailing slash; UsageError (exit 2) naming `origin` (the variable or manifest key
    it came from) when it is not an http(s) URL."""
    problem = endpoint_problem(url)
    if problem is not None:
        raise UsageError(f"{origin}: {problem}")
    return url.rstrip("/")


def store_name(text: str | Path) -> StoreName:
    """What the user named as a store: an s3:// URL kept as it is (not resolved against the current folder),
    anything else a folder as given; UsageError for a URL of another scheme (never taken for a folder)."""
    if isinstance(text, str) and is_s3_url(text):
        return text
    if "://" in str(text):
        raise UsageError(f"{str(text)!r}: a store is a folder or an s3://BUCKET/PREFIX URL")
    return Path(text)


def local_target(target: Path | str) -> Path:
    """The folder a layout writes or reads; UsageError for an s3:// URL, which only a store may be (and
    which `verify` and `scan` read as `--store`, not as a `--target`)."""
    if is_s3_url(target):
        raise UsageError(
            f"{target}: a --target here is a folder; a store in a bucket is read with --store {target}"
        )
    return Path(target)


def default_store(env: Mapping[str, str]) -> StoreName:
    """`$MIRROR_STORE` (a folder or an s3:// URL), else `$XDG_DATA_HOME/mirror`."""
    if env.get("MIRROR_STORE"):
        return store_name(env["MIRROR_STORE"])
    data_home = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(data_home) / "mirror"


def hf_cache_dir(env: Mapping[str, str]) -> Path:
    """Where huggingface_hub looks (its constants.py, step by step): `$HF_HUB_CACHE`, else the legacy
    `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    `~/.cache/huggingface/hub`; `~` and `$VAR` expanded (in that order) in the first two and in HF_HOME's
    value. A variable set but empty is taken as given, as huggingface_hub takes it (so `HF_HUB_CACHE=`
    is the current folder); a relative path stays relative to the current folder."""
    default_home = os.path.join(expanduser("~", env), ".cache")
    hf_home = expand(
        env.get("HF_HOME", os.path.join(env.get("XDG_CACHE_HOME", default_home), "huggingface")), env
    )
    legacy = env.get("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
    return Path(expand(env.get("HF_HUB_CACHE", legacy), env))


def hf_symlinks_disabled(env: Mapping[str, str]) -> bool:
    """Whether huggingface_hub would write no symlinks into its cache: HF_HUB_DISABLE_SYMLINKS set to 1, ON,
    YES or TRUE, any case (its constants._is_true)."""
    return env.get("HF_HUB_DISABLE_SYMLINKS", "").upper() in {"1", "ON", "YES", "TRUE"}


def modelscope_cache_dir(env: Mapping[str, str]) -> Path:
    """Where modelscope (1.40, through modelscope_hub's HubConfig) looks: `$MODELSCOPE_CACHE` when set and
    not empty, else the legacy `$MS_CACHE_HOME` (which modelscope 1.40 itself cannot use: it fails with a
    TypeError), else `~/.cache/modelscope`; `~` expanded, `$VAR` not. (Not
    ~/.cache/modelscope/hub, which the client does not read.)"""
    value = (
        env.get("MODELSCOPE_CACHE") or env.get("MS_CACHE_HOME") or os.path.join("~", ".cache", "modelscope")
    )
    return Path(expanduser(value, env))


def default_target(layout: str, env: Mapping[str, str]) -> StoreName | None:
    """Where a layout's tree is when `--target` is not given: where its hub client looks (`hf_cache_dir`,
    `modelscope_cache_dir`), the default store for `store`; None for a layout without a default (`dir`)."""
    if layout == "store":
        return default_store(env)
    if layout == "hf":
        return hf_cache_dir(env)
    if layout == "modelscope":
        return modelscope_cache_dir(env)
    return None


def expand(path: str, env: Mapping[str, str]) -> str:
    """os.path.expandvars(os.path.expanduser(path)), with env in place of os.environ."""
    return expandvars(expanduser(path, env), env)


def expanduser(path: str, env: Mapping[str, str]) -> str:
    """posixpath.expanduser with env's HOME (when HOME is unset: the password database's)."""
    if not path.startswith("~"):
        return path
    end = path.find("/", 1)
    end = len(path) if end < 0 else end
    try:
        if end == 1:
            home = env["HOME"] if "HOME" in env else pwd.getpwuid(os.getuid()).pw_dir
        else:
            home = pwd.getpwnam(path[1:end]).pw_dir
    except KeyError:
        return path
    return (home.rstrip("/") + path[end:]) or "/"


_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)


def expandvars(path: str, env: Mapping[str, str]) -> str:
    """posixpath.expandvars with env: `$NAME` and `${NAME}` replaced when set, left as they are otherwise."""
    start = 0
    while match := _VARIABLE.search(path, start):
        name = match.group(1)
        name = name[1:-1] if name.startswith("{") else name
        if name in env:
            head, tail = path[: match.start()] + env[name], path[match.end() :]
            path, start = head + tail, len(head)
        else:
            start = match.end()
    return path
