"""Settings read once from the environment at the CLI edge: where the store is, hub endpoints, tokens."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mirror.errors import UsageError

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MODELSCOPE_DEFAULT_ENDPOINT = "https://www.modelscope.cn"


@dataclass(frozen=True)
class Settings:
    store: Path
    hf_endpoint: str = HF_DEFAULT_ENDPOINT
    modelscope_endpoint: str = MODELSCOPE_DEFAULT_ENDPOINT
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, store: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            store=Path(store) if store else default_store(env),
            hf_endpoint=env.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/"),
            modelscope_endpoint=env.get("MODELSCOPE_ENDPOINT", MODELSCOPE_DEFAULT_ENDPOINT).rstrip("/"),
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
        return f"{why}, such as {HF_DEFAULT_ENDPOINT}"
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


def default_store(env: Mapping[str, str]) -> Path:
    if env.get("MIRROR_STORE"):
        return Path(env["MIRROR_STORE"])
    data_home = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(data_home) / "mirror"


def hf_cache_dir(env: Mapping[str, str]) -> Path:
    """Where huggingface_hub looks: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if env.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(env["HF_HUB_CACHE"])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    cache_home = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(cache_home) / "huggingface" / "hub"


def modelscope_cache_dir(env: Mapping[str, str]) -> Path:
    """Where modelscope (1.40, through modelscope_hub's config) looks: MODELSCOPE_CACHE, else
    ~/.cache/modelscope. (DESIGN.md says ~/.cache/modelscope/hub, which the client does not read.)"""
    if env.get("MODELSCOPE_CACHE"):
        return Path(env["MODELSCOPE_CACHE"]).expanduser()
    return Path(env.get("HOME", "~")).expanduser() / ".cache" / "modelscope"
