"""Checkpoints: the saved folder alone rebuilds the model, with or without the eelbert package."""

import json
import os

import pytest
import torch
from helpers import WITHOUT_EELBERT, run_python
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

import eelbert
from eelbert.modeling.configuration_eelbert import AUTO_CLASS_OF

HEADS = {auto_class: getattr(eelbert, class_name) for class_name, auto_class in AUTO_CLASS_OF.items()}  # Auto class -> model class
BUNDLE = {"configuration_eelbert.py", "modeling_eelbert.py", "hashing_eelbert.py"}
MAX_UNO_BYTES = 1_200_000


def _inputs(tokenizer, auto_class):
    batch = dict(tokenizer(["the cat sat on the [MASK].", "eelbert is small"], return_tensors="pt", padding=True))
    if auto_class == "AutoModelForMultipleChoice":
        batch = {k: v.unsqueeze(1).expand(-1, 3, -1).contiguous() for k, v in batch.items()}
    return batch


def _first_output(out):
    return out.start_logits if "start_logits" in out else (out.logits if "logits" in out else out.last_hidden_state)


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_save_pretrained_rebuilds_the_identical_model(uno_config, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = eelbert.EelbertForMaskedLM(uno_config).eval()
    model.save_pretrained(tmp_path)  # no tokenizer files: the vocabulary is in config.json
    assert not (tmp_path / "vocab.txt").exists()
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is eelbert.EelbertForMaskedLM
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    batch = _inputs(tokenizer, "AutoModelForMaskedLM")
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits, atol=1e-6, rtol=1e-6)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_every_auto_class_loads_with_remote_code_without_eelbert_or_mmh3(uno_config, tokenizer, tmp_path):
    """Each head is saved, then loaded by its Auto class in a fresh process where `import eelbert` and
    `import mmh3` fail; the outputs must equal the original model's within float tolerance (float kernels
    are not bit-reproducible across processes; the hash table itself is compared exactly elsewhere)."""
    uno_config.num_labels = 3
    for auto_class, model_class in HEADS.items():
        torch.manual_seed(0)
        config = eelbert.EelbertConfig.from_dict({**uno_config.to_dict(), "num_labels": 2 if "Question" in auto_class else 3})
        model = model_class(config).eval()
        folder = _save(model, tokenizer, tmp_path / auto_class)
        assert BUNDLE <= set(os.listdir(folder))
        saved = json.loads((folder / "config.json").read_text())
        assert saved["auto_map"] == uno_config.auto_map and saved["vocab"].split("\x00") == list(uno_config.vocab)
        with torch.no_grad():
            torch.save({"inputs": _inputs(tokenizer, auto_class), "expected": _first_output(model(**_inputs(tokenizer, auto_class)))},
                       folder / "expected.pt")
    code = WITHOUT_EELBERT + f"""
import torch, transformers
for auto_class in {list(HEADS)!r}:
    folder = {str(tmp_path)!r} + "/" + auto_class
    model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    saved = torch.load(folder + "/expected.pt")
    with torch.no_grad():
        out = model(**saved["inputs"])
    got = out.start_logits if "start_logits" in out else (out.logits if "logits" in out else out.last_hidden_state)
    assert torch.allclose(got, saved["expected"], atol=1e-5, rtol=1e-5), auto_class
    print(auto_class, type(model).__name__)
base = transformers.AutoModel.from_pretrained(folder.replace("AutoModelForMultipleChoice", "AutoModelForMaskedLM"), trust_remote_code=True)
print("base of masked-lm:", type(base).__name__)
"""
    out = run_python(code, cwd=tmp_path)
    for auto_class, model_class in HEADS.items():
        assert f"{auto_class} {model_class.__name__}" in out
    assert "base of masked-lm: EelbertModel" in out


def test_pipelines_work_with_remote_code(uno_config, tokenizer, tmp_path):
    torch.manual_seed(0)
    _save(eelbert.EelbertForMaskedLM(uno_config), tokenizer, tmp_path / "mlm")
    _save(eelbert.EelbertForSequenceClassification(uno_config), tokenizer, tmp_path / "clf")
    code = WITHOUT_EELBERT + f"""
from transformers import pipeline
fill = pipeline("fill-mask", model={str(tmp_path / "mlm")!r}, trust_remote_code=True)
predictions = fill("the cat sat on the [MASK].")
assert len(predictions) == 5 and all("token_str" in p for p in predictions)
features = pipeline("feature-extraction", model={str(tmp_path / "mlm")!r}, trust_remote_code=True)("hello world")
assert len(features[0]) == 4 and len(features[0][0]) == 128  # [CLS] hello world [SEP], hidden 128
classify = pipeline("text-classification", model={str(tmp_path / "clf")!r}, trust_remote_code=True)
result = classify("what a tiny model")
assert result[0]["label"] in ("LABEL_0", "LABEL_1")
print("pipelines ok")
"""
    assert "pipelines ok" in run_python(code, cwd=tmp_path)


def test_trainer_checkpoints_are_complete_and_load_with_remote_code(small_config, tokenizer, tmp_path):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    texts = ["the quick brown fox jumps over the lazy dog"] * 16
    dataset = [tokenizer(t, truncation=True, max_length=32) for t in texts]
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, save_steps=2, per_device_train_batch_size=8,
                             report_to=[], use_cpu=True, logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=eelbert.EelbertForMaskedLM(small_config), args=args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15))
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert BUNDLE <= set(os.listdir(checkpoint))
    assert set(json.loads((checkpoint / "config.json").read_text())["auto_map"]) == set(small_config.auto_map)
    trained = trainer.model.eval()
    batch = _inputs(tokenizer, "AutoModelForMaskedLM")
    with torch.no_grad():
        torch.save({"inputs": batch, "expected": trained(**batch).logits}, tmp_path / "expected.pt")
    code = WITHOUT_EELBERT + f"""
import torch
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
saved = torch.load({str(tmp_path / "expected.pt")!r})
with torch.no_grad():
    assert torch.allclose(model(**saved["inputs"]).logits, saved["expected"], atol=1e-5, rtol=1e-5)
print("trainer checkpoint ok")
"""
    assert "trainer checkpoint ok" in run_python(code, cwd=tmp_path)


def test_uno_eelbert_checkpoints_fit_in_1_2_mb(uno_config, tmp_path):
    sizes = {}
    for auto_class, model_class in HEADS.items():
        model_class(uno_config).save_pretrained(tmp_path / auto_class)
        sizes[auto_class] = (tmp_path / auto_class / "model.safetensors").stat().st_size
    for auto_class, size in sizes.items():
        if auto_class != "AutoModelForMaskedLM":
            assert size <= MAX_UNO_BYTES, (auto_class, size)
    # The masked-LM checkpoint adds only its head: a 128x128 transform, a LayerNorm and a bias per token.
    head_bytes = 4 * (128 * 128 + 128 + 2 * 128 + uno_config.vocab_size)
    pooler_bytes = 4 * (128 * 128 + 128)
    assert abs(sizes["AutoModelForMaskedLM"] - (sizes["AutoModel"] - pooler_bytes + head_bytes)) < 2000


def _saved(uno_config, tmp_path):
    eelbert.EelbertModel(uno_config).save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def test_truncated_weights_are_a_clear_error(uno_config, tmp_path):
    _saved(uno_config, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(Exception, match="incomplete metadata|not fully covered"):
        AutoModel.from_pretrained(tmp_path)


def test_corrupted_weights_header_is_a_clear_error(uno_config, tmp_path):
    _saved(uno_config, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"#" * 32
    weights.write_bytes(bytes(data))
    with pytest.raises(Exception, match="header"):
        AutoModel.from_pretrained(tmp_path)


def test_checkpoint_without_vocabulary_is_a_clear_error(uno_config, tmp_path):
    config = _saved(uno_config, tmp_path)
    del config["vocab"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no vocabulary"):
        AutoModel.from_pretrained(tmp_path)


def test_vocabulary_size_disagreeing_with_config_is_a_clear_error(uno_config, tmp_path):
    config = _saved(uno_config, tmp_path)
    config["vocab"] = "\x00".join(config["vocab"].split("\x00")[:-1])
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"vocab_size \(30522\) disagrees with the vocabulary, which has 30521 tokens"):
        AutoModel.from_pretrained(tmp_path)


def test_unknown_hash_version_in_a_checkpoint_is_a_clear_error(uno_config, tmp_path):
    config = _saved(uno_config, tmp_path)
    config["hash_version"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hash_version=2 is not known to this code"):
        AutoModel.from_pretrained(tmp_path)


def test_added_tokens_survive_save_and_load(small_config, tokenizer, tmp_path):
    model = eelbert.EelbertForMaskedLM(small_config)
    tokenizer.add_tokens(["eelbertish"])
    model.set_vocab(tokenizer)
    _save(model, tokenizer, tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.config.vocab_size == len(reloaded_tokenizer) == 30523
    assert torch.equal(loaded.get_input_embeddings().weight[-1], eelbert.hash_embed(["eelbertish"], loaded.config)[0])


# ---- The checkpoint's embedding and its tokenizer stay the ones the weights were trained with ----


def _hand_edit_vocab_entry(config):
    vocab = config["vocab"].split("\x00")
    vocab[2000] = "eelbert"  # same size, one string changed
    config["vocab"] = "\x00".join(vocab)


def _hand_edit_special_tokens(config):
    config["special_tokens"] = [t for t in config["special_tokens"] if t != "[MASK]"]


@pytest.mark.parametrize(
    "field,edit",
    [
        ("hash_seed", lambda config: config.update(hash_seed=1)),
        ("special_tokens", _hand_edit_special_tokens),
        ("vocab", _hand_edit_vocab_entry),
        ("continuing_subword_prefix", lambda config: config.update(continuing_subword_prefix="@@")),
    ],
)
def test_hand_edited_embedding_fields_in_config_json_are_clear_errors(uno_config, tmp_path, capsys, field, edit):
    config = _saved(uno_config, tmp_path)
    assert AutoModel.from_pretrained(tmp_path).config.vocab == uno_config.vocab  # untouched: loads
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    message = f"{field} is not the one this config was saved with"
    with pytest.raises(ValueError, match=message):
        AutoModel.from_pretrained(tmp_path)
    from eelbert.cli import main

    assert main(["info", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err
    del config["embedding_fingerprint"]  # accepting the change, as the error says
    (tmp_path / "config.json").write_text(json.dumps(config))
    AutoModel.from_pretrained(tmp_path)


def _same_size_tokenizer_with_other_ids(tokenizer):
    from transformers import BertTokenizer

    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    tokens[2000], tokens[2001] = tokens[2001], tokens[2000]
    other = BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    assert len(other) == len(tokenizer) and other.convert_ids_to_tokens(2000) == tokenizer.convert_ids_to_tokens(2001)
    return other


def test_a_tokenizer_with_other_ids_beside_a_checkpoint_is_a_clear_error(uno_config, tokenizer, tmp_path, capsys):
    from eelbert.cli import main

    folder = _save(eelbert.EelbertForMaskedLM(uno_config), tokenizer, tmp_path / "mlm")
    assert main(["info", str(folder)]) == 0
    AutoModelForMaskedLM.from_pretrained(folder)  # the tokenizer it was built with: loads
    other = _same_size_tokenizer_with_other_ids(tokenizer)
    first, second = tokenizer.convert_ids_to_tokens([2000, 2001])
    message = f"id 2000 is {second!r} in the tokenizer but {first!r} in config.json"
    with pytest.raises(ValueError, match=message):
        uno_config.check_tokenizer(other)
    other.save_pretrained(folder)
    with pytest.raises(ValueError, match=message):
        AutoModelForMaskedLM.from_pretrained(folder)
    capsys.readouterr()
    assert main(["info", str(folder)]) == 1
    assert message in capsys.readouterr().err


def test_a_tokenizer_with_other_ids_stops_a_pipeline_with_remote_code(uno_config, tokenizer, tmp_path):
    folder = _save(eelbert.EelbertForMaskedLM(uno_config), tokenizer, tmp_path / "mlm")
    _same_size_tokenizer_with_other_ids(tokenizer).save_pretrained(folder)
    code = WITHOUT_EELBERT + f"""
from transformers import pipeline
try:
    pipeline("fill-mask", model={str(folder)!r}, trust_remote_code=True)
except ValueError as error:
    print(error)
"""
    assert "does not match the model's vocabulary" in run_python(code, cwd=tmp_path)


def test_the_model_cards_usage_loads_the_tokenizer_without_a_prompt(uno_config, tokenizer, tmp_path):
    """AutoTokenizer reads config.json (through AutoConfig) before tokenizer_config.json, and without
    trust_remote_code a config naming remote code makes it ask [y/N] on stdin, waiting 15 s in a terminal."""
    from eelbert.hub import model_card

    folder = _save(eelbert.EelbertForMaskedLM(uno_config), tokenizer, tmp_path / "mlm")
    usage = model_card(folder, str(folder)).split("## Usage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = WITHOUT_EELBERT + f"""
import builtins
prompts = []
builtins.input = lambda prompt="": prompts.append(prompt) or "n"  # what transformers asks on stdin
{usage}
assert type(tokenizer).__module__.startswith("transformers.models.bert"), type(tokenizer)
assert not prompts, prompts
print("no prompt", len(tokenizer))
# Without trust_remote_code, answered "n" (as a closed stdin does): tokenizer_config.json still names BERT's class.
plain = AutoTokenizer.from_pretrained({str(folder)!r})
assert prompts and type(plain) is type(tokenizer), type(plain)
"""
    assert "no prompt 30522" in run_python(code, {"TRANSFORMERS_OFFLINE": "1"}, cwd=tmp_path)
