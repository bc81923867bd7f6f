"""Speed, memory and size of EELBERT against transformers' BertModel with the identical encoder, in one run.

    python benchmarks/bench_speed.py                 # full run (about 10 minutes on 2 cores)
    python benchmarks/bench_speed.py --repeats 5     # quicker, noisier

Pairs: eelbert-tiny vs bert-tiny, and uno-eelbert vs bert-tiny, all with the BERT uncased vocabulary
(30,522 tokens). Every timing is a median over repeated runs after warm-up; the two models of a pair are
run alternately so that both see the same machine load. Prints one markdown table of absolute figures and
ratios (EELBERT / BERT).
"""

import argparse
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForMaskedLM, BertModel
from transformers.utils import logging

import eelbert
from eelbert.modeling.hashing_eelbert import hash_embedding_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPO.parent / "shared" / "data" / "vocab" / "bert-base-uncased"
SHAPES = [(1, 16), (8, 128), (32, 128)]

# Runs in a fresh process: load a checkpoint, run one 8x128 forward; report seconds and memory.
# EELBERT is loaded as a user without the eelbert package would (remote code).
COLD_START = """
import sys, time

def rss_mib(field):  # VmRSS: now; VmHWM: peak of this process
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

if {eelbert!r} == "blocked":
    sys.modules["eelbert"] = None  # as a user without the package: remote code
import torch
import transformers.modeling_utils  # ~2 s of imports every model pays; excluded to keep the comparison sharp
from transformers import AutoModel
torch.manual_seed(0)
ids = torch.randint(1000, 30000, (8, 128))
rss_before = rss_mib("VmRSS")
start = time.perf_counter()
if {eelbert!r} == "installed":
    import eelbert  # registers the Auto classes: no remote code
model = AutoModel.from_pretrained({folder!r}, trust_remote_code=True, {extra})
with torch.no_grad():
    model(input_ids=ids)
seconds = time.perf_counter() - start
print(seconds, rss_before, rss_mib("VmHWM"))
"""


def median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median(fn_a, fn_b, repeats, warmup=2):
    """Median seconds of two functions run alternately."""
    for _ in range(warmup):
        fn_a(), fn_b()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, a), (fn_b, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def build_models(tokenizer, folder):
    """Random-init models saved to folder/<name>; returns {name: (encoder, masked_lm)}."""
    models = {}
    for name in ("eelbert-tiny", "uno-eelbert"):
        config = eelbert.preset_config(name, tokenizer=tokenizer)
        torch.manual_seed(0)
        models[name] = (eelbert.EelbertModel(config).eval(), eelbert.EelbertForMaskedLM(config))
    bert_config = eelbert.baseline_config("bert-tiny", vocab_size=len(tokenizer))
    torch.manual_seed(0)
    models["bert-tiny"] = (BertModel(bert_config).eval(), BertForMaskedLM(bert_config))
    for name, (encoder, _) in models.items():
        encoder.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    return models


def forward_rows(models, repeats):
    rows = []
    bert = models["bert-tiny"][0]
    for name in ("eelbert-tiny", "uno-eelbert"):
        model = models[name][0]
        for attn in ("eager", "sdpa"):
            model.set_attn_implementation(attn)
            bert.set_attn_implementation(attn)
            for batch, length in SHAPES:
                ids = torch.randint(1000, 30000, (batch, length))
                mask = torch.ones_like(ids)

                def run(m):
                    with torch.no_grad():
                        m(input_ids=ids, attention_mask=mask)

                a, b = paired_median(lambda: run(model), lambda: run(bert), repeats)
                rows.append((f"forward {batch}x{length}, {attn}", name, a * 1e3, b * 1e3, "ms", 1.05))
    return rows


def train_rows(models, repeats):
    rows = []
    ids = torch.randint(1000, 30000, (32, 128))
    labels = torch.where(torch.rand(ids.shape) < 0.15, ids, -100)
    bert = models["bert-tiny"][1].train()
    bert_optimizer = torch.optim.AdamW(bert.parameters(), lr=1e-4)
    for name in ("eelbert-tiny", "uno-eelbert"):
        model = models[name][1].train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(m, opt):
            m(input_ids=ids, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()

        a, b = paired_median(lambda: step(model, optimizer), lambda: step(bert, bert_optimizer), repeats)
        rows.append(("training step 32x128 (MLM, AdamW)", name, a * 1e3, b * 1e3, "ms", 1.05))
    return rows


def cold_start(folder, eelbert_package, extra=""):
    code = COLD_START.format(folder=str(folder), eelbert=eelbert_package, extra=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=folder.parent)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    seconds, rss_before, rss_peak = out.stdout.split()
    return float(seconds), float(rss_before), float(rss_peak)


def cold_start_rows(folder, repeats):
    """EELBERT in each table mode against BERT, all loaded alternately in fresh processes."""
    variants = {
        ("eelbert-tiny", "lazy table, remote code"): ("eelbert-tiny", "blocked", ""),
        ("eelbert-tiny", "full table, remote code"): ("eelbert-tiny", "blocked", "embedding_table='full'"),
        ("uno-eelbert", "lazy table, remote code"): ("uno-eelbert", "blocked", ""),
        ("uno-eelbert", "lazy table, eelbert installed"): ("uno-eelbert", "installed", ""),
        ("uno-eelbert", "full table, remote code"): ("uno-eelbert", "blocked", "embedding_table='full'"),
        ("uno-eelbert", "per_batch table, remote code"): ("uno-eelbert", "blocked", "embedding_table='per_batch'"),
        ("bert-tiny", ""): ("bert-tiny", "unused", ""),
    }
    samples = {key: [] for key in variants}
    for _ in range(repeats):
        for key, (name, block, extra) in variants.items():
            samples[key].append(cold_start(folder / name, block, extra))
    med = {key: [statistics.median(s[i] for s in v) for i in range(3)] for key, v in samples.items()}
    bert = med["bert-tiny", ""]
    rows = []
    for (name, mode), (seconds, before, peak) in med.items():
        if name == "bert-tiny":
            continue
        label = f"{name} ({mode})"
        rows.append(("cold start: from_pretrained + first forward 8x128", label, seconds * 1e3, bert[0] * 1e3, "ms", 1.0))
        rows.append(("peak RSS of that process", label, peak, bert[2], "MiB", 1.0))
        rows.append(("peak RSS above the imports", label, peak - before, bert[2] - bert[1], "MiB", 1.0))
    return rows


def per_batch_rows(models, tokenizer, repeats):
    """What the table-free mode costs per forward, against the default lazy table (already built)."""
    config = eelbert.preset_config("uno-eelbert", tokenizer=tokenizer, embedding_table="per_batch")
    per_batch = eelbert.EelbertModel(config).eval()
    lazy = models["uno-eelbert"][0]
    per_batch.load_state_dict(lazy.state_dict())
    ids = torch.randint(1000, 30000, (8, 128))

    def run(m):
        with torch.no_grad():
            m(input_ids=ids)

    a, b = paired_median(lambda: run(per_batch), lambda: run(lazy), repeats)
    return [("forward 8x128, per_batch table vs lazy table (EELBERT / EELBERT)", "uno-eelbert", a * 1e3, b * 1e3, "ms", None)]


def table_build_seconds(config, repeats):
    return median_time(lambda: hash_embedding_table(
        config.vocab, embedding_size=config.embedding_size, special_tokens=config.special_tokens), repeats, warmup=1)


def hash_embed_throughput(config, count=100_000):
    rng = random.Random(0)
    strings = [("##" if rng.random() < 0.3 else "") + "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 12)))
               for _ in range(count)]
    return count / median_time(lambda: eelbert.hash_embed(strings, config), 3, warmup=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="tokenizer folder or Hub id")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = eelbert.preset_config("uno-eelbert", tokenizer=tokenizer)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = build_models(tokenizer, folder)
        rows = forward_rows(models, args.repeats)
        rows += train_rows(models, max(5, args.repeats // 2))
        rows += per_batch_rows(models, tokenizer, args.repeats)
        rows += cold_start_rows(folder, max(3, args.repeats // 2))
        sizes = {name: (folder / name / "model.safetensors").stat().st_size for name in models}
    for name in ("eelbert-tiny", "uno-eelbert"):
        rows.append(("model.safetensors", name, sizes[name] / 1e6, sizes["bert-tiny"] / 1e6, "MB", None))
    table_seconds = table_build_seconds(config, max(3, args.repeats // 4))
    throughput = hash_embed_throughput(config)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n")
    print("| measurement | EELBERT model | EELBERT | baseline (bert-tiny) | ratio | target |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for what, name, value, baseline, unit, target in rows:
        ratio = value / baseline
        verdict = "" if target is None else (f"≤ {target:.2f}: {'met' if ratio <= target else 'MISSED'}")
        print(f"| {what} | {name} | {value:,.2f} {unit} | {baseline:,.2f} {unit} | {ratio:.3f} | {verdict} |")
    print(f"| table build, 30,522 tokens x 128 dims | - | {table_seconds:.3f} s | - | - | ≤ 0.25 s: {'met' if table_seconds <= 0.25 else 'MISSED'} |")
    print(f"| hash_embed on unseen strings | - | {throughput:,.0f} tokens/s | - | - | ≥ 200,000: {'met' if throughput >= 200_000 else 'MISSED'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "table_seconds": table_seconds, "hash_embed_tokens_per_s": throughput}, indent=1))


if __name__ == "__main__":
    main()
