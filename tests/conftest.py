import os
import socket
import threading

import pytest
from helpers import BERT_UNCASED, GLUE, SHARED_DATA
from hub_server import HubServer
from transformers import AutoTokenizer

import eelbert


def pytest_configure(config):
    missing = [str(p) for p in (BERT_UNCASED, GLUE) if not p.is_dir()]
    if missing:
        pytest.exit(
            f"the tests need the project's shared data beside the repository ({SHARED_DATA}); missing: {', '.join(missing)}",
            returncode=4,
        )


@pytest.fixture(scope="session", autouse=True)
def token_store_cache(tmp_path_factory):
    """Token stores the tests make (and the processes they start) go to a temporary folder, not ~/.cache."""
    os.environ["EELBERT_CACHE"] = str(tmp_path_factory.mktemp("eelbert-cache"))


@pytest.fixture(scope="session")
def tokenizer_path():
    return BERT_UNCASED


@pytest.fixture
def tokenizer(tokenizer_path):
    return AutoTokenizer.from_pretrained(tokenizer_path)


@pytest.fixture
def uno_config(tokenizer):
    """UNO-EELBERT bound to the 30,522-token BERT uncased vocabulary."""
    return eelbert.preset_config("uno-eelbert", tokenizer=tokenizer)


@pytest.fixture
def small_config(tokenizer):
    """A small two-layer EELBERT over the full BERT vocabulary, for fast behaviour tests."""
    return eelbert.preset_config(
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
