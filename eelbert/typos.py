"""Synthetic typos for robustness tests: a random one-character edit in a given fraction of the words.

Used by benchmarks/paper_comparison.py (SST-2 classifiers) and benchmarks/bench_embeddings.py (sentence embeddings)."""

import random
import string


def add_typos(sentences, fraction, seed):
    """Copies of `sentences` in which `fraction` of all words (those with a letter), drawn at random, get one
    random character edit: delete, insert, substitute or swap two neighbours."""
    rng = random.Random(seed)
    words = [s.split(" ") for s in sentences]
    positions = [(i, j) for i, ws in enumerate(words) for j, w in enumerate(ws) if any(c.isalpha() for c in w)]
    for i, j in rng.sample(positions, round(fraction * len(positions))):
        words[i][j] = one_edit(words[i][j], rng)
    return [" ".join(ws) for ws in words]


def one_edit(word, rng):
    """`word` with one random character edit (never the word itself)."""
    letters = string.ascii_lowercase
    edits = ["insert", "substitute"] + (["delete", "swap"] if len(word) > 1 else [])
    while True:
        edit, k = rng.choice(edits), rng.randrange(len(word))
        if edit == "insert":
            edited = word[:k] + rng.choice(letters) + word[k:]
        elif edit == "substitute":
            edited = word[:k] + rng.choice(letters.replace(word[k].lower(), "")) + word[k + 1 :]
        elif edit == "delete":
            edited = word[:k] + word[k + 1 :]
        else:
            k = min(k, len(word) - 2)
            edited = word[:k] + word[k + 1] + word[k] + word[k + 2 :]
        if edited != word:
            return edited
