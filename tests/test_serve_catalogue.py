"""GET /, the catalogue of `mirror serve` (mirror/serve/catalogue.py): the HTML, escaped, in-process; then
the page as a real headless browser (Debian's chromium) renders it from a served store, and every link on
it followed."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from starlette.requests import Request

from mirror.clock import SYSTEM
from mirror.repo import RepoKey
from mirror.serve.catalogue import base_url, file_url, render, snippets
from mirror.serve.view import StoreView
from mirror.store import Store
from tests.asgi import scope
from tests.conftest import TINY_MAIN, TINY_V1, put_repo
from tests.serving import served

CHROMIUM = "/usr/bin/chromium"
HOSTILE = "<script>alert(1)</script>\"'&x.txt"
BASE = "http://mirror.internal:8088"


@dataclass
class Page(HTMLParser):
    """What a test reads of a page: links, element ids, section ids, text, and any script element."""

    hrefs: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    sections: list[str] = field(default_factory=list)
    scripts: int = 0
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "a" and a.get("href") is not None:
            self.hrefs.append(a["href"] or "")
        if a.get("id"):
            self.ids.add(a["id"] or "")
            if tag == "section":
                self.sections.append(a["id"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def fill(store: Store) -> None:
    put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1}, synced_at="2026-11-20T10:00:00Z")
    put_repo(store, "org/data", {"main": {"data/train.csv": b"a,b\n1,2\n"}}, repo_type="dataset")
    put_repo(
        store,
        "owner/ms",
        {"master": {"configuration.json": b"{}", "d/w.bin": b"w" * 3000}},
        source="modelscope",
    )
    put_repo(
        store, "org/evil", {"main": {HOSTILE: b"x", "a dir/b&c.txt": b"y"}}, synced_at="2026-11-22T09:00:00Z"
    )


@pytest.fixture
def view(tmp_path: Path) -> StoreView:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    fill(store)
    return StoreView(store)


# --------------------------------------------------------------------------------------------------
# The HTML, in-process
# --------------------------------------------------------------------------------------------------


def test_hostile_names_are_escaped_and_no_script_is_on_the_page(view: StoreView) -> None:
    html = render(view.repos(), BASE)
    assert "<script" not in html.lower()
    page = parse(html)
    assert page.scripts == 0
    assert HOSTILE in "".join(page.text)  # shown as text, as it is named
    evil = [h for h in page.hrefs if "evil/resolve" in h]
    assert len(evil) == 2 and all(" " not in h and "<" not in h and '"' not in h for h in evil)
    assert any(unquote(h).endswith(HOSTILE) for h in evil)


def test_page_lists_every_repo_revision_commit_file_and_size(view: StoreView) -> None:
    page = parse(render(view.repos(), BASE))
    assert page.sections == [
        "huggingface:dataset:org/data",
        "huggingface:org/evil",
        "huggingface:org/tiny",
        "modelscope:owner/ms",
    ]
    text = " ".join(page.text)
    tiny = view.repo("huggingface", "model", "org/tiny")
    assert tiny is not None
    for name, ref in tiny.refs.items():
        assert name in text and ref.commit in text
        assert f"huggingface:org/tiny@{ref.commit}" in page.ids  # each commit's files have an anchor
        assert f"#huggingface:org/tiny@{ref.commit}" in page.hrefs  # linked from its revision
    assert "2026-11-20T10:00:00Z" in text and "2026-11-22T09:00:00Z" in text
    assert "16.0 KiB" in text  # model.safetensors, 16384 bytes, in human units
    for section in page.sections:
        assert f"#{section}" in page.hrefs  # the table of contents links each repo
    ms = "/api/v1/models/owner/ms/repo?Revision="
    assert any(h.startswith(ms) and h.endswith("&FilePath=d%2Fw.bin") for h in page.hrefs)


def test_snippets_name_the_right_client_and_the_host_as_requested(view: StoreView) -> None:
    html = render(view.repos(), BASE)
    assert (
        "HF_ENDPOINT=http://mirror.internal:8088 python -c &quot;from transformers import AutoModel; "
        "AutoModel.from_pretrained(&#x27;org/tiny&#x27;)&quot;"
    ) in html
    by_key = {str(r.key): r.key for r in view.repos()}
    model = snippets(by_key["huggingface:org/tiny"], BASE, modelscope_too=True)
    assert [s.split("=")[0] for s in model] == ["HF_ENDPOINT", "MODELSCOPE_ENDPOINT"]
    assert "load_dataset('org/data')" in snippets(by_key["huggingface:dataset:org/data"], BASE, False)[0]
    (ms,) = snippets(by_key["modelscope:owner/ms"], BASE, False)
    assert ms.startswith(f"MODELSCOPE_ENDPOINT={BASE} ") and "snapshot_download('owner/ms')" in ms
    space = snippets(RepoKey("huggingface", "space", "org/app"), BASE, modelscope_too=True)
    assert space == [f"HF_ENDPOINT={BASE} hf download --repo-type space org/app"]
    assert snippets(RepoKey("huggingface", "model", "gpt2"), BASE, modelscope_too=False) == [
        f"HF_ENDPOINT={BASE} python -c \"from transformers import AutoModel; AutoModel.from_pretrained('gpt2')\""
    ]


def test_file_urls_per_source_and_type(view: StoreView) -> None:
    keys = {str(r.key): r.key for r in view.repos()}
    c = "a" * 40
    assert file_url(keys["huggingface:org/tiny"], c, "sub/x y.bin") == f"/org/tiny/resolve/{c}/sub/x%20y.bin"
    assert (
        file_url(keys["huggingface:dataset:org/data"], c, "d.csv") == f"/datasets/org/data/resolve/{c}/d.csv"
    )
    assert (
        file_url(keys["modelscope:owner/ms"], c, "d/a+b.txt")
        == f"/api/v1/models/owner/ms/repo?Revision={c}&FilePath=d%2Fa%2Bb.txt"
    )


def test_an_empty_store_says_so(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "empty", clock=SYSTEM)
    html = render(StoreView(store).repos(), BASE)
    assert "holds no repos yet" in html and parse(html).sections == []


# --------------------------------------------------------------------------------------------------
# In a real browser
# --------------------------------------------------------------------------------------------------


def chromium() -> str:
    """The browser, or a skip (a failure under CI=true, where `make system-deps` has installed it)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return found
    why = f"{CHROMIUM} is missing: run `make system-deps` (installs Debian's chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def dump_dom(url: str, profile: Path) -> str:
    """The page's DOM as chromium renders it, headless, with a fresh profile and nothing phoning home."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            status: int = response.status
            return status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.e2e
def test_the_page_in_a_headless_browser_and_every_link_works(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    fill(store)
    with served(store.local_root) as server:
        dom = dump_dom(server.url + "/", tmp_path / "profile")
        page = parse(dom)
        assert page.scripts == 0 and HOSTILE in "".join(page.text)
        assert len(page.sections) == 4
        text = " ".join(page.text)
        assert "v1.0" in text and "main" in text and "master" in text
        assert f"HF_ENDPOINT={server.url} python -c" in text  # the host the browser asked
        files = 0
        for href in dict.fromkeys(page.hrefs):
            url = urljoin(server.url + "/", href)
            parts = urlsplit(url)
            if parts.fragment:
                assert unquote(parts.fragment) in page.ids, href  # an anchor on this page
            assert status_of(url) == 200, href
            files += "resolve/" in href or "FilePath=" in href
        assert files == len(TINY_MAIN) + len(TINY_V1) + 1 + 2 + 2


def test_one_pass_over_the_store_however_many_repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.at(tmp_path / "many", clock=SYSTEM)
    for i in range(150):
        put_repo(
            store, f"org/m{i:03d}", {"main": {"config.json": b"{}", f"w{i}.bin": b"w"}, "v1": {"a.txt": b"a"}}
        )
    view = StoreView(store)
    reads: list[str] = []
    real = store.read_snapshot
    monkeypatch.setattr(store, "read_snapshot", lambda key, commit: reads.append(commit) or real(key, commit))
    page = parse(render(view.repos(), BASE))
    assert len(page.sections) == 150 and len(reads) == 300  # each commit's record read once
    reads.clear()
    assert len(parse(render(view.repos(), BASE)).sections) == 150
    assert reads == []  # unchanged records are not parsed again


def test_a_host_header_that_is_no_host_is_not_echoed() -> None:
    def request(host: str) -> Request:
        return Request(scope("GET", "/", host=host) | {"server": ("10.0.0.5", 8088)})

    assert base_url(request("mirror.internal:8088")) == "http://mirror.internal:8088"
    assert base_url(request("[::1]:8088")) == "http://[::1]:8088"
    assert base_url(request('x"><script>alert(1)</script>')) == "http://10.0.0.5:8088"
    assert base_url(request("a b")) == "http://10.0.0.5:8088"


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="make system-deps"):
        chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="make system-deps"):
        chromium()
