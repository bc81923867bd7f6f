"""benchmarks/paper_comparison.py: the typo test, the GLUE grid bookkeeping, and a miniature end-to-end run."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import GLUE, REPO
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

import eelbert.modeling
from eelbert.typos import add_typos

MODELING = Path(eelbert.modeling.__file__).parent  # modeling/, installed as eelbert.modeling



@pytest.fixture(scope="module")
def comparison():
    sys.path.insert(0, str(REPO / "benchmarks"))  # as when run as a script: its sibling modules import
    spec = importlib.util.spec_from_file_location("paper_comparison", REPO / "benchmarks" / "paper_comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edit_distance(a, b):
    """Damerau-Levenshtein distance (optimal string alignment)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def test_typos_edit_one_character_in_ten_percent_of_the_words():
    sentences = [f"the quick brown fox number {i} jumps over a lazy dog , again" for i in range(200)]
    edited = add_typos(sentences, 0.1, seed=0)
    assert edited == add_typos(sentences, 0.1, seed=0)  # reproducible
    assert edited != add_typos(sentences, 0.1, seed=1)
    changed = words = 0
    for before, after in zip(sentences, edited):
        for a, b in zip(before.split(" "), after.split(" "), strict=True):
            words += any(c.isalpha() for c in a)
            if a != b:
                changed += 1
                assert any(c.isalpha() for c in a) and _edit_distance(a, b) == 1
    assert changed == round(0.1 * words)


def test_task_score_is_the_mean_of_the_official_metrics(comparison):
    assert comparison.task_score({"f1": 80.0, "accuracy": 70.0}) == 75.0
    assert comparison.task_score({"mcc": 20.0}) == 20.0


def test_a_failed_metric_scores_zero_and_never_wins_the_grid(comparison, tmp_path):
    # run_glue.py used to write NaN for the correlation of constant predictions; NaN compared false with every
    # score, so a NaN run listed first won max(). Results files written then must still be scored right.
    nan = float("nan")
    runs = {1e-3: {"pearson": nan, "spearman": nan}, 3e-4: {"pearson": 10.0, "spearman": 20.0}}
    for lr, metrics in runs.items():
        folder = tmp_path / f"lr{lr:g}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"learning_rate": lr, "metrics_per_epoch": {"1.0": metrics}}))
    grid = comparison.task_grid(tmp_path, [1e-3, 3e-4], [1])
    assert [g["score"] for g in grid] == [0.0, 15.0]
    assert max(grid, key=lambda g: g["score"])["learning_rate"] == 3e-4


@pytest.mark.slow
def test_a_miniature_comparison_writes_results_tables_curves_controls_and_plots(comparison, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the model number {i} reads a short line of text about phones and watches" for i in range(400)))
    results = tmp_path / "results"
    comparison.main([
        "--work", str(tmp_path / "work"), "--results", str(results), "--corpus", str(corpus), "--steps", "4",
        "--save-steps", "2", "--batch-size", "4", "--models", "bert-tiny", "uno-eelbert-rolling", "--tasks", "wnli", "sst2",
        "--learning-rates", "1e-3", "3e-4", "--epochs", "1", "2", "--max-train-samples", "64", "--scratch",
        "--typo-seeds", "2", "--bootstrap", "50", "--sampling", "group_by_length",
    ])
    uno = json.loads((results / "uno-eelbert-rolling.json").read_text())
    assert uno["model"] == "uno-eelbert-rolling" and set(uno["tasks"]) == {"wnli", "sst2"}
    assert uno["glue_average"] == pytest.approx((uno["tasks"]["wnli"]["score"] + uno["tasks"]["sst2"]["score"]) / 2)
    assert len(uno["tasks"]["sst2"]["grid"]) == 4  # 2 learning rates x 2 epoch counts
    assert uno["fine_tuning"]["sampling"] == "group_by_length"
    assert uno["pretraining"]["steps"] == 4 and uno["pretraining"]["tokens"] == 4 * 4 * 128
    assert uno["pretraining"]["seconds"] >= uno["pretraining"]["training_seconds"] > 0 and len(uno["commit"]) >= 40
    # the learning curve: the checkpoint at step 2 (the default curve point: half of 4 steps), then the final model
    curve = uno["learning_curve"]
    assert [p["steps"] for p in curve] == [2, 4] and [p["tokens"] for p in curve] == [2 * 4 * 128, 4 * 4 * 128]
    assert curve[1]["glue_average"] == uno["glue_average"] and all(p["perplexity"] > 1 for p in curve)
    pretrained = tmp_path / "work" / "pretrained" / "uno-eelbert-rolling"
    assert sorted(c.name for c in pretrained.glob("checkpoint-*")) == ["checkpoint-2"]  # only curve points kept
    at_2 = json.loads((tmp_path / "work" / "glue" / "uno-eelbert-rolling@2" / "sst2" /
                       f"lr{uno['tasks']['sst2']['learning_rate']:g}" / "results.json").read_text())
    assert curve[0]["tasks"]["sst2"] == max(comparison.task_score(m) for m in at_2["metrics_per_epoch"].values())
    assert at_2["sampling"] == "group_by_length"  # the Trainer was given it
    # the control rows: the same grid from a model that never saw the corpus
    scratch = uno["from_scratch"]
    assert set(scratch["tasks"]) == {"wnli", "sst2"} and len(scratch["tasks"]["sst2"]["grid"]) == 4
    # typos over 2 seeds, the drop with its bootstrap interval
    typos = uno["typos"]
    assert len(typos["typos_per_seed"]) == 2 and typos["typos"] == pytest.approx(sum(typos["typos_per_seed"]) / 2)
    assert typos["drop"] == pytest.approx(typos["clean"] - typos["typos"])
    assert typos["drop_95"][0] <= typos["drop"] <= typos["drop_95"][1]
    config = json.loads((pretrained / "config.json").read_text())
    assert config["hash_function"] == "rolling"
    table = (results / "table.md").read_text()
    assert "| bert-tiny |" in table and "| uno-eelbert-rolling |" in table and "1.000" in table
    assert "| uno-eelbert-rolling (no pretraining) |" in table and "Learning curves" in table
    for plot in ("size_vs_glue.png", "glue_vs_tokens.png"):
        assert (results / plot).read_bytes()[:4] == b"\x89PNG"
    # a run that ended while no parent waited for it: recorded from its files, not run again
    budget_file = pretrained / "budget.json"
    budget = json.loads(budget_file.read_text())
    budget_file.unlink()
    comparison.main(["--work", str(tmp_path / "work"), "--corpus", str(corpus), "--steps", "4", "--save-steps", "2",
                     "--batch-size", "4", "--models", "uno-eelbert-rolling", "--stage", "pretrain"])
    recorded = json.loads(budget_file.read_text())
    assert recorded == {**budget, "seconds": None, "models_at_once": None}
    # ship: the final checkpoint as a package model, float16 on disk, float32 once loaded, with its card
    comparison.main(["--work", str(tmp_path / "work"), "--results", str(results), "--shipped", str(tmp_path / "shipped"),
                     "--stage", "ship", "--models", "uno-eelbert-rolling", "--steps", "4", "--save-steps", "2"])
    shipped = tmp_path / "shipped" / "uno-eelbert-rolling-pretrained"
    assert {load_file(shipped / "model.safetensors")[n].dtype for n in load_file(shipped / "model.safetensors")} == {torch.float16}
    for code in ("modeling_eelbert.py", "configuration_eelbert.py", "hashing_eelbert.py"):
        assert (shipped / code).read_bytes() == (MODELING / code).read_bytes()
    batch = AutoTokenizer.from_pretrained(shipped)(["the model reads a [MASK] line"], return_tensors="pt")
    model = AutoModelForMaskedLM.from_pretrained(shipped, trust_remote_code=True).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    source = AutoModelForMaskedLM.from_pretrained(pretrained, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, source(**batch).logits, atol=5e-2, rtol=1e-2)
    card = (shipped / "README.md").read_text()
    assert "4 steps x batch 4 x 128 tokens" in card and f"perplexity {uno['pretraining']['perplexity']:.0f}" in card
    assert f"GLUE average {uno['glue_average']:.1f}; the same grid from no pretraining: {scratch['glue_average']:.1f}" in card
    assert "| sst2 | accuracy |" in card and 'pretrained_path("uno-eelbert-rolling-pretrained")' in card
    # a report of another run (here: another step count) puts no scores on the card
    report = results / "uno-eelbert-rolling.json"
    report.write_text(json.dumps({**uno, "pretraining": {**uno["pretraining"], "steps": 999}}))
    comparison.main(["--work", str(tmp_path / "work"), "--results", str(results), "--shipped", str(tmp_path / "shipped"),
                     "--stage", "ship", "--models", "uno-eelbert-rolling", "--steps", "4", "--save-steps", "2"])
    card = (shipped / "README.md").read_text()
    assert "perplexity" in card and "GLUE average" not in card and "model-index" not in card
    with pytest.raises(SystemExit, match="pretrained for another --steps than 8"):
        comparison.main(["--work", str(tmp_path / "work"), "--corpus", str(corpus), "--steps", "8", "--save-steps", "2",
                         "--models", "uno-eelbert-rolling", "--stage", "pretrain"])
    with pytest.raises(SystemExit, match="uno-eelbert-buckets has not finished pretraining"):
        comparison.main(["--work", str(tmp_path / "work"), "--shipped", str(tmp_path / "shipped"), "--stage", "ship",
                         "--models", "uno-eelbert-buckets", "--steps", "4", "--save-steps", "2"])


def test_curve_points_must_be_saved_checkpoints(comparison, tmp_path):
    with pytest.raises(SystemExit):
        comparison.main(["--work", str(tmp_path), "--steps", "1000", "--save-steps", "250", "--curve-steps", "300",
                         "--stage", "report"])


def test_the_typo_drop_interval_is_a_bootstrap_over_sentences(comparison, tmp_path, monkeypatch):
    # A classifier right on every clean sentence and wrong on the typo'd copies of a known share of them.
    for lr in (1e-3,):
        folder = tmp_path / f"lr{lr:g}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"metrics": {"accuracy": 50.0}}))
    rows = 872
    monkeypatch.setattr(comparison, "sst2_correct", lambda checkpoint, sentences, labels: [
        not (s != clean and i % 5 == 0) for i, (s, clean) in enumerate(zip(sentences, CLEAN))])
    from eelbert.training import finetuning

    CLEAN = [r.texts[0] for r in finetuning.read_examples(GLUE / "SST-2" / "dev.tsv", finetuning.TASKS["sst2"].columns)]
    assert len(CLEAN) == rows
    args = comparison.argparse.Namespace(glue=GLUE, typo_seeds=3, bootstrap=200, seed=0, epochs=[3])
    result = comparison.typo_robustness(args, "m", [tmp_path / "lr0.001"])
    assert result["clean"] == 100.0 and len(result["typos_per_seed"]) == 3
    assert 0 < result["drop"] < 20 and result["drop"] == pytest.approx(100 - result["typos"])
    low, high = result["drop_95"]
    assert low < result["drop"] < high and high - low < 6  # a few points wide for 872 sentences


def test_only_learning_rates_finished_by_every_model_are_compared(comparison, tmp_path):
    for name, rates in {"a": [1e-3, 3e-4], "b": [1e-3]}.items():
        for lr in rates:
            folder = tmp_path / "glue" / name / "rte" / f"lr{lr:g}"
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps({"learning_rate": lr}))
    args = comparison.argparse.Namespace(work=tmp_path)
    assert comparison.finished_learning_rates(args, ["a", "b"], "rte") == [1e-3]
    with pytest.raises(SystemExit, match="cola: no learning rate has finished for every model"):
        comparison.finished_learning_rates(args, ["a", "b"], "cola")


def test_the_curve_table_has_a_column_per_budget_any_model_has_scored(comparison):
    def result(curve):
        return {"tasks": {"rte": {"score": 50.0}}, "glue_average": 50.0, "from_scratch": None, "typos": None,
                "model_safetensors_bytes": 1000, "learning_curve": [{"tokens": t, "glue_average": g, "perplexity": p} for t, g, p in curve]}

    results = {"bert-tiny": result([(41e6, 48.3, 430)]),  # its 10M point still running
               "uno-eelbert": result([(10e6, 45.3, 681), (41e6, 46.6, 638)])}
    table = comparison.markdown_tables(results).split("Learning curves")[1].splitlines()
    assert table[2:] == ["| model | 10.0M tokens | 41.0M tokens |", "|---|---|---|",
                         "| bert-tiny | - | 48.3 (430) |", "| uno-eelbert | 45.3 (681) | 46.6 (638) |"]


def test_the_default_run_covers_every_task_in_the_shared_glue_folder(comparison):
    from eelbert.training.finetuning import TASKS

    folders = {p.name for p in GLUE.iterdir() if p.is_dir()}
    assert {TASKS[t].folder for t in comparison.GLUE_TASKS} == folders


def test_the_bbc_task_is_a_stratified_split_of_every_article_read_as_the_finetuning_task_says(comparison, tmp_path):
    from eelbert.training.finetuning import TASKS, read_examples

    folder = comparison.prepare_bbc_news(tmp_path / "a")
    spec = TASKS["bbc"]
    train, dev = (read_examples(folder / name, spec.columns) for name in ("train.tsv", "dev.tsv"))
    assert len(dev) == round(0.2 * (len(train) + len(dev))) and 2000 < len(train) + len(dev) <= 2225
    assert len({e.texts for e in train + dev}) == len(train) + len(dev)  # the collection's duplicates dropped
    for part in (train, dev):  # stratified: each topic's share is the same in both parts (within one article)
        for topic in spec.labels:
            share = sum(e.label == topic for e in part) / len(part)
            assert abs(share - sum(e.label == topic for e in train + dev) / len(train + dev)) < 1 / len(part)
    assert all("\t" not in e.texts[0] and len(e.texts[0].split()) > 50 for e in dev)
    again = comparison.prepare_bbc_news(tmp_path / "b")
    assert (again / "dev.tsv").read_bytes() == (folder / "dev.tsv").read_bytes()  # the same split everywhere


def test_pretraining_reads_the_shared_corpus_without_the_bbc_articles(comparison):
    corpus = comparison.pretraining_corpus()
    assert comparison.BBC_NEWS_FILE not in {f.name for f in corpus}
    assert len(corpus) == len(list((GLUE.parent / "corpus").rglob("*.txt"))) - 1


def test_each_ablation_changes_one_thing_of_uno_eelbert(comparison, tmp_path):
    preset = json.loads((REPO / "configs" / "uno-eelbert.json").read_text())
    for name, spec in comparison.ABLATIONS.items():
        argument = comparison.model_argument(tmp_path, name)
        options = comparison.pretraining_options(name)
        if argument == "uno-eelbert":  # a pretraining option only
            assert options and options[0].startswith("--")
            continue
        config = json.loads((tmp_path / f"{name}.json").read_text())
        changed = {k for k in config if config[k] != preset.get(k)}
        assert changed and changed <= set(spec) and options == []
