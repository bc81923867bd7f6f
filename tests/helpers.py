"""Helpers shared by the tests."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Every path to test data comes from here. ../shared/data beside the repository holds the BERT uncased
# tokenizer, the GLUE TSVs and the pretraining corpus (conftest.py stops the run with one message if it is missing).
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BERT_UNCASED = SHARED_DATA / "vocab" / "bert-base-uncased"
GLUE = SHARED_DATA / "glue"

# Python code that makes `eelbert` and `mmh3` unimportable, as on a machine with only torch + transformers.
WITHOUT_EELBERT = "import sys\nsys.modules['eelbert'] = None\nsys.modules['mmh3'] = None\n"


def run_python(code: str, env_extra: dict | None = None, cwd=None) -> str:
    """Run code in a fresh Python process; return its stdout, or fail with its stderr."""
    env = {**os.environ, **(env_extra or {})}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def run_client(hub, code: str, hf_home: Path, **env: str):
    """Run `code` in a fresh Python with the Hub pointed at `hub`; return what it printed, parsed as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=hub.client_env(hf_home, **env),
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard, not a speed check: a loaded 2-core machine takes minutes to import torch
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
