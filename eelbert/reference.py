"""A direct, per-string transcription of the hash embedding (DESIGN.md §2) using the `mmh3` library.

It is slow (a Python loop per n-gram and dimension) and exists to check the vectorised implementation in
`modeling/hashing_eelbert.py` bit for bit: both must return identical float32 values.
"""

import mmh3
import torch

from .modeling.hashing_eelbert import HASH_VERSION, ROLLING_HASH_BASE, SIGNATURE_MODULUS as B, check_hash_settings, mark_token, order_dimensions


def signature(gram: str, hash_function: str, seed: int) -> int:
    if hash_function == "murmur3":
        return mmh3.hash(gram, seed, signed=False) % B
    assert hash_function == "rolling", hash_function  # check_hash_settings rejects anything else
    h = seed % B
    for c in gram:
        h = (h * ROLLING_HASH_BASE + ord(c)) % B
    return h


def weight(k: int) -> int:
    return 1 + mmh3.hash(f"eelbert-projection-{k}", 0, signed=False) % (B - 1)


def centered(sig: int, k: int) -> int:
    v = (sig * weight(k)) % B
    return v - B if v > B / 2 else v


def reference_embedding(
    token: str,
    embedding_size: int,
    max_ngram_order: int = 3,
    hash_function: str = "murmur3",
    hash_seed: int = 0,
    special_tokens=(),
    continuing_subword_prefix: str | None = "##",
    hash_version: int = HASH_VERSION,
) -> torch.Tensor:
    check_hash_settings(embedding_size=embedding_size, max_ngram_order=max_ngram_order, hash_function=hash_function,
                        hash_seed=hash_seed, hash_version=hash_version)
    if token in special_tokens:
        sig = signature(token, hash_function, hash_seed)
        values = [centered(sig, k) / (B / 2) for k in range(embedding_size)]
        return torch.tensor(values, dtype=torch.float64).float()
    marked = mark_token(token, continuing_subword_prefix)
    values, k = [], 0
    for n, dims in enumerate(order_dimensions(embedding_size, max_ngram_order), start=1):
        grams = [marked[i : i + n] for i in range(len(marked) - n + 1)]
        signatures = [signature(g, hash_function, hash_seed) for g in grams]
        for _ in range(dims):
            total = sum(centered(s, k) for s in signatures)  # exact integer sum
            values.append(total / (max(len(grams), 1) * (B / 2)))
            k += 1
    return torch.tensor(values, dtype=torch.float64).float()
