"""Peak memory of masked-LM pretraining as the corpus grows: the token store keeps it flat.

    python benchmarks/bench_data_pipeline.py                       # ../shared/data/corpus and 10 copies of it
    python benchmarks/bench_data_pipeline.py --baseline-rev 2e38303  # also the code before the token store

For the shared corpus (65.5 MB) and a corpus --copies times larger (copies of its files, written to a temporary
folder), runs examples/run_mlm.py in a fresh process with an empty token-store cache: the first run tokenizes the
text into the store and trains --steps steps; a second run reuses the store. Each run's peak resident memory
(ru_maxrss of the process) is printed with its ratio to the shared corpus's. With --baseline-rev, the same first
run is made with run_mlm.py from a git worktree of that revision (the shared corpus only: before the store, memory
grew with the corpus). A last run reuses the shared corpus's store with glibc's MALLOC_MMAP_THRESHOLD_ set (the
memory the step frees goes back to the system instead of staying resident; bench_pretraining.py --env measures
what that costs in speed). Data and stores go to --work (a temporary folder by default), never into the repository.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from revisions import earlier_revision, remove_revision

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def peak_rss_mb(command, env_extra, log) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `command` run in a child of a fresh process, so only its own peak counts."""
    measure = ("import resource, subprocess, sys\n"
               "code = subprocess.call(sys.argv[1:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.exit(code)")
    started = time.time()
    with open(log, "w") as out:
        result = subprocess.run([sys.executable, "-c", measure, *command], stdout=subprocess.PIPE, stderr=out, text=True,
                                env={**os.environ, **env_extra})
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed: see {log}")
    return int(result.stdout.strip().splitlines()[-1]) / 1024, time.time() - started


def larger_corpus(corpus: Path, copies: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file in sorted(corpus.rglob("*.txt")):
        for i in range(copies):
            target = folder / f"{i}-{file.name}"
            if not target.exists():
                shutil.copyfile(file, target)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "vocab" / "bert-base-uncased")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--model", default="bert-tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--malloc-mmap-threshold", type=int, default=1 << 20,
                        help="also reuse the shared corpus's store with glibc's MALLOC_MMAP_THRESHOLD_ at this many "
                        "bytes (freed blocks above it go back to the system at once; 0: skip)")
    parser.add_argument("--baseline-rev", help="also measure run_mlm.py of this git revision (shared corpus only)")
    parser.add_argument("--work", type=Path, help="where data, stores and logs go (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-data-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    corpora = {"shared corpus": args.corpus,
               f"{args.copies}x the shared corpus": larger_corpus(args.corpus, args.copies, work / "larger")}
    sizes = {name: sum(f.stat().st_size for f in path.rglob("*.txt")) for name, path in corpora.items()}

    def run_mlm(script, corpus, output, cache):
        return [sys.executable, str(script), "--model", args.model, "--tokenizer", str(args.tokenizer), "--train",
                str(corpus), "--output", str(output), "--max-steps", str(args.steps), "--batch-size",
                str(args.batch_size), "--save-steps", str(args.steps), "--eval-steps", str(args.steps)], {"EELBERT_CACHE": str(cache)}

    rows = []
    for i, (name, corpus) in enumerate(corpora.items()):
        cache = work / f"cache-{i}"
        shutil.rmtree(cache, ignore_errors=True)
        for run in ("tokenize into the store + train", "reuse the store + train"):
            command, env = run_mlm(REPO / "examples" / "run_mlm.py", corpus, work / f"out-{i}-{len(rows)}", cache)
            mb, seconds = peak_rss_mb(command, env, work / f"run-{len(rows)}.log")
            rows.append((name, sizes[name], "this code", run, mb, seconds))
            print(f"{name}: {run}: peak {mb:,.0f} MB, {seconds:,.0f} s", flush=True)
        store_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        print(f"{name}: token store {store_bytes / 1e6:,.1f} MB for {sizes[name] / 1e6:,.1f} MB of text", flush=True)
    if args.malloc_mmap_threshold:
        command, env = run_mlm(REPO / "examples" / "run_mlm.py", args.corpus, work / "out-mmap", work / "cache-0")
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
        mb, seconds = peak_rss_mb(command, env, work / "run-mmap.log")
        run = f"reuse the store + train, MALLOC_MMAP_THRESHOLD_={args.malloc_mmap_threshold}"
        rows.append(("shared corpus", sizes["shared corpus"], "this code", run, mb, seconds))
        print(f"shared corpus: {run}: peak {mb:,.0f} MB, {seconds:,.0f} s", flush=True)
    if args.baseline_rev:
        tree, env_of_revision = earlier_revision(args.baseline_rev, work)
        command, env = run_mlm(tree / "examples" / "run_mlm.py", args.corpus, work / "out-baseline", work / "cache-baseline")
        mb, seconds = peak_rss_mb(command, {**env, **env_of_revision}, work / "run-baseline.log")
        rows.append(("shared corpus", sizes["shared corpus"], f"before ({args.baseline_rev})", "tokenize + train", mb, seconds))
        remove_revision(args.baseline_rev, work)

    reference = rows[0][4]
    print(f"\n{args.model}, {args.steps} steps of {args.batch_size} x 128 tokens, one process\n")
    # Seconds are in results.json, not here: the runs are minutes apart on a shared machine (bench_pretraining.py
    # measures speed).
    print("| corpus | text | code | run | peak RSS | vs shared corpus, first run |")
    print("| --- | ---: | --- | --- | ---: | ---: |")
    for name, size, code, run, mb, _ in rows:
        print(f"| {name} | {size / 1e6:,.0f} MB | {code} | {run} | {mb:,.0f} MB | {mb / reference:.2f}x |")
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nresults and logs in {work}")


if __name__ == "__main__":
    main()
