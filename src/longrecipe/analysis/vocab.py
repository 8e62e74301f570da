"""Same-tokenizer check between the base and the long model, run before any model is loaded."""

from __future__ import annotations

import hashlib
import json


def vocab_fingerprint(tokenizer) -> str:
    """sha256 (16 hex) of the token -> id map; equal fingerprints mean identical vocabularies."""
    blob = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_same_tokenizer(base_tok, long_tok, *, base_name: str = "base_model", long_name: str = "long_model") -> None:
    """Raise ``ValueError`` naming the differences when the two vocabularies (token -> id) differ."""
    a, b = base_tok.get_vocab(), long_tok.get_vocab()
    if a == b:
        return
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    moved = sorted(t for t in set(a) & set(b) if a[t] != b[t])
    raise ValueError(
        f"{base_name} and {long_name} must share one tokenizer, but their vocabularies differ "
        f"(sizes {len(a)} vs {len(b)}; {len(only_a)} tokens only in {base_name} e.g. {only_a[:5]}; "
        f"{len(only_b)} only in {long_name} e.g. {only_b[:5]}; {len(moved)} with different ids e.g. {moved[:5]}). "
        f"The analysis compares logits of the same token ids: give the long model that was trained from "
        f"{base_name} (same tokenizer)."
    )
