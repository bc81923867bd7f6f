"""eelbert.training.token_store: text tokenized once, streaming, into a memory-mapped store reused by every run."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from eelbert.training import token_store

LINES = ["The cat sat on the mat.", "", "Tiny models run on phones, watches and browsers.", "   ", "Hashing n-grams!"] * 50


@pytest.fixture
def text_folder(tmp_path):
    folder = tmp_path / "text"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.txt").write_text("\n".join(LINES[:100]) + "\n")
    (folder / "nested" / "b.txt").write_text("\n".join(LINES[100:]))
    (folder / "notes.md").write_text("not a .txt file: left out")
    return folder


def _expected_ids(tokenizer, lines):
    return [i for line in lines if line.strip() for i in (*tokenizer(line, add_special_tokens=False)["input_ids"], tokenizer.sep_token_id)]


def test_store_holds_every_paragraph_tokenized_with_a_sep_after_each(tokenizer, text_folder, tmp_path):
    files, source = token_store.files_source([text_folder])
    assert [f.name for f in files] == ["a.txt", "b.txt"]
    store = token_store.prepare_token_store(token_store.file_lines(files), tokenizer, source, folder=tmp_path / "store")
    assert store.dtype == np.dtype("<u2")  # 30,522 ids fit in 16 bits
    assert store.read(0, len(store)).tolist() == _expected_ids(tokenizer, LINES)
    assert store.meta["paragraphs"] == sum(bool(line.strip()) for line in LINES)
    counts = store.token_counts()
    assert counts.shape == (len(tokenizer),) and counts.sum() == len(store)
    assert counts[tokenizer.sep_token_id] == store.meta["paragraphs"]


def test_a_vocabulary_over_65536_tokens_is_stored_as_uint32(tmp_path):
    vocab = {"[UNK]": 0, "[SEP]": 1, **{f"w{i}": i + 2 for i in range(70_000)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", sep_token="[SEP]")
    store = token_store.prepare_token_store(["w69999 w1 w70001"], tokenizer, {"test": 1}, folder=tmp_path / "store")
    assert store.dtype == np.dtype("<u4")
    assert store.read(0, len(store)).tolist() == [70_001, 3, 0, 1]


def test_store_is_made_once_and_reused(tokenizer, text_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("EELBERT_CACHE", str(tmp_path / "cache"))
    files, source = token_store.files_source([text_folder])
    first = token_store.prepare_token_store(token_store.file_lines(files), tokenizer, source)
    assert first.folder.parent == tmp_path / "cache" / "token-stores"

    def no_reading():
        raise AssertionError("an existing store was tokenized again")
        yield

    again = token_store.prepare_token_store(no_reading(), tokenizer, source)
    assert again.folder == first.folder and again.read(0, len(again)).tolist() == first.read(0, len(first)).tolist()
    # A changed file is another source, hence another store.
    (text_folder / "a.txt").write_text("Different text entirely.\n")
    files, changed = token_store.files_source([text_folder])
    assert token_store.prepare_token_store(token_store.file_lines(files), tokenizer, changed).folder != first.folder


def test_opening_a_store_with_another_tokenizer_is_a_clear_error(tokenizer, tmp_path):
    store = token_store.prepare_token_store(LINES, tokenizer, {"test": 1}, folder=tmp_path / "store")
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, "[SEP]": 1}, unk_token="[UNK]")),
                                    unk_token="[UNK]", sep_token="[SEP]")
    with pytest.raises(ValueError, match="made with another tokenizer"):
        token_store.TokenStore(store.folder, other)
    with pytest.raises(ValueError, match="made with another tokenizer"):
        token_store.prepare_token_store(LINES, other, {"test": 1}, folder=store.folder)
    # Same size, other ids: the fingerprint, not the size, tells them apart.
    vocab = tokenizer.get_vocab()
    a, b = vocab["cat"], vocab["mat"]
    vocab["cat"], vocab["mat"] = b, a
    swapped = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")), unk_token="[UNK]", sep_token="[SEP]")
    assert len(swapped) == len(tokenizer)
    with pytest.raises(ValueError, match="made with another tokenizer"):
        token_store.TokenStore(store.folder, swapped)


def test_damaged_or_missing_stores_are_clear_errors(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a token store"):
        token_store.TokenStore(tmp_path)
    store = token_store.prepare_token_store(LINES, tokenizer, {"test": 1}, folder=tmp_path / "store")
    with open(store.folder / "tokens.bin", "ab") as tokens:
        tokens.write(b"\0\0")
    with pytest.raises(ValueError, match="damaged"):
        token_store.TokenStore(store.folder, tokenizer)
    with pytest.raises(ValueError, match="no text to tokenize"):
        token_store.prepare_token_store(["", "  "], tokenizer, {"test": 2}, folder=tmp_path / "empty")
    assert not (tmp_path / "empty").exists()  # a failed store leaves nothing that looks complete
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        token_store.files_source([tmp_path / "missing"])


def test_validation_blocks_are_held_out_deterministically_and_never_trained_on(tokenizer, tmp_path):
    lines = [f"sentence number {i} about tiny models on small devices" for i in range(400)]
    store = token_store.prepare_token_store(lines, tokenizer, {"test": 1}, folder=tmp_path / "store")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    train, validation = store.blocks(16, cls, sep, validation_fraction=0.1)
    body = 14
    assert len(train) + len(validation) == len(store) // body
    assert len(validation) == int(len(store) // body * 0.1)
    assert set(train.block_indices).isdisjoint(validation.block_indices)
    # Spread over the whole stream, not one end of it.
    assert validation.block_indices[0] < len(store) // body / 10 and validation.block_indices[-1] > len(store) // body * 0.9
    again_train, again_validation = token_store.TokenStore(store.folder, tokenizer).blocks(16, cls, sep, 0.1)
    assert again_validation.block_indices.tolist() == validation.block_indices.tolist()
    block = validation[3]["input_ids"]
    start = validation.block_indices[3] * body
    assert block == [cls, *store.read(start, body).tolist(), sep]
    _, capped = store.blocks(16, cls, sep, validation_fraction=0.1, max_validation_blocks=5)
    assert len(capped) == 5 and capped.block_indices[-1] > len(store) // body * 0.75  # still spread over the stream
    with pytest.raises(ValueError, match="too few"):
        store.blocks(16, cls, sep, validation_fraction=0.1, min_validation_blocks=len(store))
    with pytest.raises(ValueError, match="block_size must be at least 3"):
        store.blocks(2, cls, sep)


def test_dataloader_workers_read_the_file_instead_of_receiving_the_tokens(tokenizer, tmp_path):
    store = token_store.prepare_token_store(LINES * 20, tokenizer, {"test": 1}, folder=tmp_path / "store")
    train, _ = store.blocks(64, tokenizer.cls_token_id, tokenizer.sep_token_id, 0.1)
    pickled = pickle.dumps(train)
    assert len(pickled) < (store.folder / "tokens.bin").stat().st_size // 10
    copy = pickle.loads(pickled)
    assert [copy[i] for i in range(5)] == [train[i] for i in range(5)]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_reading_blocks_does_not_map_the_store_into_memory(tokenizer, tmp_path):
    """Pages of a memory map count as the process's memory once touched: over a long run, or one validation
    pass over blocks spread through the stream, the resident size would grow to the size of the store."""
    store = token_store.prepare_token_store(LINES * 20, tokenizer, {"test": 1}, folder=tmp_path / "store")
    train, validation = store.blocks(16, tokenizer.cls_token_id, tokenizer.sep_token_id, 0.1)
    assert all(len(block["input_ids"]) == 16 for block in [*train, *validation])
    assert str(store.folder / "tokens.bin") not in Path("/proc/self/maps").read_text()


def test_a_datasets_dataset_is_read_streaming_from_its_text_column(tokenizer, tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "dataset"
    folder.mkdir()
    records = [{"id": i, "body": line} for i, line in enumerate(LINES)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    lines = token_store.dataset_lines(str(folder), split="train", text_column="body")
    store = token_store.prepare_token_store(lines, tokenizer, {"dataset": str(folder)}, folder=tmp_path / "store")
    assert store.read(0, len(store)).tolist() == _expected_ids(tokenizer, LINES)
    with pytest.raises(ValueError, match="no column 'text'.*'body'"):
        list(token_store.dataset_lines(str(folder), split="train"))
