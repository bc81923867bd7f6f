"""Size accounting and the `eelbert` command."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_client, run_python

import eelbert
from eelbert import cli
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


def _eelbert(*argv, **env):
    """Run the `eelbert` command in a fresh process (python -m eelbert.cli)."""
    return subprocess.run([sys.executable, "-m", "eelbert.cli", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def _imported(importtime_log: str) -> set[str]:
    """Top-level packages named in a `python -X importtime` log."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in importtime_log.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("command", [[], *([c] for c in ["pretrain", "demo", "distill", "new", "size", "convert", "export", "push", "info"])])
def test_help_imports_neither_torch_nor_transformers(command):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "eelbert.cli", *command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: eelbert")
    imported = _imported(result.stderr)
    assert "eelbert" in imported and not imported & {"torch", "transformers", "huggingface_hub"}


def test_the_console_script_help_imports_neither_torch_nor_transformers():
    script = Path(sys.executable).parent / "eelbert"
    result = subprocess.run([sys.executable, "-X", "importtime", str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "{pretrain,demo,distill,new,size,convert,export,push,info}" in result.stdout
    assert not _imported(result.stderr) & {"torch", "transformers"}


def test_import_eelbert_still_registers_the_auto_classes(uno_config, tmp_path):
    eelbert.EelbertForMaskedLM(uno_config).save_pretrained(tmp_path)
    out = run_python(f"""
        import eelbert
        from transformers import AutoConfig, AutoModelForMaskedLM
        print(type(AutoModelForMaskedLM.from_pretrained({str(tmp_path)!r})).__module__)
    """)
    assert out.strip() == "eelbert.modeling.modeling_eelbert"  # the package's class: no remote code


def test_the_head_list_has_one_home():
    from eelbert.convert import CONVERTIBLE
    from eelbert.heads import CLASSIFICATION_HEADS, HEADS
    from eelbert.hub import PIPELINE_TAG_OF
    from eelbert.modeling import modeling_eelbert
    from eelbert.modeling.configuration_eelbert import AUTO_CLASS_OF, AUTO_MAP
    from eelbert.presets import EELBERT_PRESETS

    assert list(HEADS.values()) == list(AUTO_CLASS_OF)  # read from AUTO_MAP's source without importing it
    assert HEADS["encoder"] == "EelbertModel" and HEADS["masked-lm"] == "EelbertForMaskedLM"
    assert HEADS["multiple-choice"] == "EelbertForMultipleChoice"
    assert CLASSIFICATION_HEADS == ["sequence-classification", "token-classification"]
    assert cli.HEADS is HEADS and cli.EELBERT_PRESETS == EELBERT_PRESETS
    assert set(PIPELINE_TAG_OF) == set(AUTO_MAP) - {"AutoConfig"}  # a tag for every head, none for a head that is gone
    assert PIPELINE_TAG_OF["AutoModelForMaskedLM"] == "fill-mask" and PIPELINE_TAG_OF["AutoModel"] == "feature-extraction"
    for class_name in AUTO_CLASS_OF:
        assert class_name in eelbert.__all__ and class_name in modeling_eelbert.__all__
        assert CONVERTIBLE[class_name.replace("Eelbert", "Bert")][1].__name__ == class_name
    assert CONVERTIBLE["BertForPreTraining"][1] is eelbert.EelbertForMaskedLM
    for name in eelbert.__all__:
        assert getattr(eelbert, name) is not None
    for name in modeling_eelbert.__all__:
        assert getattr(modeling_eelbert, name) is not None


def test_size_report_covers_every_head(tokenizer):
    rows = eelbert.size_report(["uno-eelbert"], tokenizer=tokenizer, heads=tuple(cli.HEADS))
    assert [r.head for r in rows] == list(cli.HEADS) and all(r.ratio < 1 / 10 for r in rows)
    with pytest.raises(ValueError, match="unknown heads"):
        eelbert.size_report(["uno-eelbert"], heads=("masked-LM",))


def test_the_model_card_and_the_size_table_count_bytes_alike(uno_config, tokenizer, tmp_path):
    from eelbert.hub import model_card

    eelbert.EelbertForMaskedLM(uno_config).save_pretrained(tmp_path)
    (row,) = eelbert.size_report(["uno-eelbert"], tokenizer=tokenizer, heads=("masked-lm",))
    card = model_card(tmp_path, "user/uno")
    assert f"| this checkpoint (EelbertForMaskedLM, fp32) | model.safetensors | {row.file_bytes:,} |" in card
    assert f"| bert-tiny (BertForMaskedLM, fp32) | model.safetensors | {row.baseline_file_bytes:,} |" in card


def test_num_labels_without_a_classification_head_is_an_error(tokenizer_path, tmp_path, capsys):
    assert main(["new", "uno-eelbert", str(tmp_path / "out"), "--tokenizer", str(tokenizer_path), "--num-labels", "3"]) == 1
    assert "--num-labels needs a classification head (--head sequence-classification or token-classification)" in (
        capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_missing_tokenizer_folder_is_named(tmp_path):
    result = _eelbert("size", "--tokenizer", str(tmp_path / "nonexistent"))
    assert result.returncode == 1
    assert f"no tokenizer folder {tmp_path / 'nonexistent'} (and it is not a Hub id)" in result.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hub_id_with_the_hub_unreachable_fails_fast_naming_the_endpoint(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = _eelbert("size", "--tokenizer", "someone/tokenizer", HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0",
                      HF_HOME=str(tmp_path / "home"))
    assert time.monotonic() - started < 30  # no minute of retries
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert f"someone/tokenizer is not a tokenizer folder, and as a Hub id: cannot reach the Hub at {endpoint}" in result.stderr
    assert "HF_ENDPOINT" in result.stderr


def test_offline_a_hub_id_not_in_the_cache_fails_fast_and_says_so(tmp_path):
    started = time.monotonic()
    result = _eelbert("new", "uno-eelbert", str(tmp_path / "out"), "--tokenizer", "someone/tokenizer",
                      HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"))
    assert time.monotonic() - started < 30
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert ("no tokenizer folder someone/tokenizer, and as a Hub id it is not in the local Hub cache "
            f"({tmp_path / 'home' / 'hub'}); HF_HUB_OFFLINE is set") in result.stderr


def test_offline_a_hub_id_in_the_cache_is_used(hub, tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    home = tmp_path / "home"
    run_client(hub, f"""
import json
from huggingface_hub import HfApi, snapshot_download
HfApi().create_repo("user/tokenizer")
HfApi().upload_folder(repo_id="user/tokenizer", folder_path={str(tmp_path / "tokenizer")!r})
print(json.dumps(snapshot_download("user/tokenizer")))
""", home)
    requests = len(hub.requests)
    result = subprocess.run([sys.executable, "-m", "eelbert.cli", "new", "uno-eelbert", str(tmp_path / "out"),
                             "--tokenizer", "user/tokenizer"], capture_output=True, text=True, timeout=120,
                            env=hub.client_env(home, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    assert "saved uno-eelbert (EelbertForMaskedLM, 30,522 tokens)" in result.stdout
    assert len(hub.requests) == requests  # from the cache alone


@pytest.mark.parametrize("argv", [["--debug", "info", "missing-folder"], ["info", "missing-folder", "--debug"]])
def test_debug_shows_the_traceback(argv, tmp_path):
    result = _eelbert(*argv)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):") and "FileNotFoundError" in result.stderr
    assert result.stderr.splitlines()[-1] == "eelbert info: error: missing-folder is not a checkpoint folder (no config.json)"


def test_without_debug_an_error_is_one_line_that_says_how_to_see_more():
    result = _eelbert("info", "missing-folder")
    assert result.returncode == 1
    assert result.stderr == "eelbert info: error: missing-folder is not a checkpoint folder (no config.json) " \
                            "(--debug shows the traceback)\n"
