"""Model-aware validation: what a file of a repo is, judged from its bytes without loading it, and the
findings a policy turns into verdicts (issue 15: nothing unsafe crosses the gap unseen).

- `findings`: the types every check returns (`Finding`, `Kind`), one owner of their JSON form;
- `safetensors`, `gguf`, `onnx`: header checks (only the header is read), `headers` the table from a path's
  suffix to its check, `reader` the header read from a stream within the file's size;
- `pickles`: the globals a pickle-based file imports, against an allowlist (deny by default), and its
  containers; `pickle_walk` walks one pickle's opcodes for it (bounded, never loaded);
- `remote_code`: `*.py` files, `auto_map`, code taken from other repos;
- `policy`: the manifest's `policy:` section and `--policy FILE`, and the verdict of a set of findings.
- the hub's own scan (`hub_flagged`) is read from the hub's answers, not the bytes: `mirror.sources.hub_scan`.

Checks read streams (`BinaryIO`) so they run on a store's blob, a bundle member or a file alike.
"""
