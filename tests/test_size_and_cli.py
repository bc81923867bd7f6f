"""Size accounting and the `eelbert` command."""

import subprocess
import sys

import pytest

import eelbert
from eelbert.cli import main


def test_size_report_against_bert_tiny(tokenizer):
    rows = eelbert.size_report(["uno-eelbert", "eelbert-tiny"], tokenizer=tokenizer)
    by_key = {(r.preset, r.head): r for r in rows}
    uno = by_key["uno-eelbert", "encoder"]
    assert uno.baseline == "bert-tiny" and uno.baseline_parameters == 4_385_920  # BERT-tiny, as in the paper
    assert uno.parameters == 280_832 and uno.file_bytes <= 1_200_000
    assert uno.ratio < 1 / 15  # the paper's "15x smaller"
    tiny = by_key["eelbert-tiny", "encoder"]
    assert tiny.baseline_file_bytes == uno.baseline_file_bytes and 1.8e6 < tiny.file_bytes < 2.0e6
    assert by_key["uno-eelbert", "masked-lm"].file_bytes - uno.file_bytes < 4 * (30522 + 20000)
    table = eelbert.format_size_table(rows)
    assert table.count("\n") == 1 + len(rows) and "| uno-eelbert | encoder | 280,832 |" in table


def test_eelbert_size_command_prints_the_table(capsys):
    assert main(["size", "--presets", "uno-eelbert"]) == 0
    out = capsys.readouterr().out
    assert "| uno-eelbert | encoder | 280,832 |" in out and "bert-tiny" in out


def test_eelbert_command_errors_are_one_line_and_nonzero(tmp_path):
    result = subprocess.run([sys.executable, "-m", "eelbert.cli", "size", "--tokenizer", str(tmp_path / "missing")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("eelbert size: error:") and result.stderr.count("\n") == 1


def test_eelbert_help():
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
