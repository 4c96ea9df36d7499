"""The benchmark's data, generated once into the work dir: bf16 safetensors of random normals, and the
tokenizer and config files that sit beside real weights.

Weights are written tensor by tensor in chunks (memory stays flat however large a file is): the
safetensors header (8-byte little-endian length + JSON) and then the raw bf16 data, where a bf16 value is
the upper 16 bits of a float32 normal drawn by numpy. Each file's random stream is seeded by its name,
so the same scale always gives the same bytes. Generation runs in two processes (numpy's normal
generator holds the GIL) and finishes with a stamp file; a later run with the same scale reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 2
STAMP = "STAMP.json"
VALUES_PER_CHUNK = 4 << 20  # 8 MiB of bf16 per numpy call


@dataclass(frozen=True)
class Scale:
    """The sizes of one benchmark scale (the full one, or the quick smoke run the tests use)."""

    name: str
    hidden: int  # width of the fake transformer layers the weights are cut into
    intermediate: int
    shard_bytes: int  # each of the 4 large files of the 2 GB model
    one_file_bytes: int  # the single large file of the 1 GB model (and the 4 GB model's new shard)
    small_files: int  # files besides the weights in the 2 GB model
    vocab: int  # tokens in the tokenizer files
    small_repos: int  # repos in the no-op re-sync figure
    runs: int  # runs per figure and per side


FULL = Scale(
    name="full",
    hidden=4096,
    intermediate=11008,
    shard_bytes=500_000_000,
    one_file_bytes=1_000_000_000,
    small_files=30,
    vocab=50_000,
    small_repos=200,
    runs=3,
)
QUICK = Scale(
    name="quick",
    hidden=128,
    intermediate=344,
    shard_bytes=1_000_000,
    one_file_bytes=4_000_000,
    small_files=30,
    vocab=2_000,
    small_repos=10,
    runs=1,
)


@dataclass(frozen=True)
class Model:
    """A generated model folder and the repo id the loopback hub serves it as."""

    repo_id: str
    folder: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files())


@dataclass(frozen=True)
class Dataset:
    two_gb: Model  # 4 large shards + small files: the sync, export and import figures
    one_gb: Model  # one large file + config: the rate-limited sync and the 1 GB memory figure
    four_gb: Model  # the 2 GB model's shards + the 1 GB file + a new one: the 4 GB memory figure
    small: list[tuple[str, dict[str, bytes]]]  # (repo id, files) for the no-op re-sync

    @property
    def models(self) -> tuple[Model, Model, Model]:
        return (self.two_gb, self.one_gb, self.four_gb)


# --------------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------------


def layer_tensors(scale: Scale, target_bytes: int, first_layer: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a llama-like stack of layers filling `target_bytes` of bf16: whole tensors
    while they fit, then the rows of the next one that still fit (shards cut a model anywhere)."""
    h, i = scale.hidden, scale.intermediate
    per_layer = [
        ("input_layernorm.weight", (h,)),
        ("self_attn.q_proj.weight", (h, h)),
        ("self_attn.k_proj.weight", (h, h)),
        ("self_attn.v_proj.weight", (h, h)),
        ("self_attn.o_proj.weight", (h, h)),
        ("post_attention_layernorm.weight", (h,)),
        ("mlp.gate_proj.weight", (i, h)),
        ("mlp.up_proj.weight", (i, h)),
        ("mlp.down_proj.weight", (h, i)),
    ]
    out: list[tuple[str, tuple[int, ...]]] = []
    total = 0
    layer = first_layer
    while True:
        for name, shape in per_layer:
            size = 2 * int(np.prod(shape))
            if total + size > target_bytes:
                rows = (target_bytes - total) // (2 * int(np.prod(shape[1:])))
                if rows or not out:
                    out.append((f"model.layers.{layer}.{name}", (max(rows, 1), *shape[1:])))
                return out
            out.append((f"model.layers.{layer}.{name}", shape))
            total += size
        layer += 1


def _header(tensors: list[tuple[str, tuple[int, ...]]]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the safetensors writer does it
    return len(raw).to_bytes(8, "little") + raw


def _bf16_normals(rng: np.random.Generator, count: int) -> Iterator[bytes]:
    buf = np.empty(min(count, VALUES_PER_CHUNK), dtype=np.float32)
    left = count
    while left:
        n = min(left, buf.size)
        part = buf[:n]
        rng.standard_normal(out=part, dtype=np.float32)
        # bf16 = the upper 16 bits of the float32: on a little-endian machine, the odd uint16 halves
        yield part.view(np.uint16)[1::2].tobytes()
        left -= n


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...]]]) -> None:
    """A bf16 safetensors file of random normals, seeded by its file name, written in flat memory."""
    seed = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    temp = path.with_name(path.name + ".part")
    with open(temp, "wb", buffering=1 << 20) as out:
        out.write(_header(tensors))
        for _, shape in tensors:
            for block in _bf16_normals(rng, int(np.prod(shape))):
                out.write(block)
    os.replace(temp, path)


# --------------------------------------------------------------------------------------------------
# tokenizer and config files
# --------------------------------------------------------------------------------------------------


def _words(rnd: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen["Ġ" * rnd.randint(0, 1) + "".join(rnd.choices(letters, k=rnd.randint(2, 9)))] = None
    return list(seen)


def small_files(scale: Scale, num_layers: int, total_bytes: int, count: int) -> dict[str, bytes]:
    """`count` files that sit beside weights: config, generation config, tokenizer (BPE vocab and merges),
    the safetensors index, a model card, and more small json files up to `count`."""
    rnd = random.Random(f"small-{scale.name}-{count}")
    words = _words(rnd, scale.vocab)
    vocab = {w: i for i, w in enumerate(words)}
    merges = [f"{w[:1]} {w[1:]}" for w in words[: scale.vocab // 2]]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": scale.hidden,
        "intermediate_size": scale.intermediate,
        "num_hidden_layers": num_layers,
        "num_attention_heads": max(1, scale.hidden // 128),
        "vocab_size": scale.vocab,
        "torch_dtype": "bfloat16",
    }
    files: dict[str, bytes] = {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": json.dumps({"do_sample": True, "temperature": 0.6}, indent=2).encode(),
        "tokenizer.json": json.dumps(
            {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": merges}}, indent=2
        ).encode(),
        "tokenizer_config.json": json.dumps({"model_max_length": 4096, "bos_token": "<s>"}).encode(),
        "special_tokens_map.json": json.dumps({"bos_token": "<s>", "eos_token": "</s>"}).encode(),
        "vocab.json": json.dumps(vocab).encode(),
        "merges.txt": ("#version: 0.2\n" + "\n".join(merges) + "\n").encode(),
        "model.safetensors.index.json": json.dumps({"metadata": {"total_size": total_bytes}}).encode(),
        "README.md": b"---\nlicense: apache-2.0\n---\n# bench model\n\nRandom bf16 weights for benchmarks.\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }
    i = 0
    while len(files) < count:
        files[f"eval/results_{i:02d}.json"] = json.dumps({"step": i, "loss": rnd.random()}).encode()
        i += 1
    return dict(list(files.items())[:count])


# --------------------------------------------------------------------------------------------------
# the whole data set
# --------------------------------------------------------------------------------------------------


def _plan(scale: Scale, root: Path) -> tuple[Dataset, list[tuple[Path, list[tuple[str, tuple[int, ...]]]]]]:
    two, one, four = root / "two-gb", root / "one-gb", root / "four-gb"
    shards: list[tuple[Path, list[tuple[str, tuple[int, ...]]]]] = []
    layer = 0
    for k in range(4):
        tensors = layer_tensors(scale, scale.shard_bytes, layer)
        layer = int(tensors[-1][0].split(".")[2]) + 1
        shards.append((two / f"model-{k + 1:05d}-of-00004.safetensors", tensors))
    shards.append((one / "model.safetensors", layer_tensors(scale, scale.one_file_bytes, 0)))
    shards.append(
        (four / "model-00006-of-00006.safetensors", layer_tensors(scale, scale.one_file_bytes, 1000))
    )
    small = [
        (
            f"bench/small-{n:03d}",
            {"config.json": b'{"n": %d}\n' % n, "model.safetensors": tiny_safetensors(n)},
        )
        for n in range(scale.small_repos)
    ]
    data = Dataset(
        two_gb=Model("bench/two-gb", two),
        one_gb=Model("bench/one-gb", one),
        four_gb=Model("bench/four-gb", four),
        small=small,
    )
    return data, shards


def tiny_safetensors(n: int) -> bytes:
    """A small safetensors file (one 4 KiB bf16 tensor) for the repos of the no-op and serve-meta figures."""
    rng = np.random.default_rng(n)
    values = rng.standard_normal(2048, dtype=np.float32).view(np.uint16)[1::2].tobytes()
    return _header([("weight", (2048,))]) + values


def _write_one(job: tuple[Path, list[tuple[str, tuple[int, ...]]]]) -> None:
    write_safetensors(*job)


def ensure_data(scale: Scale, root: Path, say: Callable[[str], None]) -> Dataset:
    """The data set of `scale` under `root`, generated if it is not there yet (or was cut short)."""
    data, shards = _plan(scale, root)
    stamp = {"version": GENERATOR_VERSION, "scale": asdict(scale)}
    stamp_path = root / STAMP
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return data
    if root.exists():
        shutil.rmtree(root)
    for model in data.models:
        model.folder.mkdir(parents=True)
    total = sum(2 * int(np.prod(s)) for _, tensors in shards for _, s in tensors)
    say(f"bench: generating {total / 1e9:.2f} GB of bf16 weights into {root} (once)")
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_write_one, sorted(shards, key=lambda j: -sum(int(np.prod(s)) for _, s in j[1]))))
    # The 2 GB model: its shards and small files.
    two_total = sum(p.stat().st_size for p in data.two_gb.folder.iterdir())
    for name, content in small_files(scale, 32, two_total, scale.small_files).items():
        (data.two_gb.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (data.two_gb.folder / name).write_bytes(content)
    # The 1 GB model: the one file and its config.
    one_total = (data.one_gb.folder / "model.safetensors").stat().st_size
    (data.one_gb.folder / "config.json").write_bytes(small_files(scale, 8, one_total, 1)["config.json"])
    # The 4 GB model: the 2 GB model's shards and the 1 GB file (hard links: same bytes, no copy; the
    # store keeps each content once, so syncing it after the others fetches only its new shard).
    for k in range(4):
        os.link(
            data.two_gb.folder / f"model-{k + 1:05d}-of-00004.safetensors",
            data.four_gb.folder / f"model-{k + 1:05d}-of-00006.safetensors",
        )
    os.link(
        data.one_gb.folder / "model.safetensors", data.four_gb.folder / "model-00005-of-00006.safetensors"
    )
    four_total = sum(p.stat().st_size for p in data.four_gb.folder.iterdir())
    four_small = small_files(scale, 64, four_total, 10)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"):
        (data.four_gb.folder / name).write_bytes(four_small[name])
    stamp_path.write_text(json.dumps(stamp, indent=2))
    return data


# --------------------------------------------------------------------------------------------------
# pickle checkpoints (figure 12), made with torch when it is importable
# --------------------------------------------------------------------------------------------------

TORCH_MISSING = "torch not importable (it is a test dependency: pip install -e '.[test]')"
PICKLE_VERSION = 1


@dataclass(frozen=True)
class Checkpoints:
    """The 2 GB model's weights as one `pytorch_model.bin` written by `torch.save`, in its zip format and in
    its legacy one (`_use_new_zipfile_serialization=False`), each beside the model's small files."""

    zip: Model
    legacy: Model


def _mapped_state_dict(shards: list[Path]) -> dict[str, Any]:
    """The tensors of safetensors `shards` as torch tensors over private maps of the files (no copy in
    memory: torch.save writes them from the page cache; the maps go with the tensors)."""
    import mmap

    import torch

    state: dict[str, Any] = {}
    for shard in shards:
        with open(shard, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            mapped = mmap.mmap(
                f.fileno(), 0, access=mmap.ACCESS_COPY
            )  # writable for frombuffer, never written
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            tensor = torch.frombuffer(
                mapped, dtype=torch.bfloat16, count=(end - start) // 2, offset=8 + n + start
            )
            state[name] = tensor.view(entry["shape"])
    return state


def ensure_checkpoints(source: Model, root: Path, say: Callable[[str], None]) -> Checkpoints:
    """The pickle checkpoints of `source`'s weights under `root`, written once (a stamp records the source's
    files, their sizes and times); ImportError when torch is not importable (TORCH_MISSING says so)."""
    import torch

    made = Checkpoints(
        zip=Model("bench/pickle-zip", root / "pickle-zip"),
        legacy=Model("bench/pickle-legacy", root / "pickle-legacy"),
    )
    files = source.files()
    stamp = {
        "version": PICKLE_VERSION,
        "torch": torch.__version__,
        "source": [
            [f.relative_to(source.folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns] for f in files
        ],
    }
    stamp_path = root / STAMP
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return made
    if root.exists():
        shutil.rmtree(root)
    shards = [f for f in files if f.suffix == ".safetensors"]
    weights = sum(s.stat().st_size for s in shards)
    say(f"bench: writing {weights / 1e9:.2f} GB of weights as torch.save checkpoints into {root} (once)")
    state = _mapped_state_dict(shards)
    for model, zipped in ((made.zip, True), (made.legacy, False)):
        model.folder.mkdir(parents=True)
        temp = model.folder / "pytorch_model.bin.part"
        torch.save(state, temp, _use_new_zipfile_serialization=zipped)
        temp.rename(model.folder / "pytorch_model.bin")
        for f in files:  # the small files beside the weights (hard links)
            rel = f.relative_to(source.folder)
            if f.suffix != ".safetensors" and rel.name != "model.safetensors.index.json":
                (model.folder / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(f, model.folder / rel)
    stamp_path.write_text(json.dumps(stamp, indent=2))
    return made
