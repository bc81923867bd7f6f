"""Git revisions for the benchmarks: the commit a result was measured at, and the package and scripts of an earlier
revision to measure against in the same run as this checkout."""

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checkout_commit() -> str:
    """The commit this checkout is at, with "-dirty" when tracked files differ from it (results record it)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True)
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def earlier_revision(revision: str, work: Path) -> tuple[Path, dict]:
    """A worktree of `revision` under `work` and the environment that makes its scripts import its own eelbert:
    its package laid out as installed (eelbert.modeling and eelbert.configs inside it), first on PYTHONPATH."""
    tree = work / f"revision-{revision}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision], check=True,
                       capture_output=True)
    package = work / f"revision-{revision}-package" / "eelbert"
    if not package.exists():
        shutil.copytree(tree / "eelbert", package)
        for name in ("modeling", "configs"):
            (package / name).symlink_to(tree / name)
    return tree, {"PYTHONPATH": str(package.parent)}


def remove_revision(revision: str, work: Path):
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / f"revision-{revision}")],
                   check=False, capture_output=True)
