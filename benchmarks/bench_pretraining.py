"""Masked-LM pretraining throughput (tokens/s) of bert-tiny, eelbert-tiny and uno-eelbert, against an earlier revision.

    python benchmarks/bench_pretraining.py --baseline-rev 05facc4      # ~25 min on 2 cores

Every model is pretrained with examples/run_mlm.py under identical settings (the BERT uncased tokenizer, 128-token
blocks, a global batch of --batch-size, lr 1e-3) for --steps steps, in two layouts: one process with 2 threads, and
2 processes x 1 thread under `accelerate launch --multi_gpu --num_processes 2` (gloo; half the batch each). Tokens/s
is steps x global batch x 128 over the Trainer's train_runtime (the training loop, not start-up or the final
validation), so preparation differences (tokenizing, loading) do not count. Each run is repeated with run_mlm.py
of --baseline-rev (a git worktree, its own package first on the path) in the same invocation, runs alternating, so
both see the same machine. Prints tokens/s, the speed-up over the baseline, and the 2-process scaling efficiency
(tokens/s of 2 x 1 over 1 x 2).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from revisions import earlier_revision, remove_revision

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ACCELERATE = Path(sys.executable).parent / "accelerate"
LAYOUTS = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}


def run(script: Path, model: str, processes: int, threads: int, args, output: Path, env_extra: dict, extra=()) -> float:
    """Tokens per second of one pretraining run."""
    options = [*extra, "--model", model, "--tokenizer", str(args.tokenizer), "--train", str(args.corpus), "--output", str(output),
               "--max-steps", str(args.steps), "--batch-size", str(args.batch_size // processes),
               "--save-steps", str(10 * args.steps), "--eval-steps", str(10 * args.steps),
               "--validation-fraction", "0.01", "--learning-rate", "1e-3"]
    if processes == 1:
        command = [sys.executable, str(script), *options]
    else:
        command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *options]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", **env_extra}
    log = output.with_suffix(".log")
    with open(log, "w") as out:
        if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=output.parent).returncode:
            raise SystemExit(f"{' '.join(command)} failed: see {log}")
    runtime = json.loads((output / "train_results.json").read_text())["train_runtime"]
    return args.steps * args.batch_size * 128 / runtime


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-rev", required=True, help="the revision to compare with (e.g. the commit before)")
    parser.add_argument("--models", nargs="+", default=["bert-tiny", "eelbert-tiny", "uno-eelbert"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64, help="global: each of 2 processes takes half")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (median reported)")
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "registry" / "brown_corpus.txt")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "vocab" / "bert-base-uncased")
    parser.add_argument("--options", default="", help="more run_mlm.py options for this code's runs only, to measure "
                        "what one pays (e.g. \"--dataloader-workers 1\" or \"--torch-compile\")")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for this code's runs only (repeatable)")
    parser.add_argument("--work", type=Path, help="where runs and logs go (default: a temporary folder)")
    args = parser.parse_args()
    if any("=" not in setting for setting in args.env):
        parser.error(f"--env takes NAME=VALUE, got {args.env}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-pretraining-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["EELBERT_CACHE"] = str(work / "cache")  # this code's token store, made by the first run, reused after
    tree, env_of_revision = earlier_revision(args.baseline_rev, work)
    scripts = {"this code": (REPO / "examples" / "run_mlm.py", dict(s.split("=", 1) for s in args.env), args.options.split()),
               f"before ({args.baseline_rev})": (tree / "examples" / "run_mlm.py", env_of_revision, [])}
    speeds, runs = {}, 0
    for _ in range(args.repeats):
        for model in args.models:
            for layout, (processes, threads) in LAYOUTS.items():
                for code, (script, env, extra) in scripts.items():
                    runs += 1
                    output = work / f"run-{runs}"
                    tokens_per_second = run(script, model, processes, threads, args, output, env, extra)
                    speeds.setdefault((model, layout, code), []).append(tokens_per_second)
                    print(f"{model}, {layout}, {code}: {tokens_per_second:,.0f} tokens/s", flush=True)
    remove_revision(args.baseline_rev, work)

    before = f"before ({args.baseline_rev})"
    median = {key: statistics.median(values) for key, values in speeds.items()}
    print(f"\n{args.steps} steps of {args.batch_size} x 128 tokens (global), {args.corpus.name}; median of {args.repeats}"
          + "".join(f"; this code with {x}" for x in (args.options, " ".join(args.env)) if x) + "\n")
    print("| model | layout | tokens/s | before | speed-up | 2-process scaling | before |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models:
        for layout in LAYOUTS:
            now, then = median[(model, layout, "this code")], median[(model, layout, before)]
            scaling = {code: median[(model, "2 processes x 1 thread", code)] / median[(model, "1 process x 2 threads", code)]
                       for code in ("this code", before)}
            cells = (f"{scaling['this code']:.2f} | {scaling[before]:.2f}" if layout.startswith("2") else " | ")
            print(f"| {model} | {layout} | {now:,.0f} | {then:,.0f} | {now / then:.2f}x | {cells} |")
    (work / "results.json").write_text(json.dumps({" / ".join(k): v for k, v in speeds.items()}, indent=1))
    print(f"\nruns and logs in {work}")


if __name__ == "__main__":
    main()
