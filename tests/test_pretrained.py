"""The trained models installed with the package (pretrained/, eelbert.pretrained): complete, small, loadable
without eelbert, by name, and as good as their cards say."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import GLUE, REPO, SHARED_DATA, WITHOUT_EELBERT, run_python

import eelbert
import eelbert.modeling
from eelbert.cli import main
from eelbert.embedding_evaluation import glue_evaluation_data, sts_spearman

pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

SENTENCE_MODEL = "uno-eelbert-sentence"
# The final masked LMs of benchmarks/paper_comparison.py (--stage ship).
MASKED_LMS = ["uno-eelbert-pretrained", "eelbert-tiny-pretrained"]
FILL_MASK_SENTENCE = "The sun rises in the [MASK] and sets in the west."
MODELING = Path(eelbert.modeling.__file__).parent  # modeling/, installed as eelbert.modeling


@pytest.fixture(scope="module")
def folder():
    return eelbert.pretrained_path(SENTENCE_MODEL)


def test_installed_by_name_and_unknown_names_are_a_clear_error(folder):
    assert SENTENCE_MODEL in eelbert.pretrained_models() and folder.is_dir()
    with pytest.raises(ValueError, match=r"no pretrained model 'uno-eelbert-sentenc': installed are \["):
        eelbert.pretrained_path("uno-eelbert-sentenc")


def test_the_sentence_model_is_at_most_2_5_mb_all_in_and_carries_the_current_remote_code(folder):
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 2_500_000
    names = {str(f.relative_to(folder)) for f in files}
    assert {"modules.json", "config.json", "model.safetensors", "tokenizer.json", "README.md",
            "distillation.json"} <= names
    for code in ("modeling_eelbert.py", "configuration_eelbert.py", "hashing_eelbert.py"):
        assert (folder / code).read_bytes() == (MODELING / code).read_bytes(), f"{code}: re-save the shipped model"


def test_the_sentence_model_loads_and_encodes_without_eelbert(folder):
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."]
    expected = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu").encode(texts)
    out = run_python(WITHOUT_EELBERT + f"""
import json
from sentence_transformers import SentenceTransformer
model = SentenceTransformer({str(folder)!r}, trust_remote_code=True, device="cpu")
print(json.dumps(model.encode({texts!r}).tolist()))
""")
    got = np.array(json.loads(out.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert got[0] @ got[1] > got[0] @ got[2]  # the paraphrase is nearer than the unrelated sentence


def _stsb_spearman(model) -> float:
    first, second, gold = glue_evaluation_data(SHARED_DATA / "glue", dev_limit=None).sts_dev
    return sts_spearman(lambda sentences: model.encode(sentences, batch_size=256), first, second, gold)


def test_the_sentence_model_scores_what_its_card_says_and_beats_the_same_model_untrained(folder, tmp_path):
    import torch
    from transformers import AutoTokenizer

    from eelbert.training.distillation import student_model

    card = (folder / "README.md").read_text(encoding="utf-8")
    claimed = float(re.search(r"STS-B dev Spearman × 100: ([0-9]+\.[0-9])", card).group(1))
    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    score = _stsb_spearman(model)
    assert abs(score - claimed) < 0.3
    # The same architecture with new weights (seed 0), pooled the same way.
    torch.manual_seed(0)
    config = eelbert.EelbertConfig.from_pretrained(folder)
    eelbert.EelbertModel(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path)
    assert json.loads((folder / "distillation.json").read_text())["reduction"] == "pca"
    untrained = student_model(tmp_path)
    assert score > _stsb_spearman(untrained) + 3


def test_the_command_line_finds_it_by_name(capsys):
    assert main(["info", SENTENCE_MODEL]) == 0
    printed = capsys.readouterr().out
    assert "uno-eelbert" in printed and "30,522 tokens" in printed


# ---- the pretrained masked LMs ----


@pytest.mark.parametrize("name", MASKED_LMS)
def test_the_masked_lm_is_at_most_2_5_mb_all_in_in_float16_with_the_current_remote_code_and_a_card(name):
    from safetensors import safe_open

    folder = eelbert.pretrained_path(name)
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 2_500_000
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {f.name for f in files}
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(n).get_dtype() for n in weights.keys()} == {"F16"}
    for code in ("modeling_eelbert.py", "configuration_eelbert.py", "hashing_eelbert.py"):
        assert (folder / code).read_bytes() == (MODELING / code).read_bytes(), f"{code}: ship the model again"
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: fill-mask" in card and "Held-out masked-LM perplexity" in card and "41M tokens" in card


@pytest.mark.parametrize("name", MASKED_LMS)
def test_the_masked_lm_loads_without_eelbert_in_float32_and_predicts_as_with_it(name):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = eelbert.pretrained_path(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = model(**tokenizer([FILL_MASK_SENTENCE], return_tensors="pt")).logits[0]
    out = run_python(WITHOUT_EELBERT + f"""
import json, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
model = AutoModelForMaskedLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert {{p.dtype for p in model.parameters()}} == {{torch.float32}}
with torch.no_grad():
    print(json.dumps(model(**tokenizer([{FILL_MASK_SENTENCE!r}], return_tensors="pt")).logits[0].tolist()))
""")
    got = torch.tensor(json.loads(out.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MASKED_LMS)
def test_the_masked_lm_is_found_by_name_by_the_command_line_and_run_glue(name, tmp_path, capsys):
    import subprocess
    import sys

    assert main(["info", name]) == 0
    assert "EelbertForMaskedLM" in capsys.readouterr().out
    run = subprocess.run([sys.executable, str(REPO / "examples" / "run_glue.py"), "--model", name, "--task", "wnli",
                          "--data-dir", str(GLUE), "--output", str(tmp_path / "wnli"), "--max-steps", "2",
                          "--threads", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "wnli" / "results.json").read_text())
    assert results["model"] == name and results["train_rows"] == 635  # offline: only the installed folder resolves
