"""examples/run_mlm.py: masked-LM pretraining with Trainer, on one process and under accelerate on two."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import WITHOUT_EELBERT, run_python

REPO = Path(__file__).resolve().parents[1]
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


def test_pretraining_resumes_from_its_last_checkpoint(tokenizer_path, corpus, tmp_path):
    output = tmp_path / "out"
    _run([sys.executable, str(RUN_MLM), *_args(tokenizer_path, corpus, output, 2)], cwd=tmp_path)
    assert (output / "checkpoint-2").is_dir()
    _run([sys.executable, str(RUN_MLM), *_args(tokenizer_path, corpus, output, 4), "--resume"], cwd=tmp_path)
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Resumed, not restarted: the log keeps the steps of the first run.
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry][:2] == [1, 2]


def test_missing_training_text_is_a_clear_error(tokenizer_path, tmp_path):
    result = subprocess.run([sys.executable, str(RUN_MLM), "--tokenizer", str(tokenizer_path), "--train",
                             str(tmp_path / "nothing"), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "no such file or folder" in result.stderr


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer):
    sys.path.insert(0, str(RUN_MLM.parent))
    import run_mlm
    from transformers import DataCollatorForLanguageModeling

    ids = tokenizer("unbelievable tokenization works", add_special_tokens=False)["input_ids"]
    blocks = [{"input_ids": [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]}]
    run_mlm.add_word_offsets(tokenizer, blocks)
    assert tokenizer.convert_ids_to_tokens(blocks[0]["input_ids"])[2:4] == ["token", "##ization"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, whole_word_mask=True, seed=0)
    for _ in range(20):
        masked = collator([dict(blocks[0])])["labels"][0] != -100
        assert masked[2] == masked[3]  # "token" and "##ization" are masked together or not at all
        assert not masked[0] and not masked[-1]


def test_whole_word_masking_trains(tokenizer_path, corpus, tmp_path):
    _run([sys.executable, str(RUN_MLM), *_args(tokenizer_path, corpus, tmp_path / "out", 2), "--whole-word-masking"],
         cwd=tmp_path)
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["eval_loss"] > 0
