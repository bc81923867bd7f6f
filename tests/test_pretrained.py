"""The trained models installed with the package (pretrained/, eelbert.pretrained): complete, small, loadable
without eelbert, by name, and as good as their cards say."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, WITHOUT_EELBERT, run_python

import eelbert
import eelbert.modeling
from eelbert.cli import main
from eelbert.embedding_evaluation import glue_evaluation_data, sts_spearman

pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

SENTENCE_MODEL = "uno-eelbert-sentence"
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
