"""A tokenized corpus on disk, made once and reused by every run and every process.

Large pretraining codebases tokenize once into a flat array of token ids and sample blocks from it (nanoGPT's
`prepare.py`): memory does not grow with the corpus, and every process reads the same file. A store is a folder:

    tokens.bin   every paragraph's ids, one [SEP] after each, as one flat little-endian array (uint16 when the
                 vocabulary has at most 65,536 tokens, else uint32)
    counts.npy   how often each token id occurs (int64, vocabulary-sized): the masked-LM bias start
    store.json   the tokenizer's fingerprint and size, the dtype, the number of tokens and paragraphs, and the sources

Text is read and tokenized in batches of lines, so preparing holds one batch at a time. `store.json` is written
last and the folder is renamed into place, so a store that exists is complete. Opening a store with another
tokenizer than the one it was made with is an error: ids would mean other tokens.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

STORE_FORMAT = 1
# Lines tokenized together (fast tokenizers encode a batch in parallel), up to a number of characters: what
# preparing holds at once is one batch's encodings, whatever the corpus size and however long its lines.
LINES_PER_BATCH = 2000
CHARACTERS_PER_BATCH = 1_000_000


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that maps text to ids: the fast tokenizer's full description (normalizer,
    pre-tokenizer, model and vocabulary), or for a slow tokenizer its vocabulary in id order."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        description = backend.to_str()
    else:
        description = json.dumps(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    return hashlib.sha256(description.encode("utf-8")).hexdigest()


# ---- Sources: where the text comes from ----


def text_files(paths) -> list[Path]:
    """The files named, and the .txt files inside the folders named."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.txt"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"{[str(p) for p in paths]}: no .txt files found")
    return files


def file_lines(files) -> Iterator[str]:
    """The lines (paragraphs) of the files, read one line at a time."""
    for file in files:
        with open(file, encoding="utf-8") as lines:
            for line in lines:
                yield line.rstrip("\n")


def dataset_lines(name_or_path: str, split: str = "train", text_column: str = "text", config_name: str | None = None,
                  ) -> Iterator[str]:
    """The texts of one column of a Hugging Face `datasets` dataset (a Hub id or a local folder of data
    files), streamed: nothing is downloaded or held beyond the current record."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError("reading a Hugging Face dataset needs the `datasets` package: pip install 'eelbert[datasets]'") from error
    stream = datasets.load_dataset(name_or_path, config_name, split=split, streaming=True)
    columns = stream.column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"dataset {name_or_path!r} has no column {text_column!r}: its columns are {columns} (--text-column)")
    for record in stream:
        yield record[text_column]


def files_source(paths) -> tuple[list[Path], dict]:
    """Text files (or folders of .txt files) and their description for a store: each file's path, size and
    modification time, so that a changed file makes a new store."""
    files = text_files(paths)
    described = [{"path": str(f.resolve()), "bytes": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files]
    return files, {"files": described}


# ---- The store ----


class TokenStore:
    """An opened store: `read` gives any stretch of the token stream from `tokens.bin`; nothing is held in memory."""

    def __init__(self, folder, tokenizer=None):
        self.folder = Path(folder)
        meta_path = self.folder / "store.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.folder} is not a token store (no store.json): make one with prepare_token_store")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{self.folder}: token store format {self.meta.get('format')} is not {STORE_FORMAT}; prepare it again")
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)
        self.path, self.dtype = self.folder / "tokens.bin", np.dtype(self.meta["dtype"]).newbyteorder("<")
        tokens = self.path.stat().st_size // self.dtype.itemsize
        if tokens != self.meta["tokens"]:
            raise ValueError(f"{self.path} holds {tokens} tokens, store.json says {self.meta['tokens']}: "
                             "the store is damaged; delete it and prepare it again")

    def read(self, start: int, count: int) -> np.ndarray:
        """`count` ids from position `start` of the stream. Read from the file, not memory-mapped: the pages of a map
        count as the process's memory once touched, so a long run (or one validation pass over blocks spread through
        the stream) would grow to the size of the store."""
        return np.fromfile(self.path, dtype=self.dtype, count=count, offset=start * self.dtype.itemsize)

    def check_tokenizer(self, tokenizer):
        if len(tokenizer) != self.meta["vocab_size"] or tokenizer_fingerprint(tokenizer) != self.meta["tokenizer"]:
            raise ValueError(
                f"the token store {self.folder} was made with another tokenizer ({self.meta['vocab_size']:,} tokens, "
                f"fingerprint {self.meta['tokenizer'][:12]}) than the one given ({len(tokenizer):,} tokens, "
                f"fingerprint {tokenizer_fingerprint(tokenizer)[:12]}): its ids would mean other tokens; prepare a "
                "store with this tokenizer"
            )

    def __len__(self) -> int:
        return self.meta["tokens"]

    def token_counts(self) -> np.ndarray:
        return np.load(self.folder / "counts.npy")

    def blocks(self, block_size: int, cls_token_id: int, sep_token_id: int, validation_fraction: float = 0.02,
               min_validation_blocks: int = 1, max_validation_blocks: int | None = None,
               ) -> tuple["TokenBlocks", "TokenBlocks"]:
        """The stream cut into [CLS] + (block_size - 2) ids + [SEP] blocks, split into training and validation
        blocks. Validation blocks are spread evenly over the stream (every k-th block), the same for every seed,
        run and process, so a held-out score is comparable across runs. `max_validation_blocks` caps the share,
        so that validating a large corpus costs what validating a small one does."""
        body = block_size - 2
        if body < 1:
            raise ValueError(f"block_size must be at least 3 ([CLS], a token, [SEP]), got {block_size}")
        count = len(self) // body
        held_out = int(count * validation_fraction)
        if max_validation_blocks is not None:
            held_out = min(held_out, max_validation_blocks)
        held_out = max(min_validation_blocks, held_out)
        if held_out >= count:
            raise ValueError(f"the token store {self.folder} gives {count:,} blocks of {block_size} tokens: too few to "
                             f"hold out {held_out:,} for validation and train on the rest")
        stride = count // held_out
        validation = np.arange(held_out, dtype=np.int64) * stride + (stride - 1)
        train = np.ones(count, dtype=bool)
        train[validation] = False
        return (TokenBlocks(self, np.flatnonzero(train), body, cls_token_id, sep_token_id),
                TokenBlocks(self, validation, body, cls_token_id, sep_token_id))


class TokenBlocks(torch.utils.data.Dataset):
    """Blocks of a token store by index (a map-style dataset for the Trainer's samplers and dataloader workers)."""

    def __init__(self, store: TokenStore, block_indices: np.ndarray, body: int, cls_token_id: int, sep_token_id: int):
        self.store, self.block_indices, self.body = store, block_indices, body
        self.cls_token_id, self.sep_token_id = cls_token_id, sep_token_id

    def __len__(self) -> int:
        return len(self.block_indices)

    def __getitem__(self, i) -> dict:
        start = int(self.block_indices[i]) * self.body
        ids = self.store.read(start, self.body).astype(np.int64).tolist()
        # `block`: where the block is in the store, whichever process or worker reads it (masks are seeded by it)
        return {"input_ids": [self.cls_token_id, *ids, self.sep_token_id], "block": int(self.block_indices[i])}


def _write_store(lines: Iterable[str], tokenizer, folder: Path, source: dict):
    dtype = np.dtype("<u2") if len(tokenizer) <= 2**16 else np.dtype("<u4")
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    tokens = paragraphs = 0
    sep = tokenizer.sep_token_id
    if sep is None:
        raise ValueError("the tokenizer has no [SEP] token to separate paragraphs and end blocks")

    backend = getattr(tokenizer, "backend_tokenizer", None)

    def encode(batch):
        if backend is not None and not backend.truncation and not backend.padding:
            return [encoding.ids for encoding in backend.encode_batch_fast(batch, add_special_tokens=False)]
        return tokenizer(batch, add_special_tokens=False)["input_ids"]

    def flush(batch, out):
        nonlocal tokens, paragraphs, counts
        encoded = encode(batch)
        ids = np.fromiter((i for text in encoded for i in (*text, sep)), dtype=np.int64)
        counts += np.bincount(ids, minlength=len(counts))[: len(counts)]
        out.write(ids.astype(dtype).tobytes())
        tokens += len(ids)
        paragraphs += len(batch)

    with open(folder / "tokens.bin", "wb") as out:
        batch, characters = [], 0
        for line in lines:
            if not line or not line.strip():  # blank lines separate paragraphs; they hold no tokens
                continue
            batch.append(line)
            characters += len(line)
            if len(batch) == LINES_PER_BATCH or characters >= CHARACTERS_PER_BATCH:
                flush(batch, out)
                batch, characters = [], 0
        if batch:
            flush(batch, out)
    if not tokens:
        raise ValueError(f"no text to tokenize in {source}")
    np.save(folder / "counts.npy", counts)
    meta = {"format": STORE_FORMAT, "tokenizer": tokenizer_fingerprint(tokenizer), "vocab_size": len(tokenizer),
            "dtype": dtype.str, "tokens": tokens, "paragraphs": paragraphs, "source": source}
    (folder / "store.json").write_text(json.dumps(meta, indent=1))


def default_store_root() -> Path:
    return Path(os.environ.get("EELBERT_CACHE", Path.home() / ".cache" / "eelbert")) / "token-stores"


def prepare_token_store(lines: Iterable[str], tokenizer, source: dict, folder=None) -> TokenStore:
    """The store of `lines` tokenized by `tokenizer`: opened if it exists, made (streaming) if not.

    `source` describes the text (see `files_source`); with the tokenizer's fingerprint it names the store's folder
    under `default_store_root()` (override with $EELBERT_CACHE) unless `folder` is given. Safe to call from several
    processes at once (the store is built in a temporary folder and renamed into place), but under `accelerate`
    let the main process prepare first (`TrainingArguments.main_process_first`) to avoid tokenizing twice."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    if folder is None:
        key = hashlib.sha256(json.dumps([source, fingerprint], sort_keys=True).encode()).hexdigest()[:20]
        folder = default_store_root() / key
    folder = Path(folder)
    if (folder / "store.json").is_file():
        return TokenStore(folder, tokenizer)
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _write_store(lines, tokenizer, building, source)
        try:
            building.rename(folder)
        except OSError:  # another process finished the same store first
            if not (folder / "store.json").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return TokenStore(folder, tokenizer)


def files_token_store(paths, tokenizer, folder=None) -> TokenStore:
    """The store of text files (or folders of .txt files), read one line at a time: see prepare_token_store."""
    files, source = files_source(paths)
    return prepare_token_store(file_lines(files), tokenizer, source, folder=folder)
