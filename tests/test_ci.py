"""The test setup itself: one clear message when the shared test data is missing, and the fast loop."""

import shutil
import subprocess
import sys

from helpers import REPO


def test_a_missing_shared_folder_is_one_clear_message(tmp_path):
    """The tests copied to a folder with no ../shared beside it stop at once with one message naming the path."""
    shutil.copytree(REPO / "tests", tmp_path / "repo" / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "repo")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=tmp_path / "repo", capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert f"the tests need the project's shared data beside the repository ({tmp_path / 'shared' / 'data'})" in output
    assert "Traceback" not in output


def test_slow_tests_are_marked_so_the_fast_loop_skips_them():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "slow", "-p", "no:cacheprovider"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "PytestUnknownMarkWarning" not in result.stdout, result.stdout[-2000:]
    assert "test_two_process_pretraining_under_accelerate_saves_a_loadable_checkpoint" in result.stdout
