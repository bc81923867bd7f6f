"""eelbert.training.finetuning (GLUE tasks, readers, labels, metrics, fine-tuning) and examples/run_glue.py, its
command line."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import BERT_UNCASED, GLUE, REPO

from eelbert.training import finetuning
from eelbert.training.finetuning import Columns, InputError

RUN_GLUE = REPO / "examples" / "run_glue.py"


def _run(*args, cwd, ok=True, env=None):
    result = subprocess.run([sys.executable, str(RUN_GLUE), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                            timeout=600, env={**os.environ, **(env or {})})
    assert (result.returncode == 0) == ok, result.stderr[-4000:]
    return result


# ---- GLUE files and metrics ----


@pytest.mark.parametrize("task,train_rows,dev_rows", [
    ("cola", 8551, 1043), ("sst2", 67349, 872), ("mrpc", 3668, 408), ("stsb", 5749, 1500), ("rte", 2490, 277), ("wnli", 635, 71),
])
def test_glue_tsv_files_read_with_the_published_sizes(task, train_rows, dev_rows):
    files = finetuning.glue_files(task, GLUE)
    for path, expected in ((files["train_file"], train_rows), (files["validation_file"], dev_rows)):
        examples = finetuning.read_examples(path, files["columns"])
        labels = finetuning.encode_labels(examples, path, files["labels"])
        assert len(examples) == len(labels) == expected
        assert all(len(e.texts) == len(files["columns"].text) and all(e.texts) for e in examples)


def test_glue_metrics_match_hand_computed_values():
    predictions, labels = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 0, 1, 1, 0])
    scores = finetuning.glue_metrics(predictions, labels, ("accuracy", "f1", "mcc"))
    # tp=2 fp=1 fn=1 tn=2: accuracy 4/6, precision = recall = 2/3, MCC = (4 - 1) / sqrt(3*3*3*3) = 1/3
    assert scores == pytest.approx({"accuracy": 100 * 4 / 6, "f1": 100 * 2 / 3, "mcc": 100 / 3})
    x, y = np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 3.0, 3.0, 10.0])
    correlations = finetuning.glue_metrics(x, y, ("pearson", "spearman"))
    assert correlations["spearman"] == pytest.approx(100.0)  # same order, ties included
    assert correlations["pearson"] == pytest.approx(100 * np.corrcoef(x, y)[0, 1])


def test_undefined_metrics_score_zero_never_nan(caplog):
    constant, labels = np.zeros(6), np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    scores = finetuning.glue_metrics(constant, labels, ("pearson", "spearman"))
    assert scores == {"pearson": 0.0, "spearman": 0.0}
    assert "pearson is undefined" in caplog.text
    assert finetuning.glue_metrics(np.zeros(4, int), np.array([0, 1, 0, 1]), ("mcc", "f1")) == {"mcc": 0.0, "f1": 0.0}
    assert finetuning.glue_metrics(np.ones(1), np.ones(1), ("pearson",)) == {"pearson": 0.0}  # one row
    with pytest.raises(ValueError, match="unknown metric"):
        finetuning.glue_metrics(constant, labels, ("bleu",))


# ---- Your own files ----


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("header,columns,texts", [
    ("sentence\tlabel", Columns(), ("a b",)),  # SST-2's own header
    ("text\tlabel", Columns(), ("a b",)),
    ("sentence1\tsentence2\tlabel", Columns(), ("a b", "c")),
    ("id\treview\tstars", Columns(("review",), "stars"), ("a b",)),
    ("q\tlabel\tpassage", Columns(("q", "passage")), ("a b", "c")),
])
def test_own_tsv_columns_by_header_or_by_name(tmp_path, header, columns, texts):
    names = header.split("\t")
    values = {"sentence": "a b", "text": "a b", "review": "a b", "q": "a b", "sentence1": "a b", "sentence2": "c",
              "passage": "c", "label": "pos", "stars": "pos", "id": "7"}
    path = _write(tmp_path, "train.tsv", header + "\n" + "\t".join(values[n] for n in names) + "\n")
    [example] = finetuning.read_examples(path, columns)
    assert example.texts == texts and example.label == "pos" and example.line == 2


def test_headerless_files_take_column_positions(tmp_path):
    path = _write(tmp_path, "train.csv", 'neg,"bad, very bad",x\npos,good,y\n')
    examples = finetuning.read_examples(path, Columns((1, 2), 0, header=False))
    assert [(e.texts, e.label, e.line) for e in examples] == [(("bad, very bad", "x"), "neg", 1), (("good", "y"), "pos", 2)]


def test_label_ids_follow_numbers_else_first_appearance_else_the_given_order():
    def examples(*labels):
        return [finetuning.Example(("t",), label, i) for i, label in enumerate(labels)]

    assert finetuning.label_list(examples("10", "2", "1", "2")) == ["1", "2", "10"]  # not "10" before "2"
    assert finetuning.label_list(examples("1", "0")) == ["0", "1"]  # integer labels keep their numbers as ids
    assert finetuning.label_list(examples("pos", "neg", "neutral", "neg")) == ["pos", "neg", "neutral"]
    labels = finetuning.parse_labels("neg, neutral,pos")
    assert labels == ["neg", "neutral", "pos"]
    assert finetuning.encode_labels(examples("pos", "neg"), "f", labels) == [2, 0]
    for bad in ("a", "a,a", "a,,b"):
        with pytest.raises(InputError, match="--labels"):
            finetuning.parse_labels(bad)


@pytest.mark.parametrize("name,text,columns,message", [
    ("train.csv", "text,label\nok,pos\nbroken\n", Columns(), "train.csv:3: expected 2 columns, found 1"),
    ("train.csv", "text,label\nok,\n", Columns(), "train.csv:2: empty label"),
    ("train.csv", "review,label\nok,pos\n", Columns(), "train.csv: no text column"),
    ("train.csv", "sentence,label\nok,pos\n", Columns(("review",)), "train.csv: missing column(s) ['review']"),
    ("train.csv", "text,stars\nok,pos\n", Columns(), "train.csv: missing column(s) ['label']"),
    ("train.csv", "", Columns(), "train.csv: empty file"),
    ("train.csv", "text,label\n", Columns(), "train.csv: no rows below the header"),
    ("train.tsv", "ok\tpos\nonly\n", Columns((0,), 1, header=False), "train.tsv:2: expected at least 2 columns, found 1"),
    ("train.tsv", "ok\tpos\n", Columns(("text",), "label", header=False), "needs column positions"),
    ("train.csv", b"text,label\n\xff\xfe,pos\n", Columns(), "train.csv: not UTF-8 text"),
])
def test_bad_files_are_clear_errors_naming_file_and_line(tmp_path, name, text, columns, message):
    with pytest.raises(InputError) as error:
        finetuning.read_examples(_write(tmp_path, name, text), columns)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_and_non_numeric_labels_name_file_and_line(tmp_path):
    path = _write(tmp_path, "dev.csv", "text,label\nok,pos\nhm,maybe\n")
    examples = finetuning.read_examples(path)
    with pytest.raises(InputError, match=r"dev.csv:3: unknown label 'maybe'; expected one of \['pos', 'neg'\]"):
        finetuning.encode_labels(examples, path, ["pos", "neg"])
    with pytest.raises(InputError, match=r"dev.csv:2: label 'pos' is not a number \(regression\)"):
        finetuning.encode_labels(examples, path, None)


# ---- Models ----


@pytest.fixture
def uno_checkpoint(uno_config, tokenizer, tmp_path):
    import eelbert

    folder = tmp_path / "uno"
    eelbert.EelbertForMaskedLM(uno_config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name,class_name", [("uno-eelbert", "EelbertForSequenceClassification"),
                                             ("bert-tiny", "BertForSequenceClassification")])
def test_presets_make_new_classifiers_without_the_hub(tokenizer, name, class_name):
    model = finetuning.classifier(name, tokenizer, ["neg", "pos", "neutral"])
    assert type(model).__name__ == class_name and model.config.id2label == {0: "neg", 1: "pos", 2: "neutral"}
    assert model(**tokenizer(["a fine day"], return_tensors="pt")).logits.shape == (1, 3)
    regressor = finetuning.classifier(name, tokenizer, None)
    assert regressor.config.num_labels == 1 and regressor.config.problem_type == "regression"
    with pytest.raises(InputError, match="is a preset .* give --tokenizer"):
        finetuning.load_tokenizer(name)


def test_a_missing_model_is_a_one_line_error_at_once(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(InputError, match=r"--model .*nothing-here: no model folder .*nothing-here \(and it is not a Hub id\)"):
        finetuning.load_tokenizer(tmp_path / "nothing-here")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match=r"--tokenizer someone/tok: no tokenizer folder someone/tok, .* not in the local Hub cache"):
        finetuning.load_tokenizer("uno-eelbert", "someone/tok")
    # Online, an unreachable Hub is one quick check (eelbert.hub.check_hub_reachable), not a minute of retries.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(InputError, match=r"--model someone/model: someone/model is not a model folder, .*cannot reach the Hub") as error:
        finetuning.classifier("someone/model", None, ["a", "b"])
    assert "\n" not in str(error.value)


def test_unknown_presets_and_unfinetuned_checkpoints_are_clear_errors(tokenizer, uno_checkpoint, tmp_path):
    with pytest.raises(InputError, match="--model .*bert-tiny.json: preset .*bert-tiny.json' is not an EELBERT config"):
        finetuning.classifier(str(REPO / "configs" / "bert-tiny.json"), tokenizer, ["a", "b"])
    (tmp_path / "test.csv").write_text("text,label\nok,pos\n")
    with pytest.raises(InputError, match=r"not a fine-tuned classifier \(its config.json lists \['EelbertForMaskedLM'\]\)"):
        finetuning.evaluate(uno_checkpoint, tmp_path / "test.csv")


# ---- Fine-tuning, end to end ----


def _own_files(tmp_path, header="sentence,label"):
    rows = "\n".join(f'"good, fine {i}",10\nbad {i},2' for i in range(8))
    for name in ("train.csv", "dev.csv", "test.csv"):
        (tmp_path / name).write_text(f"{header}\n{rows}\n")


def test_own_csv_files_train_then_score_a_test_file_with_eval_only(uno_checkpoint, tmp_path):
    _own_files(tmp_path)
    _run("--model", uno_checkpoint, "--train-file", tmp_path / "train.csv", "--validation-file", tmp_path / "dev.csv",
         "--output", tmp_path / "out", "--epochs", "2", "--max-train-samples", "10", "--warmup", "2",
         "--weight-decay", "0.05", "--threads", "1", cwd=tmp_path)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["metrics"]) == {"accuracy"} and results["train_rows"] == 10
    assert results["labels"] == ["2", "10"]  # by value: "10" does not sort before "2"
    assert (results["warmup_steps"], results["weight_decay"], results["threads"]) == (2, 0.05, 1)
    # dev scores after every epoch; the last is the final score
    assert list(results["metrics_per_epoch"]) == ["1.0", "2.0"]
    assert results["metrics_per_epoch"]["2.0"] == results["metrics"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "2", "1": "10"}

    scored = _run("--model", tmp_path / "out", "--eval-only", "--test", tmp_path / "test.csv", "--output",
                  tmp_path / "scored", cwd=tmp_path)
    test = json.loads((tmp_path / "scored" / "test_results.json").read_text())
    assert json.loads(scored.stdout.strip().splitlines()[-1]) == test
    assert test["test_rows"] == 16 and test["labels"] == ["2", "10"]
    # The same model on the dev set (the same rows as test.csv): the score it saved after training.
    assert test["test_metrics"]["accuracy"] == pytest.approx(results["metrics"]["accuracy"])


def test_fine_tuning_a_preset_with_named_columns_and_given_labels(tmp_path):
    (tmp_path / "train.tsv").write_text("id\tquestion\tanswer\tverdict\n" + "".join(
        f"{i}\twhat is {i}\tit is {i}\t{'yes' if i % 2 else 'no'}\n" for i in range(12)))
    results = finetuning.fine_tune(
        "uno-eelbert", BERT_UNCASED, tmp_path / "train.tsv", tmp_path / "train.tsv", tmp_path / "out",
        columns=Columns(("question", "answer"), "verdict"), labels=["yes", "no"], max_steps=2,
        per_device_train_batch_size=4, warmup_steps=0, test_file=tmp_path / "train.tsv",
    )
    assert results["labels"] == ["yes", "no"] and results["model"] == "uno-eelbert" and results["train_rows"] == 12
    assert results["test_rows"] == 12 and results["test_metrics"] == pytest.approx(results["metrics"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "eelbert" and config["label2id"] == {"yes": 0, "no": 1}
    # Regression on the row ids: after one step the predictions are nearly constant; the scores are numbers, not NaN.
    regression = finetuning.fine_tune(
        "uno-eelbert", BERT_UNCASED, tmp_path / "train.tsv", tmp_path / "train.tsv", tmp_path / "reg",
        columns=Columns(("question",), "id"), regression=True, max_steps=1, per_device_train_batch_size=4,
    )
    assert set(regression["metrics"]) == {"pearson", "spearman"}
    assert all(math.isfinite(v) for v in regression["metrics"].values())


def test_headerless_files_from_the_command_line(uno_checkpoint, tmp_path):
    rows = "".join(f"{'b' if i % 2 else 'a'}\tsome text {i}\n" for i in range(8))
    (tmp_path / "train.tsv").write_text(rows)
    _run("--model", uno_checkpoint, "--train-file", tmp_path / "train.tsv", "--validation-file", tmp_path / "train.tsv",
         "--no-header", "--text-column", "1", "--label-column", "0", "--labels", "b,a", "--output", tmp_path / "out",
         "--max-steps", "1", "--batch-size", "4", cwd=tmp_path)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["labels"] == ["b", "a"] and results["train_rows"] == 8


@pytest.mark.parametrize("args,message", [
    (["--labels", "pos,neg"], "train.csv:2: unknown label '10'; expected one of ['pos', 'neg']"),
    (["--text-column", "review"], "train.csv: missing column(s) ['review']"),
    (["--no-header", "--text-column", "text"], "with --no-header, --text-column and --label-column are 0-based positions"),
    (["--eval-only", "--test", "dev.csv", "--regression"], "--eval-only trains nothing and takes the checkpoint's labels"),
])
def test_bad_input_is_a_one_line_error_not_a_traceback(uno_checkpoint, tmp_path, args, message):
    _own_files(tmp_path)
    result = _run("--model", uno_checkpoint, "--train-file", tmp_path / "train.csv", "--validation-file",
                  tmp_path / "dev.csv", "--output", tmp_path / "out", *args, cwd=tmp_path, ok=False)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("run_glue.py: error:")  # after argparse's usage, if any


def test_preset_model_on_the_command_line_needs_no_network(tmp_path):
    _own_files(tmp_path)
    args = ["--train-file", tmp_path / "train.csv", "--validation-file", tmp_path / "dev.csv", "--output", tmp_path / "out"]
    missing = _run("--model", "uno-eelbert", *args, cwd=tmp_path, ok=False, env={"HF_HUB_OFFLINE": "1"})
    assert "run_glue.py: error: --model uno-eelbert is a preset" in missing.stderr and "Traceback" not in missing.stderr
    _run("--model", "uno-eelbert", "--tokenizer", BERT_UNCASED, *args, "--max-steps", "1", cwd=tmp_path,
         env={"HF_HUB_OFFLINE": "1"})
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "eelbert"


@pytest.mark.slow
@pytest.mark.parametrize("task,metrics", [("rte", {"accuracy"}), ("stsb", {"pearson", "spearman"})])
def test_glue_fine_tuning_writes_results(uno_checkpoint, tmp_path, task, metrics):
    output = tmp_path / task
    _run("--model", uno_checkpoint, "--task", task, "--data-dir", GLUE, "--output", output, "--max-steps", "2",
         "--batch-size", "8", cwd=tmp_path)
    results = json.loads((output / "results.json").read_text())
    assert results["task"] == task and set(results["metrics"]) == metrics and results["dev_rows"] > 0
    assert (output / "modeling_eelbert.py").is_file()
    assert torch.load(output / "training_args.bin", weights_only=False).warmup_steps == 0.1
