"""Size and accuracy of UNO-EELBERT deployment artifacts (fp32, fp16, bf16, int8, ONNX fp32 and int8) on a fine-tuned
classifier.

    python benchmarks/bench_artifacts.py            # about 4 minutes on 2 cores

Fine-tunes UNO-EELBERT (random init, no pretraining: what matters here is the change between artifacts of
one model) on SST-2 sentences from ../shared/data/glue, then evaluates every artifact on the SST-2 dev set
and prints a markdown table of file sizes and accuracies against the fp32 checkpoint.
"""

import argparse
import copy
import csv
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

import eelbert
from eelbert.artifacts import embed_for_onnx, export_onnx, load_int8, save_int8

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def read_sst2(path, limit=None):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows][:limit], torch.tensor([int(r["label"]) for r in rows][:limit])


def batches(tokenizer, sentences, labels, size, shuffle=False):
    order = torch.randperm(len(sentences)) if shuffle else torch.arange(len(sentences))
    for start in range(0, len(sentences), size):
        ids = order[start : start + size]
        encoded = tokenizer([sentences[i] for i in ids], return_tensors="pt", padding=True, truncation=True, max_length=64)
        yield dict(encoded), labels[ids]


def fine_tune(model, tokenizer, sentences, labels, epochs, batch_size, lr):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = epochs * ((len(sentences) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(epochs):
        for inputs, y in batches(tokenizer, sentences, labels, batch_size, shuffle=True):
            model(**inputs, labels=y).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    return model.eval()


def evaluate(predict, tokenizer, sentences, labels):
    """(accuracy in %, logits of every sentence)."""
    with torch.no_grad():
        logits = torch.cat([predict(inputs).float() for inputs, _ in batches(tokenizer, sentences, labels, 128)])
    return 100 * float((logits.argmax(-1) == labels).float().mean()), logits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-sentences", type=int, default=None, help="default: all 67,349")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(SHARED / "vocab" / "bert-base-uncased")
    train = read_sst2(SHARED / "glue" / "SST-2" / "train.tsv", args.train_sentences)
    dev = read_sst2(SHARED / "glue" / "SST-2" / "dev.tsv")
    config = eelbert.preset_config("uno-eelbert", tokenizer=tokenizer, num_labels=2)
    start = time.perf_counter()
    model = fine_tune(eelbert.EelbertForSequenceClassification(config), tokenizer, *train, args.epochs, 64, args.lr)
    minutes = (time.perf_counter() - start) / 60

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            copy.deepcopy(model).to(dtype).save_pretrained(tmp / name)
            loaded = AutoModelForSequenceClassification.from_pretrained(tmp / name).eval()
            # Half-precision CPU kernels are slow or missing: the weights are what changes, so compute in fp32.
            loaded.float()
            rows.append((name, (tmp / name / "model.safetensors").stat().st_size,
                         evaluate(lambda x, m=loaded: m(**x).logits, tokenizer, *dev)))
        int8_path = save_int8(model, tmp / "int8")
        int8 = load_int8(tmp / "int8")
        rows.append(("int8 (weights, per-row scales)", int8_path.stat().st_size, evaluate(lambda x: int8(**x).logits, tokenizer, *dev)))
        import onnxruntime

        in_graph = export_onnx(model, tmp / "onnx")  # onnx/model.onnx and onnx/model_quantized.onnx
        for name, path in (("ONNX fp32 (hash embedding in the graph)", in_graph),
                           ("ONNX int8 (onnxruntime dynamic quantization)", in_graph.with_name("model_quantized.onnx"))):
            session = onnxruntime.InferenceSession(str(path))
            rows.append((name, path.stat().st_size, evaluate(
                lambda x, s=session: torch.from_numpy(s.run(None, {k: v.numpy() for k, v in x.items()})[0]), tokenizer, *dev)))
        on_embeds = export_onnx(model, tmp / "embeds", inputs="inputs_embeds")
        session = onnxruntime.InferenceSession(str(on_embeds))

        def run_on_embeds(x):
            feeds = {"inputs_embeds": embed_for_onnx(x["input_ids"], config).numpy(),
                     "attention_mask": x["attention_mask"].numpy(), "token_type_ids": x["token_type_ids"].numpy()}
            return torch.from_numpy(session.run(None, feeds)[0])

        rows.append(("ONNX fp32 on inputs_embeds (no vocabulary)", on_embeds.stat().st_size, evaluate(run_on_embeds, tokenizer, *dev)))

    print(f"UNO-EELBERT fine-tuned from scratch on {len(train[0]):,} SST-2 sentences x {args.epochs} epochs "
          f"({minutes:.1f} min); SST-2 dev, {len(dev[0])} sentences\n")
    print("| artifact | bytes | ratio to fp32 | accuracy | change vs fp32 | max abs logit change |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    size_fp32, (accuracy_fp32, logits_fp32) = rows[0][1], rows[0][2]
    for name, size, (acc, logits) in rows:
        change = (logits - logits_fp32).abs().max()
        print(f"| {name} | {size:,} | {size / size_fp32:.3f} | {acc:.2f} | {acc - accuracy_fp32:+.2f} | {change:.4f} |")


if __name__ == "__main__":
    main()
