"""An exported UNO-EELBERT in transformers.js: the page in examples/web/ in headless Chromium, and the same run in
Node, give onnxruntime's outputs (Python, same ONNX files) within 1e-4.

Needs Debian's `chromium`, Node.js and examples/web's npm packages; without them these tests skip and say how to
install them, and with EELBERT_REQUIRE_BROWSER=1 (set by .ci/run, which installs them) they fail instead."""

import importlib.util
import json
import os
import shutil
import subprocess
import urllib.parse

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import BERT_UNCASED, REPO
from tokenizers import Tokenizer
from transformers import AutoTokenizer

import eelbert
from eelbert.cli import main

WEB = REPO / "examples" / "web"
_spec = importlib.util.spec_from_file_location("serve", WEB / "serve.py")
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)

TEXTS = ["Hello world, this is EELBERT.", "Naïve café in Zürich: 東京 🙂 unbelievably tokenised!"]
MASKED = ["Paris is the [MASK] of France."]
# (task, model folder, dtype, texts)
RUNS = [
    ("feature-extraction", "encoder", "fp32", TEXTS),
    ("feature-extraction", "encoder", "q8", TEXTS),
    ("text-classification", "classifier", "fp32", TEXTS),
    ("text-classification", "classifier", "q8", TEXTS),
    ("fill-mask", "masked-lm", "fp32", MASKED),
]
# ~80 s in all, most of it exporting the three models the tests share
pytestmark = pytest.mark.slow

HEADS = {"encoder": eelbert.EelbertModel, "classifier": eelbert.EelbertForSequenceClassification,
         "masked-lm": eelbert.EelbertForMaskedLM}


def _missing(message: str):
    if os.environ.get("EELBERT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message} (EELBERT_REQUIRE_BROWSER=1 makes this a failure)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def npm_packages():
    pinned = json.loads((WEB / "package.json").read_text())["dependencies"]["@huggingface/transformers"]
    installed = WEB / "node_modules" / "@huggingface" / "transformers" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != pinned:
        _missing(f"examples/web's npm packages (@huggingface/transformers {pinned}) are not installed: "
                 "cd examples/web && ONNXRUNTIME_NODE_INSTALL=skip npm ci")


@pytest.fixture(scope="module")
def chromium(npm_packages):
    if serve.chromium() is None:
        _missing("headless Chromium is not installed: apt-get install chromium")


@pytest.fixture(scope="module")
def node(npm_packages):
    if shutil.which("node") is None:
        _missing("Node.js is not installed: apt-get install nodejs npm")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """UNO-EELBERT (random weights, BERT uncased vocabulary) as encoder, 3-label classifier and masked LM, each
    exported with `eelbert export onnx` into models/NAME."""
    root = tmp_path_factory.mktemp("web")
    tokenizer = AutoTokenizer.from_pretrained(BERT_UNCASED)
    for seed, (name, head) in enumerate(HEADS.items()):
        torch.manual_seed(seed)
        config = eelbert.preset_config("uno-eelbert", tokenizer=tokenizer, num_labels=3)
        checkpoint = root / "checkpoints" / name
        head(config).save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        main(["export", "onnx", str(checkpoint), str(root / "models" / name)])
    return root / "models"


def _onnxruntime(folder, dtype, text):
    """The tokenizer's ids and the graph's outputs in onnxruntime (Python), for one text."""
    encoding = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(folder / "onnx" / ("model.onnx" if dtype == "fp32" else "model_quantized.onnx"),
                                   options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=["ConstantFolding"])  # the masked LM's table: folding is slow
    feeds = {"input_ids": [encoding.ids], "attention_mask": [encoding.attention_mask],
             "token_type_ids": [encoding.type_ids]}
    outputs = session.run(None, {name: np.array(value, dtype=np.int64) for name, value in feeds.items()})
    return encoding.ids, dict(zip([o.name for o in session.get_outputs()], outputs))


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _check(run, folder, task, dtype, texts):
    """Every result of a transformers.js run equals onnxruntime's within 1e-4."""
    assert "error" not in run, run["error"]
    assert run["task"] == task and run["dtype"] == dtype and [r["text"] for r in run["results"]] == texts
    id2label = json.loads((folder / "config.json").read_text()).get("id2label")
    for result in run["results"]:
        ids, expected = _onnxruntime(folder, dtype, result["text"])
        assert result["input_ids"] == ids
        if task == "feature-extraction":
            np.testing.assert_allclose(result["last_hidden_state"], expected["last_hidden_state"][0], rtol=0, atol=1e-4)
        elif task == "text-classification":
            logits = expected["logits"][0]
            np.testing.assert_allclose(result["logits"], logits, rtol=0, atol=1e-4)
            scores = {id2label[str(i)]: p for i, p in enumerate(_softmax(logits.astype(np.float64)))}
            assert sorted(label["label"] for label in result["labels"]) == sorted(scores)
            for label in result["labels"]:
                assert label["score"] == pytest.approx(scores[label["label"]], abs=1e-4)
        else:  # fill-mask: the 5 most likely tokens, scores ~1e-4 (random weights): log-probabilities within 1e-4
            probabilities = _softmax(expected["logits"][0, ids.index(103)].astype(np.float64))  # 103: [MASK]
            top = np.argsort(-probabilities)[:5]
            assert [p["token"] for p in result["predictions"]] == top.tolist()
            np.testing.assert_allclose(np.log([p["score"] for p in result["predictions"]]), np.log(probabilities[top]),
                                       rtol=0, atol=1e-4)


@pytest.mark.parametrize("task, name, dtype, texts", RUNS, ids=[f"{t}-{d}" for t, _, d, _ in RUNS])
def test_page_in_headless_chromium_gives_onnxruntimes_outputs(chromium, models, task, name, dtype, texts):
    query = urllib.parse.urlencode([("model", name), ("task", task), ("dtype", dtype)] + [("text", t) for t in texts])
    with serve.PageServer(models) as server:
        run = json.loads(serve.run_headless(server, query))
    _check(run, models / name, task, dtype, texts)
    assert run["foreign_requests"] == []  # the page fetched everything from its own server
    downloaded = {d["url"].removeprefix(f"{server.url}models/{name}/") for d in run["downloads"]}
    model_file = "onnx/model.onnx" if dtype == "fp32" else "onnx/model_quantized.onnx"
    assert {"config.json", "tokenizer.json", model_file} <= downloaded
    assert "HeadlessChrome" in run["user_agent"]


@pytest.mark.parametrize("task, name, dtype, texts", RUNS, ids=[f"{t}-{d}" for t, _, d, _ in RUNS])
def test_transformersjs_in_node_gives_onnxruntimes_outputs(node, models, task, name, dtype, texts):
    options = {"model": name, "task": task, "dtype": dtype, "texts": texts}
    result = subprocess.run(["node", "node.mjs", str(models), json.dumps(options)], cwd=WEB, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    _check(json.loads(result.stdout.splitlines()[-1]), models / name, task, dtype, texts)
