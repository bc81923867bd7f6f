"""Fine-tuning a sequence classifier (or regressor) with the Hugging Face Trainer: the GLUE task table, readers for
the GLUE TSVs and your own CSV/TSV files, label ids, and the GLUE metrics (used by examples/run_glue.py and
benchmarks/paper_comparison.py).

The metrics come from scikit-learn (accuracy, F1, Matthews correlation) and SciPy (Pearson, Spearman). A metric
that is undefined, such as a correlation with constant predictions, scores 0 (with a warning), never NaN: a NaN
would win or poison any `max()` over runs.
"""

import csv
import json
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..presets import BASELINE_OF, EELBERT_PRESETS, baseline_config, preset_config

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """A bad file, column, label or model name; the message says which (file and line where there is one)."""


# ---- Tasks and files ----


@dataclass(frozen=True)
class Columns:
    """Where a file's texts and labels are: header names, or 0-based positions (in a file without a header).
    `text` None: `sentence1` and `sentence2`, else `text`, else `sentence` (SST-2's header), whichever the header has."""

    text: tuple[str | int, ...] | None = None
    label: str | int = "label"
    header: bool = True


@dataclass(frozen=True)
class GlueTask:
    folder: str
    dev_file: str
    columns: Columns
    labels: tuple[str, ...] | None  # in id order; None: regression
    metrics: tuple[str, ...]


TASKS = {
    "cola": GlueTask("CoLA", "dev.tsv", Columns((3,), 1, header=False), ("0", "1"), ("mcc",)),
    "sst2": GlueTask("SST-2", "dev.tsv", Columns(("sentence",), "label"), ("0", "1"), ("accuracy",)),
    "mrpc": GlueTask("MRPC", "dev.tsv", Columns(("#1 String", "#2 String"), "Quality"), ("0", "1"), ("f1", "accuracy")),
    "stsb": GlueTask("STS-B", "dev.tsv", Columns(("sentence1", "sentence2"), "score"), None, ("pearson", "spearman")),
    "qqp": GlueTask("QQP", "dev.tsv", Columns(("question1", "question2"), "is_duplicate"), ("0", "1"), ("f1", "accuracy")),
    "mnli": GlueTask("MNLI", "dev_matched.tsv", Columns(("sentence1", "sentence2"), "gold_label"),
                     ("contradiction", "entailment", "neutral"), ("accuracy",)),
    "qnli": GlueTask("QNLI", "dev.tsv", Columns(("question", "sentence"), "label"), ("entailment", "not_entailment"), ("accuracy",)),
    "rte": GlueTask("RTE", "dev.tsv", Columns(("sentence1", "sentence2"), "label"), ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": GlueTask("WNLI", "dev.tsv", Columns(("sentence1", "sentence2"), "label"), ("0", "1"), ("accuracy",)),
    # Not GLUE: the topics of 2,225 BBC News articles (2004-2005), as benchmarks/paper_comparison.py writes them.
    "bbc": GlueTask("BBC", "dev.tsv", Columns(("text",), "label"),
                    ("business", "entertainment", "politics", "sports", "tech"), ("accuracy",)),
}
# Your own data: classification is scored by accuracy, regression (float labels) by Pearson and Spearman.
CLASSIFICATION_METRICS, REGRESSION_METRICS = ("accuracy",), ("pearson", "spearman")
_TEXT_HEADERS = (("sentence1", "sentence2"), ("text",), ("sentence",))


@dataclass(frozen=True)
class Example:
    texts: tuple[str, ...]
    label: str
    line: int  # in its file, for error messages


def read_examples(path, columns: Columns = Columns()) -> list[Example]:
    """The examples of a CSV (`.csv`) or TSV (any other name) file; every problem is an InputError naming the file
    and, for a bad row, its line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    tsv = path.suffix.lower() != ".csv"
    # GLUE's TSVs hold unbalanced quotes inside sentences: in a TSV a quote is an ordinary character.
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {"delimiter": ","}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, **dialect)
            rows = [(reader.line_num, row) for row in reader if row]
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    except csv.Error as error:
        raise InputError(f"{path}:{reader.line_num}: {error}") from None
    if not rows:
        raise InputError(f"{path}: empty file")
    text, label, width = columns.text, columns.label, None
    if columns.header:
        (_, names), rows = rows[0], rows[1:]
        if text is None:
            text = next((c for c in _TEXT_HEADERS if set(c) <= set(names)), None)
            if text is None:
                raise InputError(f"{path}: no text column: expected `text`, `sentence`, or `sentence1` and `sentence2` "
                                 f"in the header {names} (or name one with --text-column)")
        missing = [c for c in (*text, label) if not isinstance(c, int) and c not in names]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; its header has {names}")
        text = [c if isinstance(c, int) else names.index(c) for c in text]
        label = label if isinstance(label, int) else names.index(label)
        width = len(names)
    elif text is None or not all(isinstance(c, int) for c in (*text, label)):
        raise InputError(f"{path}: a file without a header needs column positions (0, 1, ...), not names")
    needed = max(*text, label) + 1
    examples = []
    for line, row in rows:
        if (width is not None and len(row) != width) or len(row) < needed:
            raise InputError(f"{path}:{line}: expected {width or f'at least {needed}'} columns, found {len(row)}")
        if not row[label].strip():
            raise InputError(f"{path}:{line}: empty label")
        examples.append(Example(tuple(row[i] for i in text), row[label].strip(), line))
    if not examples:
        raise InputError(f"{path}: no rows below the header")
    return examples


def label_list(examples) -> list[str]:
    """The training file's labels in id order: by value when every label is an integer (so "2" comes before "10",
    and labels 0..n-1 keep their numbers as ids), otherwise in order of first appearance."""
    labels = list(dict.fromkeys(e.label for e in examples))
    try:
        return sorted(labels, key=int)
    except ValueError:
        return labels


def parse_labels(text: str) -> list[str]:
    """`a,b,c` (as --labels gives it) -> ["a", "b", "c"]: the labels in id order."""
    labels = [label.strip() for label in text.split(",")]
    if any(not label for label in labels) or len(set(labels)) != len(labels) or len(labels) < 2:
        raise InputError(f"--labels {text!r}: expected two or more distinct, non-empty labels separated by commas")
    return labels


def encode_labels(examples, path, labels) -> list:
    """Class ids (the positions in `labels`) or, where `labels` is None, floats (regression)."""
    ids = {label: i for i, label in enumerate(labels or ())}
    encoded = []
    for example in examples:
        if labels is None:
            try:
                encoded.append(float(example.label))
            except ValueError:
                raise InputError(f"{path}:{example.line}: label {example.label!r} is not a number (regression)") from None
        elif example.label not in ids:
            raise InputError(f"{path}:{example.line}: unknown label {example.label!r}; expected one of {list(labels)}")
        else:
            encoded.append(ids[example.label])
    return encoded


# ---- Metrics ----


def glue_metrics(predictions, labels, names) -> dict[str, float]:
    """The named metrics (accuracy, f1, mcc, pearson, spearman), in percent. F1 is for class 1 (MRPC, QQP). An
    undefined metric (a correlation with constant predictions or labels, or fewer than two rows) scores 0."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    functions = {
        "accuracy": accuracy_score,
        "f1": lambda y, p: f1_score(y, p, zero_division=0.0),
        "mcc": matthews_corrcoef,
        "pearson": lambda y, p: pearsonr(p, y).statistic,
        "spearman": lambda y, p: spearmanr(p, y).statistic,
    }
    unknown = set(names) - set(functions)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}: known are {sorted(functions)}")
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    scores = {}
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy/sklearn warn on constant input; the zero below says it
            try:
                value = float(functions[name](labels, predictions))
            except ValueError:  # too few rows
                value = math.nan
        if not math.isfinite(value):
            logger.warning("%s is undefined on these %d predictions (constant, or too few): scored 0", name, len(labels))
            value = 0.0
        scores[name] = 100 * value
    return scores


# ---- Models ----


def load_tokenizer(model_name_or_path, tokenizer=None):
    """The tokenizer (folder or Hub id), or else the checkpoint's; a preset (a new model) needs one named."""
    from transformers import AutoTokenizer

    from .pretraining import is_fresh

    if tokenizer is None and is_fresh(model_name_or_path):
        raise InputError(f"--model {model_name_or_path} is a preset (a new, untrained model): give --tokenizer")
    flag, name = ("--tokenizer", tokenizer) if tokenizer else ("--model", model_name_or_path)
    with _loading(flag, name):
        return AutoTokenizer.from_pretrained(_local_or_hub(flag, name, flag.removeprefix("--")))


def _local_or_hub(flag, name_or_path, what):
    """A folder, or a Hub id checked first (offline: in the local cache; online: the Hub answers), as the `eelbert`
    command checks them: from_pretrained would retry for about a minute, then blame the connection."""
    from ..cli import _local_or_hub

    try:
        return _local_or_hub(str(name_or_path), what)
    except (FileNotFoundError, ConnectionError) as error:
        raise InputError(f"{flag} {name_or_path}: {error}") from None


@contextmanager
def _loading(flag, name):
    """A Hub id that names no model (nor a preset): one line, not a traceback."""
    try:
        yield
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        known = sorted({*EELBERT_PRESETS, *BASELINE_OF.values()})
        raise InputError(f"{flag} {name}: not a folder, a preset {known} or a reachable Hub id ({first})") from None


def classifier(name_or_path, tokenizer, labels, pretrained=True):
    """A sequence classifier over `labels` (None: a regressor): new from a preset or preset JSON (as run_mlm.py and
    pretraining.build_model take them), else with its encoder loaded from a checkpoint folder or Hub id
    (`pretrained` False: the checkpoint's architecture with new weights, the control that shows what pretraining buys)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertForSequenceClassification

    from ..modeling.modeling_eelbert import EelbertForSequenceClassification

    head = {"problem_type": "regression", "num_labels": 1} if labels is None else {
        "problem_type": "single_label_classification", "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if name_or_path in EELBERT_PRESETS or str(name_or_path).endswith(".json"):
        try:
            config = preset_config(name_or_path, tokenizer=tokenizer, **head)
        except (ValueError, OSError) as error:  # an unknown preset, a baseline's JSON, a JSON that is not one
            raise InputError(f"--model {name_or_path}: {error}") from None
        return EelbertForSequenceClassification(config)
    if name_or_path in BASELINE_OF.values():
        config = baseline_config(name_or_path, vocab_size=len(tokenizer))
        for key, value in head.items():
            setattr(config, key, value)
        return BertForSequenceClassification(config)
    with _loading("--model", name_or_path):
        source = _local_or_hub("--model", name_or_path, "model")
        if not pretrained:
            config = AutoConfig.from_pretrained(source, trust_remote_code=True, **head)
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=True)
        return AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=True, **head)


def checkpoint_labels(config) -> list[str] | None:
    """The labels a fine-tuned checkpoint predicts, in id order; None for a regressor."""
    if config.problem_type == "regression" or config.num_labels == 1:
        return None
    return [config.id2label[i] for i in range(config.num_labels)]


# ---- Training and evaluation ----


class TextPairs:
    """Tokenized texts (one or two per example) with their labels, as the Trainer reads them."""

    def __init__(self, tokenizer, examples, labels, max_length):
        self.encoded = tokenizer(*zip(*(e.texts for e in examples)), truncation=True, max_length=max_length)
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": self.labels[i]}


def fine_tuning_arguments(output, **overrides):
    """The Trainer settings fine-tuning uses, with any `TrainingArguments` field overridden."""
    import torch
    from transformers import TrainingArguments

    settings = dict(
        output_dir=str(output), num_train_epochs=3, per_device_train_batch_size=32, per_device_eval_batch_size=32,
        learning_rate=1e-4, warmup_steps=0.1, weight_decay=0.0, eval_strategy="epoch", save_strategy="no",
        report_to=[], use_cpu=not torch.cuda.is_available(),
    )
    settings.update(overrides)
    if "per_device_eval_batch_size" not in overrides:
        settings["per_device_eval_batch_size"] = settings["per_device_train_batch_size"]
    return TrainingArguments(**settings)


def _metric_function(metrics, regression):
    def compute_metrics(prediction):
        logits, labels = prediction
        return glue_metrics(logits.squeeze(-1) if regression else logits.argmax(-1), labels, metrics)

    return compute_metrics


def _scores(logged, metrics):
    return {k.removeprefix("eval_"): v for k, v in logged.items() if k.removeprefix("eval_") in metrics}


def fine_tune(model, tokenizer, train_file, validation_file, output, *, columns=Columns(), labels=None,
              regression=False, metrics=None, test_file=None, max_train_samples=None, max_length=128, seed=0,
              task=None, **training_arguments) -> dict:
    """Fine-tune `model` (a preset, preset JSON, checkpoint folder or Hub id) on a file of labelled texts, scoring
    `metrics` on the validation file after every epoch and at the end (and on `test_file`, if given). `labels`: the
    class labels in id order (default: label_list() of the training file); `regression`: float labels. Saves the model,
    its tokenizer and OUTPUT/results.json; returns the results. `training_arguments` override fine_tuning_arguments()."""
    return fine_tune_examples(
        model, tokenizer, read_examples(train_file, columns)[:max_train_samples], read_examples(validation_file, columns),
        output, labels=labels, regression=regression, metrics=metrics,
        test_rows=read_examples(test_file, columns) if test_file else None, max_length=max_length, seed=seed,
        task=task or str(train_file), sources=(train_file, validation_file, test_file), **training_arguments,
    )


def fine_tune_examples(model, tokenizer, train_rows, dev_rows, output, *, labels=None, regression=False, metrics=None,
                       test_rows=None, max_length=128, seed=0, task="examples",
                       sources=("training examples", "validation examples", "test examples"), pretrained=True,
                       **training_arguments) -> dict:
    """fine_tune() on lists of `Example`s in memory; `sources` name the three lists in error messages. `pretrained`
    False: a checkpoint's architecture from scratch (classifier())."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, set_seed

    import eelbert  # noqa: F401  (registers EELBERT with the Auto classes)

    if regression:
        labels = None
    elif labels is None:
        labels = label_list(train_rows)
    metrics = tuple(metrics or (REGRESSION_METRICS if labels is None else CLASSIFICATION_METRICS))
    train_labels, dev_labels = encode_labels(train_rows, sources[0], labels), encode_labels(dev_rows, sources[1], labels)
    test_labels = encode_labels(test_rows, sources[2], labels) if test_rows is not None else None

    set_seed(seed)
    name = str(model) if isinstance(model, (str, Path)) else model.name_or_path
    if not pretrained and not isinstance(model, (str, Path)):
        raise InputError("pretrained=False builds a new model from a checkpoint's name or folder, not from a model object")
    if isinstance(tokenizer, (str, Path)) or tokenizer is None:
        tokenizer = load_tokenizer(model, tokenizer)
    if isinstance(model, (str, Path)):
        model = classifier(model, tokenizer, labels, pretrained)
    args = fine_tuning_arguments(output, seed=seed, **training_arguments)
    trainer = Trainer(
        model=model, args=args, train_dataset=TextPairs(tokenizer, train_rows, train_labels, max_length),
        eval_dataset=TextPairs(tokenizer, dev_rows, dev_labels, max_length), data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_metric_function(metrics, labels is None),
    )
    trainer.train()
    # The dev scores after every epoch (a grid over epochs from one run) and at the end.
    per_epoch = {round(log["epoch"], 2): _scores(log, metrics) for log in trainer.state.log_history if "eval_loss" in log}
    results = {"task": task, "model": name, "pretrained": pretrained, "labels": labels,
               "metrics": _scores(trainer.evaluate(), metrics), "metrics_per_epoch": per_epoch,
               "train_rows": len(train_rows), "dev_rows": len(dev_rows), "epochs": args.num_train_epochs,
               "max_steps": args.max_steps, "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps,
               "weight_decay": args.weight_decay, "sampling": args.train_sampling_strategy,
               "threads": torch.get_num_threads(), "seed": seed}
    if test_rows is not None:
        results["test_metrics"] = _scores(trainer.evaluate(TextPairs(tokenizer, test_rows, test_labels, max_length)), metrics)
        results["test_rows"] = len(test_rows)
    Path(output).mkdir(parents=True, exist_ok=True)
    (Path(output) / "results.json").write_text(json.dumps(results, indent=2))
    trainer.save_model(str(output))
    tokenizer.save_pretrained(str(output))
    return results


def evaluate(checkpoint, test_file, *, columns=Columns(), labels=None, metrics=None, tokenizer=None, batch_size=32,
             max_length=128, task=None) -> dict:
    """Score a fine-tuned checkpoint on a file of labelled texts, without training. The labels are the checkpoint's
    own (its config's id2label), unless `labels` names them in id order."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer

    import eelbert  # noqa: F401  (registers EELBERT with the Auto classes)

    rows = read_examples(test_file, columns)
    tokenizer = load_tokenizer(checkpoint, tokenizer)
    source = _local_or_hub("--model", checkpoint, "model")
    with _loading("--model", checkpoint):
        config = AutoConfig.from_pretrained(source, trust_remote_code=True)
    if not any(name.endswith("ForSequenceClassification") for name in config.architectures or ()):
        raise InputError(f"--model {checkpoint}: not a fine-tuned classifier (its config.json lists "
                         f"{config.architectures}): fine-tune it first, then evaluate the result")
    with _loading("--model", checkpoint):
        model = AutoModelForSequenceClassification.from_pretrained(source, config=config, trust_remote_code=True)
    own = checkpoint_labels(model.config)
    if labels is not None and (own is None or len(labels) != len(own)):
        raise InputError(f"--labels {','.join(labels)}: the checkpoint {checkpoint} predicts "
                         f"{'a number (regression)' if own is None else f'{len(own)} labels {own}'}")
    labels = own if labels is None else labels
    metrics = tuple(metrics or (REGRESSION_METRICS if labels is None else CLASSIFICATION_METRICS))
    encoded = encode_labels(rows, test_file, labels)
    trainer = Trainer(
        model=model, args=fine_tuning_arguments(Path(checkpoint), per_device_eval_batch_size=batch_size, eval_strategy="no"),
        data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=_metric_function(metrics, labels is None),
    )
    scores = _scores(trainer.evaluate(TextPairs(tokenizer, rows, encoded, max_length)), metrics)
    return {"task": task or str(test_file), "model": str(checkpoint), "labels": labels, "test_metrics": scores,
            "test_rows": len(rows)}


def glue_files(task, data_dir) -> dict:
    """fine_tune()'s file, column, label and metric arguments for a GLUE task in `data_dir` (CoLA/, SST-2/, ...)."""
    spec = TASKS[task]
    folder = Path(data_dir) / spec.folder
    return {"train_file": folder / "train.tsv", "validation_file": folder / spec.dev_file, "columns": spec.columns,
            "labels": list(spec.labels) if spec.labels else None, "regression": spec.labels is None,
            "metrics": spec.metrics, "task": task}
