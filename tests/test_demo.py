"""`eelbert demo` (eelbert/demo.py): each claim it prints, on a tiny masked LM built here."""

from collections import Counter

import pytest
import torch

import eelbert
from eelbert import demo
from eelbert.artifacts import store_weights_in_float16
from eelbert.cli import main
from eelbert.training import finetuning, pretraining


@pytest.fixture
def checkpoint(small_config, tokenizer, tmp_path):
    folder = tmp_path / "tiny-mlm"
    eelbert.EelbertForMaskedLM(small_config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_documentation_paragraphs_are_package_documentations_with_their_package():
    paragraphs = pretraining.package_documentation(max_bytes=100_000)
    pairs = pretraining.documentation_paragraphs()
    assert [next(pairs) for _ in paragraphs] == [(p, "python") for p in paragraphs]  # the standard library first
    assert {package for _, package in pairs} == {"python", *pretraining.DOCUMENTED_PACKAGES}


def test_the_documentation_task_is_balanced_seeded_and_split_without_overlap():
    train, dev = demo.documentation_task(per_package=50, dev_fraction=0.2, seed=0)
    packages = {"python", *pretraining.DOCUMENTED_PACKAGES}
    assert Counter(e.label for e in train) == {package: 40 for package in packages}
    assert Counter(e.label for e in dev) == {package: 10 for package in packages}
    assert not {e.texts for e in train} & {e.texts for e in dev}
    assert len({e.texts for e in train}) == len(train)
    package_of = {paragraph: package for paragraph, package in pretraining.documentation_paragraphs()}
    assert all(package_of[e.texts[0]] == e.label for e in train + dev)
    assert demo.documentation_task(per_package=50, seed=0) == (train, dev)
    assert demo.documentation_task(per_package=50, seed=1)[1] != dev
    with pytest.raises(ValueError, match="paragraphs, fewer than 1000000"):
        demo.documentation_task(per_package=1_000_000)
    for too_few in (0, 2):
        with pytest.raises(ValueError, match=f"^{too_few} paragraphs per package, 0.2 of them held out, leave no dev"):
            demo.documentation_task(per_package=too_few)


def test_the_from_scratch_control_is_the_checkpoints_architecture_with_new_weights(checkpoint, tokenizer):
    labels = ["a", "b", "c"]
    pretrained = finetuning.classifier(str(checkpoint), tokenizer, labels)
    scratch = finetuning.classifier(str(checkpoint), tokenizer, labels, pretrained=False)
    assert type(scratch) is type(pretrained) and scratch.config.id2label == pretrained.config.id2label
    loaded = eelbert.EelbertForMaskedLM.from_pretrained(checkpoint).eelbert.encoder.state_dict()
    for weights, same in ((pretrained, True), (scratch, False)):
        encoder = weights.eelbert.encoder.state_dict()
        assert encoder.keys() == loaded.keys()
        matrices = [k for k in loaded if loaded[k].dim() == 2]
        assert all(torch.equal(encoder[k], loaded[k]) for k in matrices) == same


def test_fine_tuning_reports_the_dev_accuracy_of_both_models(checkpoint, tmp_path):
    train, dev = demo.documentation_task(per_package=10, dev_fraction=0.5, seed=0)
    accuracy = demo.fine_tune_against_scratch(checkpoint, train, dev, tmp_path / "runs", num_train_epochs=1,
                                              per_device_train_batch_size=8, max_length=32)
    assert set(accuracy) == {"pretrained", "from scratch"}
    for name in accuracy:
        results = finetuning.json.loads((tmp_path / "runs" / name / "results.json").read_text())
        assert results["metrics"]["accuracy"] == accuracy[name] and results["dev_rows"] == len(dev) == 25
        assert results["epochs"] == 1 and results["learning_rate"] == demo.FINE_TUNING["learning_rate"]
        assert results["pretrained"] == (name == "pretrained")
        assert 0 <= accuracy[name] <= 100


def test_from_scratch_needs_a_checkpoint_name_or_folder_not_a_model_object(checkpoint, tokenizer, tmp_path):
    train, dev = demo.documentation_task(per_package=10, dev_fraction=0.5, seed=0)
    model = finetuning.classifier(str(checkpoint), tokenizer, sorted({e.label for e in train}))
    with pytest.raises(finetuning.InputError, match="pretrained=False builds a new model from a checkpoint's name"):
        finetuning.fine_tune_examples(model, tokenizer, train, dev, tmp_path, pretrained=False)


def test_the_size_is_the_checkpoints_file_against_its_presets_bert_in_the_same_dtype(checkpoint, tokenizer):
    size = demo.size_against_bert(checkpoint)
    assert size["bytes"] == (checkpoint / "model.safetensors").stat().st_size
    (row,) = eelbert.size_report(["eelbert-tiny"], tokenizer=tokenizer, heads=("masked-lm",))
    assert (size["bert_bytes"], size["bert_parameters"]) == (row.baseline_file_bytes, row.baseline_parameters)
    assert size["parameters"] == sum(p.numel() for p in eelbert.EelbertForMaskedLM.from_pretrained(checkpoint).parameters())
    assert size["dtype"] == "fp32" and size["bert"] == "bert-tiny"  # eelbert-tiny's baseline
    store_weights_in_float16(checkpoint)  # as the shipped models: BERT-tiny's bytes in float16 too
    half = demo.size_against_bert(checkpoint)
    assert half["dtype"] == "fp16" and half["bytes"] == (checkpoint / "model.safetensors").stat().st_size
    assert half["parameters"] == size["parameters"] and half["bert_parameters"] == size["bert_parameters"]
    assert abs(half["bert_bytes"] - size["bert_bytes"] / 2) < 10_000  # the same tensors, half the bytes (+ header)


def test_the_typo_numbers(checkpoint, tokenizer):
    report = demo.typo_report(checkpoint, **demo.TYPO)
    word, typo, other = demo.TYPO["word"], demo.TYPO["typo"], demo.TYPO["other_word"]
    vectors = eelbert.hash_embed([word, typo, other], eelbert.EelbertForMaskedLM.from_pretrained(checkpoint).config)
    cosine = torch.nn.functional.cosine_similarity
    assert report["word_typo"] == pytest.approx(cosine(vectors[0], vectors[1], dim=0).item(), abs=1e-5)
    assert report["word_other"] == pytest.approx(cosine(vectors[0], vectors[2], dim=0).item(), abs=1e-5)
    pieces = eelbert.hash_embed(tokenizer.tokenize(typo), eelbert.EelbertForMaskedLM.from_pretrained(checkpoint).config)
    assert report["pieces_typo"] == pytest.approx(cosine(vectors[0], pieces.mean(0), dim=0).item(), abs=1e-5)
    # The claim printed: shared n-grams make the typo'd word's vector close to the original's, an unrelated word's not.
    assert min(report["word_typo"], report["pieces_typo"]) > 0.4 > 0.2 > report["word_other"]
    assert report["pieces"] == {word: [word], typo: tokenizer.tokenize(typo)} and len(report["pieces"][typo]) > 1
    # No typo: the same sentence embedding.
    same = demo.typo_report(checkpoint, **{**demo.TYPO, "typo": word})
    assert same["sentence_typo"] == pytest.approx(1.0, abs=1e-5) and same["word_typo"] == pytest.approx(1.0, abs=1e-5)
    assert -1 <= report["sentence_other"] <= 1 and report["sentence_typo"] < 1 - 1e-6


def test_eelbert_demo_prints_every_section_and_fills_masks_without_eelbert(checkpoint, capsys):
    assert main(["demo", "--model", str(checkpoint), "--per-package", "10", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "5 classes (accelerate, huggingface_hub, python, torch, transformers), 40 training and 10 dev paragraphs" in out
    assert "dev accuracy: pretrained " in out and "% (chance 20%)" in out
    assert f"2. Size: model.safetensors {(checkpoint / 'model.safetensors').stat().st_size:,} bytes" in out
    assert "in a fresh process (trust_remote_code=True, no eelbert package)" in out  # RELOAD_AND_FILL_MASK
    for sentence in demo.CONTEXT_SENTENCES:
        assert f"  {sentence}  ->  " in out
    assert f"4. A typo ({demo.TYPO['word']} -> {demo.TYPO['typo']})" in out


@pytest.mark.slow
def test_the_default_demo_model_beats_its_from_scratch_control(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a folder of the same name here would be taken first
    shipped = eelbert.pretrained_path(demo.DEFAULT_MODEL)
    assert demo.checkpoint_folder(demo.DEFAULT_MODEL) == shipped
    measured, run = {}, demo.run
    monkeypatch.setattr(demo, "run", lambda *a, **k: measured.update(run(*a, **k)))
    # `eelbert demo` as the README runs it: its own settings (400 paragraphs per package, 3 epochs), what pretraining
    # buys on a small task. The README's main job has the leads measured over seeds and transformers versions (3.5 to
    # 12.25 points; the paragraphs differ with the installed packages' versions): more than 1 point leaves room for
    # that and still fails where pretraining stopped helping (UNO-EELBERT's lead here: 1.0).
    assert main(["demo"]) == 0
    accuracy = measured["accuracy"]
    assert accuracy["pretrained"] > accuracy["from scratch"] + 1, accuracy
    out = capsys.readouterr().out
    assert f"Fine-tuning {shipped} and the same architecture from scratch" in out
    assert f"dev accuracy: pretrained {accuracy['pretrained']:.1f}%, from scratch {accuracy['from scratch']:.1f}%" in out
    assert measured["size"]["bytes"] == (shipped / "model.safetensors").stat().st_size
    assert f"reloaded EelbertForMaskedLM from {shipped} in a fresh process" in out
    assert len(measured["first_guesses"]) == len(demo.CONTEXT_SENTENCES)


def test_a_name_that_is_neither_a_folder_nor_installed_says_what_is_installed_and_how_to_pass_model(capsys):
    assert main(["demo", "--model", "uno-eelbert-pretrainde"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no checkpoint uno-eelbert-pretrainde: not a folder, nor a model installed with eelbert (installed: " in err
    assert demo.DEFAULT_MODEL in err and "pass --model FOLDER" in err


@pytest.mark.parametrize("bad", ["no-config", "encoder", "installed-encoder"])
def test_a_model_that_is_not_a_masked_lm_eelbert_is_a_clear_error(bad, small_config, tmp_path, capsys):
    model = {"no-config": str(tmp_path), "installed-encoder": "uno-eelbert-sentence"}.get(bad, str(tmp_path / "enc"))
    if bad == "encoder":
        eelbert.EelbertModel(small_config).save_pretrained(model)
    assert main(["demo", "--model", model]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    expected = "is not a checkpoint folder (no config.json)" if bad == "no-config" else (
        f"--model {model} is EelbertModel: the demo needs a masked-LM EELBERT checkpoint (EelbertForMaskedLM)")
    assert expected in err


@pytest.mark.parametrize("guesses,said", [(("the", "the"), True), (("east", "west"), False)])
def test_the_demo_says_when_the_east_west_pair_gets_the_same_first_guess(guesses, said, checkpoint, monkeypatch, capsys):
    lines = [f"  {s}  ->  {g} (0.50), a (0.10)" for s, g in zip(demo.CONTEXT_SENTENCES, [*guesses, "tea", "queen"])]
    monkeypatch.setattr(demo, "fill_mask_without_eelbert", lambda folder, sentences: "reloaded\n" + "\n".join(lines))
    monkeypatch.setattr(demo, "fine_tune_against_scratch", lambda *a, **k: {"pretrained": 50.0, "from scratch": 40.0})
    demo.run(str(checkpoint), per_package=10)
    out = capsys.readouterr().out
    assert ("The same first guess where the context asks for east and for west (the)" in out) == said
