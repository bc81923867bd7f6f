"""examples/run_mlm.py: masked-LM pretraining with Trainer, on one process and under accelerate on two.
(examples/run_glue.py and the fine-tuning library: tests/test_finetuning.py.)"""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, WITHOUT_EELBERT, run_python

RUN_MLM = REPO / "examples" / "run_mlm.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    words = "the cat dog sat on a mat with small model runs fast and slow tiny phone watch browser text".split()
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(200)]
        (folder / name).write_text("\n".join(lines))
    return folder


def _run(command, cwd):
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _args(tokenizer_path, corpus, output, max_steps):
    return ["--tokenizer", str(tokenizer_path), "--train", str(corpus), "--output", str(output), "--block-size", "32",
            "--batch-size", "4", "--max-steps", str(max_steps), "--save-steps", "2", "--eval-steps", "2",
            "--validation-fraction", "0.1"]


@pytest.mark.slow
def test_two_process_pretraining_under_accelerate_saves_a_loadable_checkpoint(tokenizer_path, corpus, tmp_path):
    output = tmp_path / "out"
    _run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", str(RUN_MLM), *_args(tokenizer_path, corpus, output, 4)],
         cwd=tmp_path)
    results = json.loads((output / "all_results.json").read_text())
    assert results["processes"] == 2 and results["perplexity"] > 1 and 0 <= results["eval_masked_accuracy"] <= 1
    assert (output / "checkpoint-4" / "modeling_eelbert.py").is_file()
    out = run_python(WITHOUT_EELBERT + f"""
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
model = AutoModelForMaskedLM.from_pretrained({str(output)!r}, trust_remote_code=True)
fill = pipeline("fill-mask", model={str(output)!r}, trust_remote_code=True)
print(type(model).__name__, len(fill("the cat sat on the [MASK]")))
""", cwd=tmp_path)
    assert "EelbertForMaskedLM 5" in out


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_the_same_global_batch(tokenizer_path, corpus, tmp_path):
    from safetensors.torch import load_file

    preset = json.loads((REPO / "configs" / "uno-eelbert.json").read_text())
    model = tmp_path / "no-dropout.json"  # dropout draws from each process's own generator
    model.write_text(json.dumps({**preset, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    common = ["--model", str(model), "--tokenizer", str(tokenizer_path), "--train", str(corpus), "--token-store",
              str(tmp_path / "store"), "--block-size", "32", "--max-steps", "4", "--save-steps", "4", "--eval-steps",
              "4", "--validation-fraction", "0.1", "--learning-rate", "3e-3"]
    _run([sys.executable, str(RUN_MLM), *common, "--batch-size", "8", "--output", str(tmp_path / "one")], cwd=tmp_path)
    _run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no", str(RUN_MLM), *common, "--batch-size", "4", "--output", str(tmp_path / "two")],
         cwd=tmp_path)

    def losses(output):
        history = json.loads((output / "trainer_state.json").read_text())["log_history"]
        return [entry["loss"] for entry in history if "loss" in entry]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == 4 and np.allclose(one, two, rtol=1e-3), (one, two)
    assert one[0] != one[-1]  # it trained
    weights = [load_file(tmp_path / run / "model.safetensors") for run in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert np.allclose(tensor.numpy(), weights[1][name].numpy(), rtol=1e-4, atol=1e-5), name


@pytest.mark.slow
def test_pretraining_resumes_from_its_last_checkpoint(tokenizer_path, corpus, tmp_path):
    output = tmp_path / "out"
    _run([sys.executable, str(RUN_MLM), *_args(tokenizer_path, corpus, output, 2)], cwd=tmp_path)
    assert (output / "checkpoint-2").is_dir()
    _run([sys.executable, str(RUN_MLM), *_args(tokenizer_path, corpus, output, 4), "--resume"], cwd=tmp_path)
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Resumed, not restarted: the log keeps the steps of the first run.
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry][:2] == [1, 2]


@pytest.mark.slow
def test_bf16_accumulation_compile_workers_and_threads_are_options_that_train(tokenizer_path, corpus, tmp_path):
    output = tmp_path / "out"
    _run([sys.executable, str(RUN_MLM), *_args(tokenizer_path, corpus, output, 2), "--bf16", "--torch-compile",
          "--gradient-accumulation-steps", "2", "--dataloader-workers", "1", "--threads", "1"], cwd=tmp_path)
    out = run_python(f"""
import torch
args = torch.load({str(output / "training_args.bin")!r}, weights_only=False)
print(args.bf16, args.torch_compile, args.gradient_accumulation_steps, args.dataloader_num_workers)
""", cwd=tmp_path)
    assert out.split() == ["True", "True", "2", "1"]
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses)) and history[-1]["step"] == 2
    assert np.isfinite(json.loads((output / "all_results.json").read_text())["eval_loss"])


def test_help_shows_the_accelerate_command_that_starts_several_cpu_processes():
    result = subprocess.run([sys.executable, str(RUN_MLM), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "accelerate launch --multi_gpu --num_processes 2" in result.stdout


def test_missing_training_text_is_a_clear_error(tokenizer_path, tmp_path):
    result = subprocess.run([sys.executable, str(RUN_MLM), "--tokenizer", str(tokenizer_path), "--train",
                             str(tmp_path / "nothing"), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "no such file or folder" in result.stderr


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer):
    from transformers import DataCollatorForLanguageModeling

    from eelbert.training.pretraining import WholeWordOffsets

    ids = tokenizer("unbelievable tokenization works", add_special_tokens=False)["input_ids"]
    blocks = WholeWordOffsets(tokenizer, [{"input_ids": [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]}])
    assert tokenizer.convert_ids_to_tokens(blocks[0]["input_ids"])[2:4] == ["token", "##ization"]
    # The offsets the collator reads: a continuation piece starts where the previous token ended.
    offsets = blocks[0]["offset_mapping"]
    assert offsets[3][0] == offsets[2][1] and offsets[2][0] > offsets[1][1]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, whole_word_mask=True, seed=0)
    for _ in range(20):
        masked = collator([dict(blocks[0])])["labels"][0] != -100
        assert masked[2] == masked[3]  # "token" and "##ization" are masked together or not at all
        assert not masked[0] and not masked[-1]


def test_whole_word_masking_trains(tokenizer_path, corpus, tmp_path):
    _run([sys.executable, str(RUN_MLM), *_args(tokenizer_path, corpus, tmp_path / "out", 2), "--whole-word-masking"],
         cwd=tmp_path)
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["eval_loss"] > 0


def test_a_datasets_dataset_trains_through_a_token_store_made_once(tokenizer_path, corpus, tmp_path):
    pytest.importorskip("datasets")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    lines = (corpus / "a.txt").read_text().splitlines()
    (dataset / "train.jsonl").write_text("\n".join(json.dumps({"body": line, "n": i}) for i, line in enumerate(lines)))
    store = tmp_path / "store"
    args = ["--tokenizer", str(tokenizer_path), "--dataset", str(dataset), "--text-column", "body", "--token-store",
            str(store), "--block-size", "32", "--batch-size", "4", "--max-steps", "2", "--save-steps", "2",
            "--eval-steps", "2", "--validation-fraction", "0.1"]
    _run([sys.executable, str(RUN_MLM), *args, "--output", str(tmp_path / "first")], cwd=tmp_path)
    made = (store / "tokens.bin").stat().st_mtime_ns
    assert json.loads((store / "store.json").read_text())["paragraphs"] == len(lines)
    _run([sys.executable, str(RUN_MLM), *args, "--output", str(tmp_path / "second")], cwd=tmp_path)
    assert (store / "tokens.bin").stat().st_mtime_ns == made  # reused, not tokenized again
    assert json.loads((tmp_path / "second" / "all_results.json").read_text())["eval_loss"] > 0
    # The evaluation at the last step is the final one: validated once, not twice.
    history = json.loads((tmp_path / "second" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "eval_loss" in entry] == [2]
    wrong_column = subprocess.run([sys.executable, str(RUN_MLM), *args[:4], "--output", str(tmp_path / "x")],
                                  capture_output=True, text=True, cwd=tmp_path)
    assert wrong_column.returncode != 0 and "no column 'text'" in wrong_column.stderr
