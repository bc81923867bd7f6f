"""Fine-tune a checkpoint (or a new model from a preset) on a GLUE task or on your own CSV/TSV, with the Trainer.

    python examples/run_glue.py --model uno-mlm --task rte --data-dir ../shared/data/glue --output rte-out
    python examples/run_glue.py --model uno-mlm --train-file train.csv --validation-file dev.csv --output out
    python examples/run_glue.py --model out --eval-only --test test.csv      # score a fine-tuned model

Each GLUE task is scored with its official metric (CoLA: Matthews correlation; STS-B: Pearson and Spearman;
MRPC and QQP: F1 and accuracy; the others: accuracy) on its dev set, after every epoch and at the end;
results go to OUTPUT/results.json. Your own files (.csv, else tab-separated) have a header naming a `text` or
`sentence` column (or `sentence1` and `sentence2`) and a `label` column, or the columns --text-column and
--label-column name; with --no-header those flags are 0-based positions. Label ids follow --labels, else the
labels' values when all are integers, else their order of first appearance in the training file.
The library behind this script: eelbert/training/finetuning.py.
"""

import argparse
import json
import sys

from eelbert.training import finetuning


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (EELBERT or BERT), or a preset "
                        "(eelbert-* / uno-eelbert / bert-*) or preset JSON for a new model")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the checkpoint's; a preset needs one)")
    parser.add_argument("--task", choices=sorted(finetuning.TASKS))
    parser.add_argument("--data-dir", help="the GLUE folder (holding CoLA/, SST-2/, ...)")
    parser.add_argument("--train-file")
    parser.add_argument("--validation-file")
    parser.add_argument("--test", help="a labelled file to score at the end (with --eval-only: instead of training)")
    parser.add_argument("--eval-only", action="store_true", help="score the fine-tuned --model on --test, no training")
    parser.add_argument("--text-column", nargs="+", help="own files: the text column, or two for sentence pairs "
                        "(default: sentence1 and sentence2, else text, else sentence)")
    parser.add_argument("--label-column", help="own files: the label column (default: label; 1 with --no-header)")
    parser.add_argument("--no-header", action="store_true", help="own files have no header: columns are positions")
    parser.add_argument("--labels", help="own files: the labels in id order, comma-separated (a,b,c)")
    parser.add_argument("--regression", action="store_true", help="own files: float labels")
    parser.add_argument("--output", help="folder for the model and results.json (required unless --eval-only)")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--max-train-samples", type=int, help="train on the first N rows only (quicker runs)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up steps (>= 1) or share of the steps (< 1); "
                        "default 0.1")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, help="torch threads per process (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    own_data = ("text_column", "label_column", "no_header", "labels", "regression")
    if args.task:
        if not args.data_dir:
            parser.error("--task needs --data-dir")
        given = [f"--{name.replace('_', '-')}" for name in own_data if getattr(args, name)]
        if given or args.train_file or args.validation_file:
            parser.error(f"--task reads the GLUE files with their own columns and labels: drop {given or '--train-file/--validation-file'}")
    elif args.eval_only:
        if not args.test:
            parser.error("--eval-only needs --test (or --task and --data-dir: the task's dev set)")
        if args.regression or args.train_file or args.validation_file:
            parser.error("--eval-only trains nothing and takes the checkpoint's labels: drop --regression, "
                         "--train-file and --validation-file")
    elif not (args.train_file and args.validation_file):
        parser.error("give --task and --data-dir, or --train-file and --validation-file")
    if not args.eval_only and not args.output:
        parser.error("--output is required (unless --eval-only)")
    if args.text_column and len(args.text_column) > 2:
        parser.error(f"--text-column takes one column, or two for sentence pairs, not {len(args.text_column)}")
    if args.regression and args.labels:
        parser.error("--regression and --labels exclude each other")
    for name in ("batch_size", "max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    for name in ("warmup", "weight_decay"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    if args.no_header:
        try:
            args.text_column = tuple(int(c) for c in args.text_column or ["0"])
            args.label_column = int(1 if args.label_column is None else args.label_column)
        except ValueError:
            parser.error("with --no-header, --text-column and --label-column are 0-based positions (0, 1, ...)")
    return args


def parse_labels(args):
    return finetuning.parse_labels(args.labels) if args.labels else None


def data_arguments(args) -> dict:
    """The files, columns and labels the flags describe (a GLUE task's, or your own)."""
    if args.task:
        data = finetuning.glue_files(args.task, args.data_dir)
        if args.eval_only and not args.test:
            data["train_file"], data["test_file"] = None, data["validation_file"]
        return data
    columns = finetuning.Columns(
        tuple(args.text_column) if args.text_column else None,
        "label" if args.label_column is None else args.label_column, header=not args.no_header
    )
    return {"train_file": args.train_file, "validation_file": args.validation_file, "columns": columns,
            "labels": parse_labels(args), "regression": args.regression, "metrics": None, "task": None}


def main(argv=None):
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = data_arguments(args)
        if args.eval_only:
            results = finetuning.evaluate(
                args.model, args.test or data["test_file"], columns=data["columns"],
                labels=parse_labels(args), metrics=data["metrics"], tokenizer=args.tokenizer,
                batch_size=args.batch_size, max_length=args.max_length, task=data["task"],
            )
            if args.output:
                from pathlib import Path

                Path(args.output).mkdir(parents=True, exist_ok=True)
                (Path(args.output) / "test_results.json").write_text(json.dumps(results, indent=2))
        else:
            results = finetuning.fine_tune(
                args.model, args.tokenizer, output=args.output, test_file=args.test,
                max_train_samples=args.max_train_samples, max_length=args.max_length, seed=args.seed,
                num_train_epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
                warmup_steps=args.warmup, weight_decay=args.weight_decay, per_device_train_batch_size=args.batch_size,
                **{k: v for k, v in data.items() if k != "test_file"},
            )
    except finetuning.InputError as error:  # a bad file, column, label or model name: one line, no traceback
        sys.exit(f"run_glue.py: error: {error}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
