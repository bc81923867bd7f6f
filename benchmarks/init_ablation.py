"""How the masked-LM head's initialization changes early UNO-EELBERT pretraining (the README's recipe table).

    head -c 3000000 ../shared/data/corpus/registry/brown_corpus.txt > brown.txt
    python benchmarks/init_ablation.py --train brown.txt          # ~15 min on 2 cores

Pretrains uno-eelbert (and bert-tiny for reference) with a --steps schedule per variant, one thread each, all
at once, and prints the training loss averaged over the first logging window and the one ending at
--report-step (windows of steps/10 steps: 1-12 and 61-72 by default).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# variant -> (model, head LayerNorm gain as initialized, unigram bias start, extra: "pos" / "proj" / None)
VARIANTS = {
    "unit gain, zero bias (before)": ("uno-eelbert", "unit", False, None),
    "head gain at BERT's scale": ("uno-eelbert", "scaled", False, None),
    "head gain + position/token-type at the table's scale": ("uno-eelbert", "scaled", False, "pos"),
    "head gain + learned Linear(128, 128) after the hash": ("uno-eelbert", "scaled", False, "proj"),
    "head gain + unigram bias (adopted)": ("uno-eelbert", "scaled", True, None),
    "bert-tiny + unigram bias": ("bert-tiny", None, True, None),
}


def token_store(train):
    """The token store of --train, made once by the parent before the variants start."""
    from transformers import AutoTokenizer

    from eelbert.training import token_store as stores

    tokenizer = AutoTokenizer.from_pretrained(SHARED / "vocab" / "bert-base-uncased")
    return tokenizer, stores.files_token_store([train], tokenizer)


def run_variant(name, train, output, steps):
    from eelbert import EelbertForMaskedLM, preset_config
    from eelbert.modeling.modeling_eelbert import HASH_TABLE_RMS
    from eelbert.training import pretraining

    model_name, gain, unigram_bias, extra = VARIANTS[name]
    tokenizer, store = token_store(train)
    if extra == "proj":
        model = EelbertForMaskedLM(preset_config(model_name, tokenizer=tokenizer, sparse_prediction=True,
                                                             embedding_projection=True))
    else:
        model = pretraining.build_model(model_name, tokenizer)
    with torch.no_grad():
        if gain is not None:
            model.cls.predictions.LayerNorm.weight.fill_(1.0 if gain == "unit" else 0.02 / HASH_TABLE_RMS)
        if extra == "pos":
            embeddings = model.eelbert.embeddings
            embeddings.position_embeddings.weight.normal_(0, HASH_TABLE_RMS)
            embeddings.token_type_embeddings.weight.normal_(0, HASH_TABLE_RMS)
    if unigram_bias:
        pretraining.start_bias_at_unigram_log_frequencies(model, store.token_counts(), tokenizer)
    pretraining.pretrain(model, tokenizer, store, output, max_steps=steps, save_steps=None, eval_steps=steps,
                         per_device_train_batch_size=64, progress=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="a text file, one paragraph per line")
    parser.add_argument("--work", type=Path, default=Path("init-ablation"))
    parser.add_argument("--steps", type=int, default=120, help="the schedule length (loss is logged every steps/10)")
    parser.add_argument("--report-step", type=int, default=72, help="the logging window ending here is reported")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in a child process
    args = parser.parse_args()
    if args.variant:
        return run_variant(args.variant, args.train, args.work / str(list(VARIANTS).index(args.variant)), args.steps)
    token_store(args.train)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    children = [subprocess.Popen([sys.executable, __file__, "--train", args.train, "--work", str(args.work),
                                  "--steps", str(args.steps), "--variant", name], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name in VARIANTS]
    if any(child.wait() for child in children):
        raise SystemExit("a variant failed; run it alone with --variant to see why")
    window = max(1, args.steps // 10)
    print(f"| initialization | steps 1-{window} | steps {args.report_step - window + 1}-{args.report_step} |")
    print("| --- | ---: | ---: |")
    for i, name in enumerate(VARIANTS):
        state = json.loads((args.work / str(i) / "trainer_state.json").read_text())
        losses = {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}
        print(f"| {name} | {losses[window]:.2f} | {losses.get(args.report_step, float('nan')):.2f} |")

if __name__ == "__main__":
    main()
