"""Shipping: Hub publishing with a model card, smaller artifacts, ONNX, BERT conversion, the command line."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import WITHOUT_EELBERT, run_client
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertForMaskedLM

import eelbert
from eelbert.artifacts import embed_for_onnx, export_onnx, load_int8, save_int8
from eelbert.cli import main
from eelbert.convert import convert_bert

RESULTS = {"dataset": {"name": "GLUE", "type": "glue"}, "results": [{"task": "sst2", "metric": "accuracy", "value": 81.2}],
           "training": "Pretrained briefly for a test."}


def _batch(tokenizer):
    return dict(tokenizer(["the cat sat on the [MASK].", "tiny models for phones"], return_tensors="pt", padding=True))


def _save_mlm(uno_config, tokenizer, folder, seed=0):
    torch.manual_seed(seed)
    model = eelbert.EelbertForMaskedLM(uno_config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with torch.no_grad():
        return model(**_batch(tokenizer)).logits


def _load_from_hub(hub, tmp_path, repo, revision, inputs, expected):
    """Load `repo` at `revision` in a fresh process without eelbert (remote code); do its outputs equal `expected`?"""
    saved = tmp_path / f"expected-{revision}.pt"
    torch.save({"inputs": inputs, "expected": expected}, saved)
    return run_client(hub, WITHOUT_EELBERT + f"""
import json, torch
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained({repo!r}, trust_remote_code=True, revision={revision!r}).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
saved = torch.load({str(saved)!r})
with torch.no_grad():
    print(json.dumps(torch.allclose(model(**saved["inputs"]).logits, saved["expected"], atol=1e-5, rtol=1e-5)))
""", tmp_path / f"home-{revision}")


@pytest.mark.slow
def test_push_with_model_card_then_load_each_revision_without_eelbert(hub, uno_config, tokenizer, tmp_path):
    first = _save_mlm(uno_config, tokenizer, tmp_path / "v1", seed=0)
    second = _save_mlm(uno_config, tokenizer, tmp_path / "v2", seed=1)
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    pushed = run_client(hub, f"""
import json
from eelbert.hub import push_to_hub
first = push_to_hub({str(tmp_path / "v1")!r}, "user/uno", results={str(tmp_path / "results.json")!r})
second = push_to_hub({str(tmp_path / "v2")!r}, "user/uno")
print(json.dumps([first, second]))
""", tmp_path / "home-push")
    files = hub.files("user/uno")
    assert {"model.safetensors", "config.json", "modeling_eelbert.py", "configuration_eelbert.py", "hashing_eelbert.py",
            "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(files)

    first_card = hub.files("user/uno", hub.commits("user/uno")[2]).get("README.md").decode()  # commit 0 creates the repo
    front = yaml.safe_load(first_card.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "fill-mask"
    assert "eelbert" in front["tags"] and front["license"] == "apache-2.0" and front["datasets"] == ["glue"]
    result = front["model-index"][0]["results"][0]
    assert result["dataset"]["type"] == "glue" and result["dataset"]["config"] == "sst2"
    assert result["metrics"][0]["type"] == "accuracy" and result["metrics"][0]["value"] == 81.2
    assert f'revision="{pushed[0]}"' in first_card and "trust_remote_code=True" in first_card
    assert "| bert-tiny (BertForMaskedLM, fp32) |" in first_card and "Pretrained briefly for a test." in first_card

    assert pushed[1] != pushed[0]
    assert _load_from_hub(hub, tmp_path, "user/uno", pushed[0], _batch(tokenizer), first)  # the first revision
    assert _load_from_hub(hub, tmp_path, "user/uno", "main", _batch(tokenizer), second)


@pytest.mark.slow
def test_transformers_push_to_hub_works_too(hub, uno_config, tokenizer, tmp_path):
    expected = _save_mlm(uno_config, tokenizer, tmp_path / "model")
    run_client(hub, f"""
import json
from transformers import AutoModelForMaskedLM, AutoTokenizer
import eelbert
model = AutoModelForMaskedLM.from_pretrained({str(tmp_path / "model")!r})
model.push_to_hub("user/plain")
AutoTokenizer.from_pretrained({str(tmp_path / "model")!r}).push_to_hub("user/plain")
print(json.dumps("ok"))
""", tmp_path / "home-push")
    files = hub.files("user/plain")
    assert {"modeling_eelbert.py", "hashing_eelbert.py", "model.safetensors"} <= set(files)
    assert "eelbert" in yaml.safe_load(files["README.md"].decode().split("---")[1])["tags"]  # transformers' own card
    assert _load_from_hub(hub, tmp_path, "user/plain", "main", _batch(tokenizer), expected)


def test_offline_mode_gives_the_librarys_error(hub, tmp_path):
    out = run_client(hub, WITHOUT_EELBERT + """
import json
from transformers import AutoModel
try:
    AutoModel.from_pretrained("user/anything", trust_remote_code=True)
except OSError as error:
    print(json.dumps(str(error)))
""", tmp_path / "home", HF_HUB_OFFLINE="1")
    assert "offline" in out.lower() or "cached files" in out
    assert hub.requests == []


def test_a_float16_stored_card_compares_with_bert_in_float16_and_a_card_without_scores_has_no_model_index(
        uno_config, tokenizer, tmp_path):
    from eelbert.artifacts import store_weights_in_float16
    from eelbert.hub import model_card

    _save_mlm(uno_config, tokenizer, tmp_path)
    full = model_card(tmp_path, "user/uno", results=RESULTS)
    store_weights_in_float16(tmp_path)
    card = model_card(tmp_path, "user/uno", results={**RESULTS, "results": []})
    fp32 = int(full.split("| bert-tiny (BertForMaskedLM, fp32) | model.safetensors | ")[1].split(" |")[0].replace(",", ""))
    fp16 = int(card.split("| bert-tiny (BertForMaskedLM, fp16) | model.safetensors | ")[1].split(" |")[0].replace(",", ""))
    assert abs(fp16 - fp32 / 2) < 10_000  # the same tensors in half the bytes
    assert "| this checkpoint (EelbertForMaskedLM, fp16) | model.safetensors |" in card
    assert "Pretrained briefly for a test." in card
    front = yaml.safe_load(card.split("---")[1])
    assert "model-index" not in front and "datasets" not in front and "## Evaluation" not in card


@pytest.mark.parametrize("dtype,limit", [(torch.float16, 600_000), (torch.bfloat16, 600_000)])
def test_half_precision_checkpoints(uno_config, tokenizer, tmp_path, dtype, limit):
    torch.manual_seed(0)
    model = eelbert.EelbertForSequenceClassification(uno_config).eval()
    with torch.no_grad():
        expected = model(**_batch(tokenizer)).logits
    model.to(dtype).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size <= limit
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.classifier.weight.dtype == dtype
    with torch.no_grad():
        got = loaded.float()(**_batch(tokenizer)).logits
    assert torch.allclose(got, expected, atol=0.05)


@pytest.mark.parametrize("model_class", [eelbert.EelbertModel, eelbert.EelbertForSequenceClassification])
def test_int8_checkpoint_is_small_and_loads_back(uno_config, tokenizer, tmp_path, model_class):
    torch.manual_seed(0)
    model = model_class(uno_config).eval()
    path = save_int8(model, tmp_path)
    assert path.stat().st_size <= 350_000
    assert not (tmp_path / "model.safetensors").exists()
    loaded = load_int8(tmp_path)
    assert type(loaded) is model_class
    with torch.no_grad():
        a, b = model(**_batch(tokenizer))[0], loaded(**_batch(tokenizer))[0]
    assert (a - b).abs().max() < 0.05 and not torch.equal(a, b)  # close, and really quantised


def test_load_int8_of_a_plain_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an int8 EELBERT checkpoint"):
        load_int8(tmp_path)


@pytest.mark.parametrize("model_class", [eelbert.EelbertModel, eelbert.EelbertForSequenceClassification])
def test_onnx_export_on_inputs_embeds_matches_onnxruntime(uno_config, tokenizer, tmp_path, model_class):
    import onnxruntime

    torch.manual_seed(0)
    model = model_class(uno_config).eval()
    path = export_onnx(model, tmp_path, inputs="inputs_embeds")
    model.save_pretrained(tmp_path / "safetensors")
    # No vocabulary-sized table in the graph: about the size of the weights.
    assert path.stat().st_size < 1.2 * (tmp_path / "safetensors" / "model.safetensors").stat().st_size
    session = onnxruntime.InferenceSession(str(path))
    config = eelbert.EelbertConfig.from_pretrained(tmp_path)  # the export carries the vocabulary
    for texts in (["hello world"], ["one", "two more words", "and a much longer third sentence here"]):  # dynamic shapes
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        feeds = {"inputs_embeds": embed_for_onnx(batch["input_ids"], config).numpy(),
                 "attention_mask": batch["attention_mask"].numpy(), "token_type_ids": batch["token_type_ids"].numpy()}
        got = session.run(None, feeds)[0]
        with torch.no_grad():
            expected = model(**batch)[0].numpy()
        assert abs(got - expected).max() <= 1e-4


def _tiny_bert(tokenizer, folder):
    torch.manual_seed(0)
    bert = BertForMaskedLM(eelbert.baseline_config("bert-tiny", vocab_size=len(tokenizer))).eval()
    bert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return bert


def test_convert_bert_keeps_the_encoder_and_head_and_drops_the_word_table(tokenizer, tmp_path):
    bert = _tiny_bert(tokenizer, tmp_path / "bert")
    model, _, bert_bytes = convert_bert(tmp_path / "bert")
    assert type(model) is eelbert.EelbertForMaskedLM and bert_bytes > 17_000_000
    pairs = [("bert.encoder.layer.1.output.dense.weight", "eelbert.encoder.layer.1.output.dense.weight"),
             ("bert.embeddings.position_embeddings.weight", "eelbert.embeddings.position_embeddings.weight"),
             ("cls.predictions.transform.dense.weight", "cls.predictions.dense.weight"),
             ("cls.predictions.bias", "cls.predictions.bias")]
    bert_state, state = bert.state_dict(), model.state_dict()
    for bert_key, key in pairs:
        assert torch.equal(bert_state[bert_key], state[key]), key
    assert not any("word_embeddings" in key for key in state)
    model.save_pretrained(tmp_path / "eelbert")
    assert (tmp_path / "eelbert" / "model.safetensors").stat().st_size < 2_100_000


def test_convert_refuses_a_bert_without_tokenizer_files_and_writes_nothing(tokenizer, tmp_path, capsys):
    _tiny_bert(tokenizer, tmp_path / "bert")
    for name in ("tokenizer.json", "vocab.txt"):
        (tmp_path / "bert" / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "bert"), str(tmp_path / "converted")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("eelbert convert: error:") and error.count("\n") == 1
    assert "has no tokenizer (tokenizer.json or vocab.txt)" in error and "--tokenizer" in error
    assert not (tmp_path / "converted").exists()


def test_convert_refuses_a_tokenizer_whose_size_differs_from_berts_vocab_size(tokenizer, tokenizer_path, tmp_path, capsys):
    torch.manual_seed(0)
    BertForMaskedLM(eelbert.baseline_config("bert-tiny", vocab_size=len(tokenizer) + 8)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="the tokenizer has 30,522 tokens but .* vocab_size 30,530"):
        convert_bert(tmp_path / "bert", tokenizer=tokenizer)
    assert main(["convert", str(tmp_path / "bert"), str(tmp_path / "converted"), "--tokenizer", str(tokenizer_path)]) == 1
    assert "vocab_size 30,530" in capsys.readouterr().err
    assert not (tmp_path / "converted").exists()


def test_convert_refuses_non_bert_checkpoints(uno_config, tmp_path):
    eelbert.EelbertModel(uno_config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not BERT"):
        convert_bert(tmp_path)


def test_command_line_new_info_convert_export(tokenizer_path, tokenizer, tmp_path, capsys):
    assert main(["new", "uno-eelbert", str(tmp_path / "uno"), "--tokenizer", str(tokenizer_path),
                 "--head", "sequence-classification", "--num-labels", "3"]) == 0
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "uno").num_labels == 3
    assert main(["info", str(tmp_path / "uno")]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["preset"] == "uno-eelbert" and "hash_version 1" in info["hash"] and info["files"]["model.safetensors"] < 1_200_000
    for fmt, limit in (("fp16", 600_000), ("int8", 350_000), ("onnx", 1_600_000)):
        assert main(["export", fmt, str(tmp_path / "uno"), str(tmp_path / fmt)]) == 0
        assert f"{fmt}: " in capsys.readouterr().out
        assert sum(f.stat().st_size for f in (tmp_path / fmt).glob("**/model*.*") if f.suffix in (".safetensors", ".onnx")
                   and "quantized" not in f.name) <= limit
    _tiny_bert(tokenizer, tmp_path / "bert")
    assert main(["convert", str(tmp_path / "bert"), str(tmp_path / "converted")]) == 0
    assert "bytes of BERT weights ->" in capsys.readouterr().out
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path / "converted")) is eelbert.EelbertForMaskedLM


@pytest.mark.parametrize("argv,message", [
    (["info", "missing-folder"], "not a checkpoint folder"),
    (["export", "int8", "missing-folder", "out"], "not a checkpoint folder"),
    (["push", "missing-folder", "user/x"], "not a saved checkpoint"),
    (["new", "uno-eelbert", "out", "--tokenizer", "missing/tokenizer/folder"], ""),
])
def test_command_line_errors_are_one_line_with_nonzero_exit(argv, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "eelbert.cli", *argv], capture_output=True, text=True, cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.startswith(f"eelbert {argv[0]}: error:") and result.stderr.count("\n") == 1
    assert message in result.stderr


@pytest.mark.parametrize("command", ["new", "size", "convert", "export", "push", "info"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: eelbert " + command in capsys.readouterr().out


@pytest.mark.slow
def test_command_line_push_to_the_hub(hub, tokenizer_path, tmp_path):
    subprocess.run([sys.executable, "-m", "eelbert.cli", "new", "uno-eelbert", str(tmp_path / "uno"), "--tokenizer",
                    str(tokenizer_path)], check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-m", "eelbert.cli", "push", str(tmp_path / "uno"), "user/cli"],
                            capture_output=True, text=True, env=hub.client_env(tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pushed ") and hub.commits("user/cli")[1] in result.stdout
    assert "README.md" in hub.files("user/cli") and "model.safetensors" in hub.files("user/cli")


# --- publishing: what push_to_hub uploads, and what its card's usage code does --------------------------------------

def _push(hub, folder, repo, hf_home, **env):
    """eelbert.hub.push_to_hub in a fresh process: ["ok", sha] or ["error", type, message]."""
    return run_client(hub, f"""
import json
from eelbert.hub import push_to_hub
try:
    print(json.dumps(["ok", push_to_hub({str(folder)!r}, {repo!r})]))
except Exception as error:
    print(json.dumps(["error", type(error).__name__, str(error)]))
""", hf_home, **env)


def test_push_of_a_plain_bert_folder_fails_before_anything_reaches_the_hub(hub, tokenizer, tmp_path):
    _tiny_bert(tokenizer, tmp_path / "bert")
    out = _push(hub, tmp_path / "bert", "user/bert", tmp_path / "home")
    assert out == ["error", "ValueError", f"{tmp_path / 'bert'} is a bert checkpoint, not EELBERT (see `eelbert convert`)"]
    assert hub.repos == {} and hub.requests == []  # no repository, not even an empty one


def test_push_of_a_trainer_checkpoint_uploads_the_model_not_the_training_state(hub, uno_config, tokenizer, tmp_path):
    from transformers.trainer import (OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCALER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME,
                                      TRAINING_ARGS_NAME)

    folder = tmp_path / "checkpoint-500"
    _save_mlm(uno_config, tokenizer, folder)
    model_files = {f.name for f in folder.iterdir()}
    training_state = [OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCALER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME, TRAINING_ARGS_NAME,
                      "rng_state.pth", "rng_state_1.pth"]  # what Trainer._save_checkpoint writes beside the model
    for name in training_state:
        (folder / name).write_bytes(b"training state")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out.tfevents").write_bytes(b"logs")
    out = _push(hub, folder, "user/trained", tmp_path / "home")
    assert out[0] == "ok", out
    assert set(hub.files("user/trained")) == model_files | {"README.md", ".gitattributes"}


def _card_snippet(card: str) -> str:
    return card.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("artifact", ["fp16", "int8", "onnx"])
def test_the_cards_usage_code_loads_and_runs_each_artifact(artifact, hub, uno_config, tokenizer, tmp_path):
    folder = tmp_path / artifact
    torch.manual_seed(0)
    model = eelbert.EelbertForSequenceClassification(uno_config).eval()
    batch = dict(tokenizer(["EELBERT is a tiny BERT."], return_tensors="pt"))
    if artifact == "fp16":
        model.half().save_pretrained(folder)
        reference = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    elif artifact == "int8":
        save_int8(model, folder)
        reference = load_int8(folder)
    else:
        export_onnx(model, folder)
        reference = model
    tokenizer.save_pretrained(folder)
    with torch.no_grad():
        expected = reference(**batch).logits.float()

    sha = _push(hub, folder, f"user/{artifact}", tmp_path / "home-push")[1]
    card = hub.files(f"user/{artifact}")["README.md"].decode()
    snippet = _card_snippet(card)
    assert f'revision="{sha}"' in snippet
    # Only int8 needs the eelbert package; the ONNX graph computes the hash embedding itself.
    code = (WITHOUT_EELBERT if artifact in ("fp16", "onnx") else "") + snippet + """
import json, torch
first = outputs[0]
print(json.dumps(torch.as_tensor(first).float().tolist()))
"""
    got = torch.tensor(run_client(hub, code, tmp_path / "home-use"))
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_push_without_the_hub_is_one_line_naming_the_endpoint(uno_config, tokenizer, tmp_path):
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{free.getsockname()[1]}"  # closed once the block ends: connections are refused
    _save_mlm(uno_config, tokenizer, tmp_path / "uno")
    result = subprocess.run([sys.executable, "-m", "eelbert.cli", "push", str(tmp_path / "uno"), "user/x"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test"})
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"eelbert push: error: cannot reach the Hub at {endpoint} (")


def test_every_model_carries_its_own_eelbert_tag(small_config):
    model, other = eelbert.EelbertForMaskedLM(small_config), eelbert.EelbertModel(small_config)
    assert model.model_tags == other.model_tags == ["eelbert"]
    model.add_model_tags(["mine"])
    assert model.model_tags == ["eelbert", "mine"] and other.model_tags == ["eelbert"]
