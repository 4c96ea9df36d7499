"""The Hugging Face Hub routes of `mirror serve`: what huggingface_hub, transformers, sentence-transformers
and datasets ask a hub, answered from the store as the Hub answers it (no Xet: every file goes over plain
HTTP from this server).

    routing   the URLs: which repo, revision and path each names; the handlers
    answers   the answers: repo info, tree pages, refs, a file's headers, the not-found answers
"""

from mirror.serve.hf.routing import routes

__all__ = ["routes"]
