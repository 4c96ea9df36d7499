"""Remote code in a revision: its `*.py` files, the `auto_map` of its config files (the classes
transformers imports from the repo's own code with `trust_remote_code=True`), and code taken from other
repos (`"org/repo--module.Class"`), with the repos so referenced (a model whose code lives in a repo the
manifest does not sync will not load offline).

Class references are read exactly as transformers reads them (`dynamic_module_utils.
get_class_from_dynamic_module`): `repo--module.Class` splits on `--` into exactly two parts, the repo id
and `module.Class`; that splits on `.` into exactly two parts, the module file (`module.py`) and the class.
A reference without `--` names a module of the repo itself. A tokenizer's entry is a list `[slow, fast]`,
either of which may be null; a legacy tokenizer_config.json has that list as its whole `auto_map`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mirror.bounded import MODEL_CONFIG, parse_json
from mirror.repo import repo_id_problem
from mirror.validate.findings import Finding

# The config files whose `auto_map` transformers reads (models, tokenizers, feature extractors, image,
# video and multimodal processors), in any folder of the repo (a `subfolder=` load reads them there).
CONFIG_FILES = frozenset(
    {
        "config.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "video_preprocessor_config.json",
    }
)
MAX_REFERENCES = 256  # class references listed per file; a file with more gets one finding for the rest
_SHOWN = 120  # characters of an untrusted string shown in a finding

Read = Callable[[str], "bytes | None"]


@dataclass(frozen=True)
class RemoteCode:
    """What `check_remote_code` found: the findings (kind "remote_code"), and the other repos whose code
    the revision's `auto_map` names (sorted; the revision's own id is never written as `repo--`, but if it
    is, it appears here too: the caller compares with what it syncs)."""

    findings: tuple[Finding, ...]
    repos: tuple[str, ...]


def check_remote_code(files: Mapping[str, int], read: Read) -> RemoteCode:
    """The remote code of a revision whose files are `files` (repo path -> size in bytes). `read(path)`
    gives the bytes of a config file (None when it cannot be read); it is called only for the config files
    named in CONFIG_FILES and only when they are within the MODEL_CONFIG bound. Never raises on content."""
    findings: list[Finding] = []
    repos: set[str] = set()
    for path in sorted(files):
        name = posixpath.basename(path)
        if name.lower().endswith(".py"):
            findings.append(
                Finding(path, "remote_code", "Python code (transformers runs it with trust_remote_code=True)")
            )
        elif name in CONFIG_FILES:
            _ConfigCheck(path, files, findings, repos).run(files[path], read)
    return RemoteCode(tuple(findings), tuple(sorted(repos)))


def _shown(value: Any) -> str:
    """An untrusted value quoted for a finding: repr escapes control and bidi characters; cut when long."""
    return _cut(repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


@dataclass
class _ConfigCheck:
    """The auto_map of one config file, its findings and the other repos it names added to the lists."""

    path: str
    files: Mapping[str, int]
    findings: list[Finding]
    repos: set[str]

    def run(self, size: int, read: Read) -> None:
        unknown = "its auto_map, if any, is unknown"
        if size > MODEL_CONFIG.size:
            return self.note(f"is {size} bytes, over the {MODEL_CONFIG.size}-byte bound: not read, {unknown}")
        data = read(self.path)
        if data is None:
            return self.note(f"could not be read: {unknown}")
        if len(data) > MODEL_CONFIG.size:
            return self.note(f"is over the {MODEL_CONFIG.size}-byte bound: not read, {unknown}")
        try:
            config = parse_json(data, MODEL_CONFIG)
        except ValueError as e:
            return self.note(f"is not valid JSON ({e}): {unknown}")
        if not isinstance(config, dict):
            return self.note(f"is not a JSON object: {unknown}")
        if "auto_map" not in config:
            return None
        auto_map = config["auto_map"]
        if isinstance(auto_map, list):  # a legacy tokenizer_config.json: the [slow, fast] pair itself
            auto_map = {"AutoTokenizer": auto_map}
        if not isinstance(auto_map, dict):
            return self.note(
                "has an auto_map that is neither an object nor a list: transformers cannot use it"
            )
        entries = [(str(auto_class), value) for auto_class, value in auto_map.items()]
        references = [
            (auto_class, ref)
            for auto_class, value in entries
            for ref in (value if isinstance(value, list) else [value])
            if ref is not None  # a tokenizer without its slow (or fast) class
        ]
        for auto_class, ref in references[:MAX_REFERENCES]:
            self.reference(auto_class, ref)
        if len(references) > MAX_REFERENCES:
            self.note(
                f"has {len(references)} class references in its auto_map; only the first "
                f"{MAX_REFERENCES} are listed"
            )
        return None

    def note(self, detail: str) -> None:
        self.findings.append(Finding(self.path, "remote_code", f"{posixpath.basename(self.path)} {detail}"))

    def reference(self, auto_class: str, ref: Any) -> None:
        """One class reference, parsed as get_class_from_dynamic_module parses it."""
        where = f"auto_map {_shown(auto_class)}"
        if not isinstance(ref, str):
            return self.note(f"{where}: {_shown(ref)} is not a class reference: transformers cannot load it")
        repo = None
        reference = ref
        if "--" in ref:
            parts = ref.split("--")
            if len(parts) != 2:
                return self.note(
                    f"{where}: {_shown(ref)} has more than one '--': transformers cannot load it"
                )
            repo, reference = parts
        pieces = reference.split(".")
        if len(pieces) != 2:
            return self.note(
                f"{where}: {_shown(ref)} is not 'module.Class' (or 'org/repo--module.Class'): "
                "transformers cannot load it"
            )
        module, cls = pieces
        code = f"class {_shown(cls)} of {_shown(module + '.py')}"
        if repo is None:
            return self.note(f"{where}: {code} in this repo{self.missing(module + '.py')}")
        problem = repo_id_problem(repo)
        if problem is not None:
            return self.note(f"{where}: {code} from {_shown(repo)}, which is not a repo id ({_cut(problem)})")
        self.repos.add(repo)
        return self.note(f"{where}: {code} from another repo, {repo}")

    def missing(self, module_file: str) -> str:
        """ ", which is not in this revision" when neither the config's folder nor the root has the file."""
        beside = posixpath.join(posixpath.dirname(self.path), module_file)
        return "" if beside in self.files or module_file in self.files else ", which is not in this revision"
