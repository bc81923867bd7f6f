"""The README's quick start runs as written (against the local tokenizer folder)."""

import re

from helpers import REPO, WITHOUT_EELBERT, run_python

README = REPO / "README.md"


def _quick_start_blocks():
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_quick_start_runs_as_written(tokenizer_path, tmp_path):
    build, load = _quick_start_blocks()[:2]
    assert '"../shared/data/vocab/bert-base-uncased"' in build
    run_python(build.replace("../shared/data/vocab/bert-base-uncased", str(tokenizer_path)), cwd=tmp_path)
    assert (tmp_path / "uno-encoder" / "model.safetensors").stat().st_size <= 1_200_000
    assert "1,125,624 bytes" in build and (tmp_path / "uno-encoder" / "model.safetensors").stat().st_size == 1_125_624
    load += "\nprint(type(m).__name__, type(clf).__name__, clf.config.num_labels)\n"
    out = run_python(WITHOUT_EELBERT + load, cwd=tmp_path)
    assert "EelbertModel EelbertForSequenceClassification 3" in out
