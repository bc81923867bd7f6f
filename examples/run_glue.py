"""Fine-tune a checkpoint on a GLUE task (original GLUE TSV files) or on your own CSV/TSV, with the Trainer.

    python examples/run_glue.py --model uno-mlm --task rte --data-dir ../shared/data/glue --output rte-out
    python examples/run_glue.py --model uno-mlm --train-file train.csv --validation-file dev.csv --output out

Each GLUE task is scored with its official metric (CoLA: Matthews correlation; STS-B: Pearson and Spearman;
MRPC and QQP: F1 and accuracy; the others: accuracy) on its dev set, after every epoch and at the end;
results go to OUTPUT/results.json.
Your own files need a header with `text` (or `sentence1` and `sentence2`) and `label` columns.
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

import eelbert  # noqa: F401  (registers EELBERT with the Auto classes)

# task -> folder, dev file, text columns (names, or positions for CoLA, which has no header), label column,
# label values (None: regression), metrics
TASKS = {
    "cola": ("CoLA", "dev.tsv", (3,), 1, ["0", "1"], ("mcc",)),
    "sst2": ("SST-2", "dev.tsv", ("sentence",), "label", ["0", "1"], ("accuracy",)),
    "mrpc": ("MRPC", "dev.tsv", ("#1 String", "#2 String"), "Quality", ["0", "1"], ("f1", "accuracy")),
    "stsb": ("STS-B", "dev.tsv", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman")),
    "qqp": ("QQP", "dev.tsv", ("question1", "question2"), "is_duplicate", ["0", "1"], ("f1", "accuracy")),
    "mnli": ("MNLI", "dev_matched.tsv", ("sentence1", "sentence2"), "gold_label",
             ["contradiction", "entailment", "neutral"], ("accuracy",)),
    "qnli": ("QNLI", "dev.tsv", ("question", "sentence"), "label", ["entailment", "not_entailment"], ("accuracy",)),
    "rte": ("RTE", "dev.tsv", ("sentence1", "sentence2"), "label", ["entailment", "not_entailment"], ("accuracy",)),
    "wnli": ("WNLI", "dev.tsv", ("sentence1", "sentence2"), "label", ["0", "1"], ("accuracy",)),
}


def read_rows(path, text_columns, label_column, header=True):
    """[(texts, label string)] from a CSV/TSV file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    delimiter = "," if path.suffix == ".csv" else "\t"
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter, quotechar='"' if delimiter == "," else None))
    if header:
        names, rows, first_line = rows[0], rows[1:], 2
        missing = [c for c in (*text_columns, label_column) if c not in names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header has {names}")
        text_columns = [names.index(c) for c in text_columns]
        label_column = names.index(label_column)
        width = len(names)
    else:
        first_line, width = 1, None
    out = []
    for line, row in enumerate(rows, start=first_line):
        if not row:
            continue
        needed = max(*text_columns, label_column) + 1
        if (width is not None and len(row) != width) or len(row) < needed:
            raise ValueError(f"{path}:{line}: expected {width or needed} columns, found {len(row)}")
        out.append((tuple(row[i] for i in text_columns), row[label_column], line))
    return out


def encode_labels(rows, path, label_values):
    """Class ids (or floats for regression); an unknown label is an error naming the file and line."""
    labels = []
    for _, label, line in rows:
        if label_values is None:
            try:
                labels.append(float(label))
            except ValueError:
                raise ValueError(f"{path}:{line}: label {label!r} is not a number (regression task)") from None
        elif label not in label_values:
            raise ValueError(f"{path}:{line}: unknown label {label!r}; expected one of {label_values}")
        else:
            labels.append(label_values.index(label))
    return labels


def _ranks(x):
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):  # ties share their average rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def glue_metrics(predictions, labels, names):
    """The requested GLUE metrics, in percent."""
    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = float((predictions == labels).mean())
        elif name == "f1":
            tp = float(((predictions == 1) & (labels == 1)).sum())
            precision = tp / max(float((predictions == 1).sum()), 1)
            recall = tp / max(float((labels == 1).sum()), 1)
            out[name] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        elif name == "mcc":
            tp, tn = float(((predictions == 1) & (labels == 1)).sum()), float(((predictions == 0) & (labels == 0)).sum())
            fp, fn = float(((predictions == 1) & (labels == 0)).sum()), float(((predictions == 0) & (labels == 1)).sum())
            denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            out[name] = (tp * tn - fp * fn) / denominator if denominator else 0.0
        elif name == "pearson":
            out[name] = float(np.corrcoef(predictions, labels)[0, 1])
        elif name == "spearman":
            out[name] = float(np.corrcoef(_ranks(predictions), _ranks(labels))[0, 1])
    return {name: 100 * value for name, value in out.items()}


class TextPairs(torch.utils.data.Dataset):
    def __init__(self, tokenizer, rows, labels, max_length):
        texts = list(zip(*(r[0] for r in rows)))
        self.encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": self.labels[i]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (EELBERT or BERT)")
    parser.add_argument("--tokenizer", help="default: the checkpoint's")
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--data-dir", help="the GLUE folder (holding CoLA/, SST-2/, ...)")
    parser.add_argument("--train-file")
    parser.add_argument("--validation-file")
    parser.add_argument("--regression", action="store_true", help="own files: float labels")
    parser.add_argument("--output", required=True)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--max-train-samples", type=int, help="train on the first N rows only (quicker runs)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.task:
        if not args.data_dir:
            parser.error("--task needs --data-dir")
        folder, dev_file, text_columns, label_column, label_values, metrics = TASKS[args.task]
        header = args.task != "cola"
        train_path, dev_path = Path(args.data_dir) / folder / "train.tsv", Path(args.data_dir) / folder / dev_file
    else:
        if not (args.train_file and args.validation_file):
            parser.error("give --task and --data-dir, or --train-file and --validation-file")
        train_path, dev_path, header, label_column = Path(args.train_file), Path(args.validation_file), True, "label"
        with open(train_path, encoding="utf-8-sig") as f:
            first = f.readline()
        text_columns = ("sentence1", "sentence2") if "sentence1" in first else ("text",)
        label_values, metrics = None, ("pearson", "spearman")
        if not args.regression:
            label_values = sorted({label for _, label, _ in read_rows(train_path, text_columns, label_column)})
            metrics = ("accuracy",)
    train_rows = read_rows(train_path, text_columns, label_column, header)[: args.max_train_samples]
    dev_rows = read_rows(dev_path, text_columns, label_column, header)
    train_labels = encode_labels(train_rows, train_path, label_values)
    dev_labels = encode_labels(dev_rows, dev_path, label_values)

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    regression = label_values is None
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, trust_remote_code=True, num_labels=1 if regression else len(label_values),
        problem_type="regression" if regression else "single_label_classification",
        **({} if regression else {"id2label": dict(enumerate(label_values)), "label2id": {v: i for i, v in enumerate(label_values)}}),
    )

    def compute_metrics(prediction):
        logits, labels = prediction
        predictions = logits.squeeze(-1) if regression else logits.argmax(-1)
        return glue_metrics(predictions, labels, metrics)

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.output, num_train_epochs=args.epochs, max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_steps=0.1, eval_strategy="epoch", save_strategy="no",
            report_to=[], seed=args.seed, use_cpu=not torch.cuda.is_available(),
        ),
        train_dataset=TextPairs(tokenizer, train_rows, train_labels, args.max_length),
        eval_dataset=TextPairs(tokenizer, dev_rows, dev_labels, args.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    trainer.train()

    def dev_scores(logged):
        return {k.removeprefix("eval_"): v for k, v in logged.items() if k.removeprefix("eval_") in metrics}

    # The dev scores after every epoch (a grid over epochs from one run) and at the end.
    per_epoch = {round(log["epoch"], 2): dev_scores(log) for log in trainer.state.log_history if "eval_loss" in log}
    scores = dev_scores(trainer.evaluate())
    results = {"task": args.task or str(train_path), "model": str(args.model), "metrics": scores,
               "metrics_per_epoch": per_epoch,
               "train_rows": len(train_rows), "dev_rows": len(dev_rows), "epochs": args.epochs,
               "max_steps": args.max_steps, "learning_rate": args.learning_rate, "seed": args.seed}
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "results.json").write_text(json.dumps(results, indent=2))
    trainer.save_model(args.output)
    tokenizer.save_pretrained(args.output)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
