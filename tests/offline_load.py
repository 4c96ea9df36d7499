"""Load a model the way users do, offline, and print its embeddings as JSON (run in a fresh process).

    python -m tests.offline_load REF [--sentence-transformers]

REF is a repo id (resolved from the HF cache, HF_HUB_OFFLINE=1) or a folder path.
"""

from __future__ import annotations

import argparse
import json

SENTENCES = ["mirror carries models across the air gap", "a factory floor has no internet"]


def transformers_embeddings(ref: str) -> list[list[float]]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = AutoModel.from_pretrained(ref).eval()
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return [[float(x) for x in row] for row in pooled]


def sentence_transformers_embeddings(ref: str) -> list[list[float]]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(ref, device="cpu")
    return [[float(x) for x in row] for row in model.encode(SENTENCES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ref")
    parser.add_argument("--sentence-transformers", action="store_true")
    args = parser.parse_args()
    embed = sentence_transformers_embeddings if args.sentence_transformers else transformers_embeddings
    print(json.dumps(embed(args.ref)))


if __name__ == "__main__":
    main()
