"""Fidelity with the clients' own trees (issue 11, section 4): where the caches are, what an import writes
under HF_HUB_DISABLE_SYMLINKS, HF repos in the ModelScope cache, and repos kept as independent as the
clients keep them (no hardlink across repos by default; none across revisions in --no-symlinks trees).

The real huggingface_hub and modelscope answer in subprocesses, with the environment under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.settings import hf_cache_dir, modelscope_cache_dir

# -- where the caches are ---------------------------------------------------------------------------------

# Each row: the variables set (HOME comes from the test unless the row sets or removes it; None removes).
HF_ENVS: list[dict[str, str | None]] = [
    {},
    {"HF_HUB_CACHE": "/abs/hub"},
    {"HF_HUB_CACHE": ""},  # set but empty: the current folder, as huggingface_hub takes it
    {"HUGGINGFACE_HUB_CACHE": "/legacy/hub"},
    {"HUGGINGFACE_HUB_CACHE": "/legacy/hub", "HF_HUB_CACHE": "/new/hub", "HF_HOME": "/home-hf"},
    {"HUGGINGFACE_HUB_CACHE": "~/legacy", "HF_HOME": "/ignored"},
    {"HUGGINGFACE_HUB_CACHE": "", "HF_HOME": "/ignored"},
    {"HF_HOME": "$BASE/hf", "BASE": "/from-var"},
    {"HF_HOME": ""},
    {"HF_HOME": "~/hf-home", "XDG_CACHE_HOME": "/ignored"},
    {"XDG_CACHE_HOME": "/xdg"},
    {"XDG_CACHE_HOME": ""},
    {"XDG_CACHE_HOME": "~/xdg"},
    {"HF_HUB_CACHE": "rel/hub"},
    {"HF_HUB_CACHE": "${HOME}/braces/$UNSET_VARIABLE_X/hub"},
    {"HF_HUB_CACHE": "$TILDE/hub", "TILDE": "~"},  # ~ is expanded before $VAR: it stays literal
    {"HF_HUB_CACHE": "~root/hub"},
    {"HF_HUB_CACHE": "~no-such-user-x/hub"},
    {"HOME": None},  # the password database's home
    {"HOME": ""},
]

MS_ENVS: list[dict[str, str | None]] = [
    {},
    {"MODELSCOPE_CACHE": "/abs/ms"},
    {"MODELSCOPE_CACHE": ""},  # empty: the default
    {"MODELSCOPE_CACHE": "~/ms"},
    {"MODELSCOPE_CACHE": "rel/ms"},
    {"MODELSCOPE_CACHE": "$HOME/ms"},  # no $VAR expansion: a folder named `$HOME` in the current one
    {"MODELSCOPE_CACHE": "/new/ms", "MS_CACHE_HOME": "/legacy/ms"},
    {"HOME": None},
    {"XDG_CACHE_HOME": "/xdg", "HF_HOME": "/hf"},  # neither moves the ModelScope cache
]

HF_PROBE = r"""
import importlib, json, os, sys
import huggingface_hub.constants as constants
out = []
for env in json.loads(sys.argv[1]):
    os.environ.clear()
    os.environ.update(env)
    out.append(importlib.reload(constants).HF_HUB_CACHE)
print(json.dumps(out))
"""

MS_PROBE = r"""
import json, os, sys
import modelscope.hub as ms_hub
import modelscope_hub.config
from modelscope import snapshot_download
from modelscope_hub.errors import CacheNotFound
keep = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
out = []
for env in json.loads(sys.argv[1]):
    os.environ.clear()
    os.environ.update(keep, **env)
    modelscope_hub.config.set_default_config(None)
    ms_hub._sync_config()  # what `import modelscope.hub` runs: MS_CACHE_HOME
    try:
        snapshot_download("o/n", revision="master", local_files_only=True)
        out.append(None)
    except CacheNotFound as e:  # names the folder it looked for
        out.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(e.cache_dir)))))
print(json.dumps(out))
"""


def _env(row: dict[str, str | None], home: Path) -> dict[str, str]:
    env = {"HOME": str(home)}
    for key, value in row.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _probe(script: str, envs: list[dict[str, str]], cwd: Path) -> list[str | None]:
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(envs)],
        cwd=cwd,
        env={**os.environ, "TQDM_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_hf_cache_dir_is_where_huggingface_hub_looks(tmp_path: Path) -> None:
    envs = [_env(row, tmp_path / "home") for row in HF_ENVS]
    theirs = _probe(HF_PROBE, envs, tmp_path)
    ours = [str(hf_cache_dir(env)) for env in envs]
    # Path() drops a trailing "/." or "" the same way for both; the strings are compared, not resolved.
    assert [str(Path(str(p))) for p in theirs] == ours


def test_modelscope_cache_dir_is_where_modelscope_looks(tmp_path: Path) -> None:
    envs = [_env(row, tmp_path / "home") for row in MS_ENVS]
    theirs = _probe(MS_PROBE, envs, tmp_path)
    # modelscope resolves its cache (relative to the current folder, through symlinks); so does this check.
    ours = [os.path.realpath(tmp_path / modelscope_cache_dir(env)) for env in envs]
    assert theirs == ours


def test_modelscope_legacy_ms_cache_home_is_honoured_though_modelscope_fails_on_it(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "MS_CACHE_HOME": "~/legacy"}
    assert modelscope_cache_dir(env) == tmp_path / "legacy"
    assert modelscope_cache_dir({**env, "MODELSCOPE_CACHE": "/ms"}) == Path("/ms")
    assert modelscope_cache_dir({**env, "MODELSCOPE_CACHE": ""}) == tmp_path / "legacy"


@pytest.mark.parametrize(
    ("layout", "env", "where"),
    [
        ("hf", {"HUGGINGFACE_HUB_CACHE": "~/legacy-hub", "HF_HUB_CACHE": None}, "legacy-hub"),
        ("hf", {"HF_HUB_CACHE": None, "HF_HOME": None, "XDG_CACHE_HOME": "~/xdg"}, "xdg/huggingface/hub"),
        ("modelscope", {"MODELSCOPE_CACHE": "~/ms"}, "ms"),
    ],
)
def test_inventory_and_verify_default_to_the_clients_cache(
    layout: str, env: dict[str, str | None], where: str, isolated_home: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from mirror.cli import cli

    target = isolated_home / where
    sample = target / ("models--org--x" if layout == "hf" else "models/org--x") / "snapshots" / "c"
    sample.mkdir(parents=True)
    (sample / "f.txt").write_text("x")
    runner = CliRunner()
    got = runner.invoke(
        cli, ["inventory", "--layout", layout, "-o", str(tmp_path / "have.json"), "--json"], env=env
    )
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["target"] == str(target)
    assert json.loads(got.stdout)["repos"] == 1
    got = runner.invoke(cli, ["verify", "--layout", layout, "--json"], env=env)
    assert f"{target} holds no receipt" in str(got.exception)  # that tree was read, and found not imported
