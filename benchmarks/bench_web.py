"""UNO-EELBERT against BERT-tiny in the browser: the page in examples/web/, headless Chromium, transformers.js.

    python benchmarks/bench_web.py [--rounds 3]     # about 2 minutes on 2 cores

Both encoders (random weights: sizes and speed do not depend on them; BERT uncased vocabulary and tokenizer)
are exported to the layout transformers.js loads (config.json, tokenizer files, onnx/model.onnx and the int8
onnx/model_quantized.onnx): UNO-EELBERT with `eelbert export onnx`, BERT-tiny (transformers' BertModel: 2 layers,
hidden 128, 2 heads, intermediate 512) with the same exporter settings (torch.onnx.export(dynamo=True), same inputs
and outputs, the same int8 quantization). Each round opens the page once per model and dtype, in a
fresh Chromium profile (nothing cached), running the feature-extraction pipeline; prints a markdown table of
medians over the rounds: bytes the page downloaded for the model (config, tokenizer, ONNX graph), time from
navigation start to the first result, and the median latency of a pipeline call on a 16-token sentence, over
calls 1-30 (cold: the browser compiles WebAssembly with a fast baseline compiler first and optimizes the functions
that run often later, so the first calls are several times slower, more so for EELBERT's graph, which runs many
different kernels) and over calls 201-250 (warm).
"""

import argparse
import base64
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

import eelbert
from eelbert.cli import main as eelbert_cli
from eelbert.onnx_export import export_graph, quantize_onnx

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO.parent / "shared" / "data" / "vocab" / "bert-base-uncased"
_spec = importlib.util.spec_from_file_location("serve", REPO / "examples" / "web" / "serve.py")
serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve)

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."  # 16 tokens with [CLS], [SEP]
DTYPES = {"fp32": "fp32", "q8": "int8"}


class _Encoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return outputs.last_hidden_state, outputs.pooler_output


def bert_tiny(tokenizer, folder: Path):
    """BERT-tiny's encoder as transformers.js loads it, exported like `eelbert export onnx` exports EELBERT."""
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512)
    model = BertModel(config).eval()
    shape = (2, 8)
    example = (torch.arange(16).reshape(shape), torch.ones(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long))
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=config.max_position_embeddings)}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    graph = export_graph(_Encoder(model), example, input_names=names, output_names=["last_hidden_state", "pooler_output"],
                         dynamic_shapes={name: dims for name in names})
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(graph.SerializeToString())
    quantize_onnx(folder / "onnx" / "model.onnx", folder / "onnx" / "model_quantized.onnx")
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def uno_eelbert(tokenizer, folder: Path, scratch: Path):
    """UNO-EELBERT's encoder exported with the command line."""
    config = eelbert.preset_config("uno-eelbert", tokenizer=tokenizer)
    eelbert.EelbertModel(config).save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    eelbert_cli(["export", "onnx", str(scratch), str(folder)])


COLD, WARM = slice(0, 30), slice(200, 250)  # pipeline calls after the first result


def measure(server, name, dtype):
    query = urllib.parse.urlencode({"model": name, "task": "feature-extraction", "dtype": dtype, "text": SENTENCE,
                                    "repeat": WARM.stop})
    run = json.loads(serve.run_headless(server, query, timeout=600))
    if "error" in run:
        raise RuntimeError(f"{name} {dtype}: {run['error']}")
    if len(run["results"][0]["input_ids"]) != 16:
        raise RuntimeError(f"the sentence is {len(run['results'][0]['input_ids'])} tokens, not 16")
    return {"bytes": sum(d["bytes"] for d in run["downloads"]), "first_ms": run["first_result_ms"],
            "cold_ms": statistics.median(run["latencies_ms"][COLD]), "warm_ms": statistics.median(run["latencies_ms"][WARM])}


def screenshot(server, query: str, path: Path):
    """A PNG of the page once it has reported its results, through Chromium's DevTools protocol on a pipe
    (--remote-debugging-pipe: JSON messages ending in NUL on file descriptors 3 and 4; no extra package)."""
    to_chromium, from_chromium = os.pipe(), os.pipe()

    def pipes():  # in the child: Chromium reads commands on fd 3 and writes answers on fd 4
        os.dup2(to_chromium[0], 3)
        os.dup2(from_chromium[1], 4)

    command = [serve.chromium(), "--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               "--remote-debugging-pipe", f"{server.url}?report=1&{query}"]
    with tempfile.TemporaryDirectory() as profile:
        command.insert(1, f"--user-data-dir={profile}")
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")
        browser = subprocess.Popen(command, preexec_fn=pipes, pass_fds=(3, 4), stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        os.close(to_chromium[0])
        os.close(from_chromium[1])
        answers = os.fdopen(from_chromium[0], "rb")
        pending = b""

        def call(method, session=None, **params):
            nonlocal pending
            message = {"id": call.id, "method": method, "params": params, **({"sessionId": session} if session else {})}
            os.write(to_chromium[1], json.dumps(message).encode() + b"\0")
            call.id += 1
            while True:  # skip events and other answers
                while b"\0" not in pending:
                    pending += answers.read1(1 << 20)
                line, pending = pending.split(b"\0", 1)
                answer = json.loads(line)
                if answer.get("id") == message["id"]:
                    return answer["result"]

        call.id = 1
        try:
            server.results.get(timeout=120)
            page = next(t for t in call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            path.write_bytes(base64.b64decode(call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                                                      clip={"x": 0, "y": 0, "width": 900, "height": 300, "scale": 1})["data"]))
        finally:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
            answers.close()
            os.close(to_chromium[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="page loads per model and dtype (medians are reported)")
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the page running UNO-EELBERT here")
    args = parser.parse_args()
    if serve.chromium() is None or not (REPO / "examples" / "web" / "node_modules").is_dir():
        sys.exit("needs Chromium and the page's npm packages: apt-get install chromium; "
                 "cd examples/web && ONNXRUNTIME_NODE_INSTALL=skip npm ci")
    tokenizer = AutoTokenizer.from_pretrained(VOCAB)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        uno_eelbert(tokenizer, models / "uno-eelbert", Path(tmp) / "checkpoint")
        bert_tiny(tokenizer, models / "bert-tiny")
        runs = {}
        with serve.PageServer(models) as server:
            for _ in range(args.rounds):  # interleaved, so that a busy moment of the machine hits every model alike
                for dtype in DTYPES:
                    for name in ("uno-eelbert", "bert-tiny"):
                        runs.setdefault((name, dtype), []).append(measure(server, name, dtype))
            if args.screenshot:
                screenshot(server, urllib.parse.urlencode({"model": "uno-eelbert", "task": "feature-extraction",
                                                           "text": SENTENCE, "repeat": 50}), args.screenshot)
    metrics = ("bytes", "first_ms", "cold_ms", "warm_ms")
    result = {key: {metric: statistics.median(r[metric] for r in rs) for metric in metrics} for key, rs in runs.items()}
    chromium = subprocess.run([serve.chromium(), "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{chromium}; medians of {args.rounds} page loads per row\n")
    print("| model | weights | downloaded (model + tokenizer) | time to first result | latency, 16 tokens, calls 1-30 "
          "| calls 201-250 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for dtype, label in DTYPES.items():
        uno, tiny = result["uno-eelbert", dtype], result["bert-tiny", dtype]
        for name, r in (("UNO-EELBERT", uno), ("BERT-tiny", tiny)):
            print(f"| {name} | {label} | {r['bytes']:,.0f} B | {r['first_ms']:,.0f} ms | {r['cold_ms']:.2f} ms "
                  f"| {r['warm_ms']:.2f} ms |")
        print(f"| EELBERT / BERT-tiny | {label} | " + " | ".join(f"{uno[m] / tiny[m]:.2f}" for m in metrics) + " |")


if __name__ == "__main__":
    main()
