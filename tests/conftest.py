import socket
import threading
from pathlib import Path

import pytest
from hub_server import HubServer
from transformers import AutoTokenizer

import eelbert

REPO = Path(__file__).resolve().parents[1]
SHARED_VOCAB = REPO.parent / "shared" / "data" / "vocab" / "bert-base-uncased"

@pytest.fixture(scope="session")
def tokenizer_path():
    if not SHARED_VOCAB.is_dir():
        raise FileNotFoundError(f"the tests need the BERT uncased tokenizer at {SHARED_VOCAB}")
    return SHARED_VOCAB


@pytest.fixture
def tokenizer(tokenizer_path):
    return AutoTokenizer.from_pretrained(tokenizer_path)


@pytest.fixture
def uno_config(tokenizer):
    """UNO-EELBERT bound to the 30,522-token BERT uncased vocabulary."""
    return eelbert.EelbertConfig.from_preset("uno-eelbert", tokenizer=tokenizer)


@pytest.fixture
def small_config(tokenizer):
    """A small two-layer EELBERT over the full BERT vocabulary, for fast behaviour tests."""
    return eelbert.EelbertConfig.from_preset(
        "eelbert-tiny", tokenizer=tokenizer, hidden_size=32, intermediate_size=64, embedding_size=32,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


@pytest.fixture
def hub():
    threads_before = set(threading.enumerate())
    server = HubServer().start()
    yield server
    port = int(server.url.rsplit(":", 1)[1])
    server.stop()
    assert server.unhandled == [], "the clients hit routes the server does not know"
    leftover = {t for t in set(threading.enumerate()) - threads_before if "tqdm" not in t.name}  # tqdm's monitor is not ours
    assert not leftover, f"the server left threads behind: {leftover}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
