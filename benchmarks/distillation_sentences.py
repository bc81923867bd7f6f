"""The sentence list the shipped sentence-embedding model (pretrained/uno-eelbert-sentence) was distilled on.

    python benchmarks/distillation_sentences.py ../shared/data/corpus OUT.txt

Every .txt file under the corpus folder except BBC News (kept out so the benchmarks' BBC topic task stays unseen),
paragraphs split after . ! or ? followed by a capital or a quote, sentences of 6-64 words, distinct, shuffled with
seed 0: 461,837 sentences from the shared corpus. `eelbert distill --corpus OUT.txt --sentence-per-line` reads them
in this order (its own splitter, `--corpus` without the flag, splits and shuffles differently)."""

import random
import re
import sys
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z])")


def main(corpus: str, output: str) -> None:
    files = [f for f in sorted(Path(corpus).rglob("*.txt")) if "bbc_news" not in f.name]
    sentences = dict.fromkeys(
        s for f in files for line in f.read_text(encoding="utf-8").splitlines() for s in SENTENCE_END.split(line)
        if 6 <= len(s.split()) <= 64
    )
    sentences = list(sentences)
    random.Random(0).shuffle(sentences)
    Path(output).write_text("\n".join(sentences) + "\n", encoding="utf-8")
    print(f"{len(sentences):,} sentences from {len(files)} files -> {output}")


if __name__ == "__main__":
    main(*sys.argv[1:])
