"""GET /: the catalogue of `mirror serve`, the page a person reads.

Every repo the store holds (both sources, models and datasets), with its revisions, the commit each names
and when it arrived, the files of each commit with their sizes and download links, what the policy refuses
of them and why (mirror.serve.policing), and a command to copy that loads the repo through this server. One pass over the store per request; plain server-rendered HTML
with no script and no external resource. Every name on the page (repo ids, revisions, file names) is
escaped, and the page's Content-Security-Policy allows nothing but its own inline style.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from urllib.parse import quote, quote_plus

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from mirror.repo import RepoKey
from mirror.serve.policing import Judged
from mirror.serve.view import ServedCommit, ServedRepo, StoreView
from mirror.units import human_size
from mirror.validate.policy import Ruling, ruling_words

_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
FOLD_OVER = 20  # file lists longer than this start folded
POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin:0 0 .4em}
section{border:1px solid #ddd;border-radius:6px;padding:1em;margin:1.2em 0}
table{border-collapse:collapse;margin:.4em 0}td,th{padding:.15em .8em .15em 0;text-align:left;vertical-align:top}
td.size{text-align:right;white-space:nowrap}code,pre{font:13px ui-monospace,monospace}
pre{background:#f5f5f5;padding:.5em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.tag{font-size:.8em;background:#eef;border-radius:3px;padding:0 .4em;margin-left:.4em;font-weight:normal}
.muted{color:#666}.refused{color:#a00}
"""


def anchor(key: RepoKey, commit: str = "") -> str:
    """The id of a repo's section (its key: `huggingface:org/name`, `modelscope:dataset:org/name`), or
    of the files of one of its commits (`huggingface:org/name@<commit>`)."""
    return f"{key}@{commit}" if commit else str(key)


def link(target: str) -> str:
    """The escaped href of a link to the element of id `target` on the page."""
    return escape("#" + quote(target, safe=":/@"))


def file_url(key: RepoKey, commit: str, path: str) -> str:
    """Where this server sends the file: the Hub's resolve URL, or ModelScope's file download."""
    if key.source == "modelscope":
        kind = f"{key.repo_type}s"
        return f"/api/v1/{kind}/{quote(key.repo_id)}/repo?Revision={quote_plus(commit)}&FilePath={quote_plus(path)}"
    prefix = "" if key.repo_type == "model" else f"{key.repo_type}s/"
    return f"/{prefix}{quote(key.repo_id)}/resolve/{quote(commit, safe='')}/{quote(path)}"


# What loads a repo, per hub and repo type: the Python a person pastes after `python -c` (or a command).
_HF_LOAD = {
    "model": "from transformers import AutoModel; AutoModel.from_pretrained('{id}')",
    "dataset": "from datasets import load_dataset; print(load_dataset('{id}'))",
}
_MS_LOAD = {
    "model": "from modelscope import snapshot_download; print(snapshot_download('{id}'))",
    "dataset": "from modelscope.hub.snapshot_download import dataset_snapshot_download; "
    "print(dataset_snapshot_download('{id}'))",
}


def snippets(key: RepoKey, base: str, modelscope_too: bool) -> list[str]:
    """Commands that load the repo through this server, as a person pastes them into a shell: the Hub's
    client for a Hugging Face repo, and ModelScope's for a ModelScope repo (and, when `modelscope_too`,
    for a Hugging Face repo it serves under `master`)."""
    lines = []
    if key.source == "huggingface":
        load = _HF_LOAD.get(key.repo_type)
        if load is None:  # a space: no library loads one, the CLI downloads it
            lines.append(f"HF_ENDPOINT={base} hf download --repo-type {key.repo_type} {key.repo_id}")
        else:
            lines.append(f'HF_ENDPOINT={base} python -c "{load.format(id=key.repo_id)}"')
    ms_load = _MS_LOAD.get(key.repo_type)
    if ms_load is not None and (key.source == "modelscope" or modelscope_too):
        lines.append(f'MODELSCOPE_ENDPOINT={base} python -c "{ms_load.format(id=key.repo_id)}"')
    return lines


def base_url(request: Request) -> str:
    """This server as the client named it (the Host header), or its own address when that is not a host."""
    host = request.headers.get("host", "")
    if not _HOST.match(host):
        server = request.scope.get("server") or ("127.0.0.1", 8088)
        host = f"{server[0]}:{server[1]}"
    return f"{request.url.scheme}://{host}"


def _refused_html(rulings: Sequence[Ruling]) -> str:
    """What refuses a file or a revision, as the 403 says it (each finding and its rule), escaped."""
    if not rulings:
        return ""
    return f'<span class="refused">refused: {escape("; ".join(ruling_words(r) for r in rulings))}</span>'


def _commit_html(key: RepoKey, commit: ServedCommit, names: list[str], judged: Judged | None) -> str:
    total = sum(f.size for f in commit.files)
    whole = judged.whole if judged is not None else ()
    rows = "".join(
        f'<tr><td><a href="{escape(file_url(key, commit.commit, f.path))}">{escape(f.path)}</a></td>'
        f'<td class="size" title="{f.size} bytes">{human_size(f.size)}</td>'
        f"<td>{'LFS' if f.lfs else ''}</td>"
        # a file the revision's own denial refuses says so once, above the table
        f"<td>{_refused_html([r for r in judged.refusing(f.path) if r not in whole]) if judged else ''}</td></tr>"
        for f in commit.files
    )
    fold = "" if len(commit.files) > FOLD_OVER else " open"
    refused = f"<p>every file {_refused_html(whole)}</p>" if whole else ""
    return (
        f'<details id="{escape(anchor(key, commit.commit))}"{fold}><summary>commit <code>{escape(commit.commit)}</code>'
        f" ({escape(', '.join(names))}): {len(commit.files)} files, {human_size(total)}, "
        f'arrived {escape(commit.synced_at)}</summary>{refused}<table class="files">{rows}</table></details>'
    )


def section(repo: ServedRepo, base: str, modelscope_too: bool) -> str:
    """One repo: its header, its snippets, its revisions, and the files of each commit they name."""
    key = repo.key
    head = (
        f'<section id="{escape(anchor(key))}"><h2><a href="{link(anchor(key))}">{escape(key.repo_id)}</a>'
        f'<span class="tag">{escape(key.source)}</span><span class="tag">{escape(key.repo_type)}</span></h2>'
        f'<p class="muted">last arrived {escape(repo.last_update() or "never")}</p>'
    )
    code = "".join(f"<pre><code>{escape(s)}</code></pre>" for s in snippets(key, base, modelscope_too))
    rows = []
    commits: dict[str, list[str]] = {}
    for name, ref in sorted(repo.refs.items()):
        commits.setdefault(ref.commit, []).append(name)
        rows.append(
            f'<tr><td>{escape(name)}</td><td><a href="{link(anchor(key, ref.commit))}">'
            f"<code>{escape(ref.commit)}</code></a></td>"
            f"<td>{escape(ref.synced_at)}</td></tr>"
        )
    revisions = (
        '<table class="revisions"><tr><th>revision</th><th>commit</th><th>arrived</th></tr>'
        + "".join(rows)
        + "</table>"
    )
    held = []
    for commit_id, names in commits.items():
        commit = repo.at(commit_id)
        if commit is not None:
            held.append(_commit_html(key, commit, names, repo.view.policing.judged(key, commit_id)))
    return head + code + revisions + "".join(held) + "</section>"


def render(repos: list[ServedRepo], base: str) -> str:
    """The whole page for these repos, `base` the server's URL as clients reach it."""
    repos = sorted(repos, key=lambda r: (r.key.repo_id.lower(), r.key.repo_type, r.key.source))
    ms_ids = {(r.key.repo_type, r.key.repo_id) for r in repos if r.key.source == "modelscope"}
    toc = "".join(
        f'<li><a href="{link(anchor(r.key))}">{escape(r.key.repo_id)}</a>'
        f'<span class="tag">{escape(r.key.source)}</span><span class="tag">{escape(r.key.repo_type)}</span></li>'
        for r in repos
    )
    # A Hugging Face repo answers on the ModelScope API too (under `master`), unless a ModelScope repo
    # of the same id does; a short id (no owner) has no ModelScope name.
    body = "".join(
        section(r, base, "/" in r.key.repo_id and (r.key.repo_type, r.key.repo_id) not in ms_ids)
        for r in repos
    )
    empty = "" if repos else "<p>The store holds no repos yet.</p>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mirror serve: {len(repos)} repos</title><style>{_STYLE}</style></head><body>"
        f"<h1>mirror serve</h1><p>{len(repos)} repos at <code>{escape(base)}</code>. "
        f"Clients use <code>HF_ENDPOINT={escape(base)}</code> or <code>MODELSCOPE_ENDPOINT={escape(base)}</code>."
        f'</p>{empty}<nav><ul class="toc">{toc}</ul></nav>{body}</body></html>'
    )


def routes(view: StoreView) -> list[BaseRoute]:
    def catalogue(request: Request) -> Response:
        page = render(view.repos(), base_url(request))
        return HTMLResponse(
            page, headers={"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff"}
        )

    return [Route("/", catalogue, methods=["GET"])]
