"""The `eelbert` command: pretrain, demo, distill, new, size, convert, export, push, info."""

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

# Only the standard library and eelbert's light modules at the top: `eelbert --help` must not wait for torch and
# transformers (seconds); each command imports what it needs.
from .demo import DEFAULT_MODEL as DEMO_MODEL, FINE_TUNING as DEMO_FINE_TUNING, PER_PACKAGE as DEMO_PER_PACKAGE
from .heads import CLASSIFICATION_HEADS, HEADS, source_literal

EELBERT_PRESETS = source_literal("eelbert.presets", "EELBERT_PRESETS")  # eelbert.presets imports transformers


def _local_or_hub(name_or_path: str, what: str) -> str:
    """`name_or_path` if it is a folder; if it can only be a path, a clear error. A Hub id: offline, its folder in
    the local Hub cache or a clear error; online, it after checking that the Hub answers (huggingface_hub would
    retry for about a minute, then report a bare socket error)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name_or_path).is_dir():
        return name_or_path
    from .presets import local_or_installed

    if (shipped := local_or_installed(name_or_path)) != name_or_path:
        return shipped
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise FileNotFoundError(f"no {what} folder {name_or_path} (and it is not a Hub id)") from None
    if constants.HF_HUB_OFFLINE:
        try:
            return snapshot_download(name_or_path, local_files_only=True)
        except LocalEntryNotFoundError:
            raise FileNotFoundError(f"no {what} folder {name_or_path}, and as a Hub id it is not in the local Hub cache "
                                    f"({constants.HF_HUB_CACHE}); HF_HUB_OFFLINE is set, so nothing is downloaded") from None
    from .hub import check_hub_reachable

    try:
        check_hub_reachable()
    except ConnectionError as error:
        raise ConnectionError(f"{name_or_path} is not a {what} folder, and as a Hub id: {error}") from None
    return name_or_path


def _tokenizer(name_or_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_local_or_hub(name_or_path, "tokenizer"))


FILL_MASK_EXAMPLES = [
    "Returns a [MASK] of tensors.",
    "The model is saved to the [MASK] directory.",
    "This argument is [MASK] in a future version.",
]


def _pretrain(args):
    import hashlib

    from .demo import fill_mask_without_eelbert
    from .size import format_size_table, size_report
    from .training import pretraining, token_store

    started = time.time()
    if args.corpus:
        files, source = token_store.files_source(args.corpus)
        described = ", ".join(args.corpus)

        def texts():
            return token_store.file_lines(files)
    else:
        paragraphs = pretraining.package_documentation()
        source = {"texts_sha256": hashlib.sha256("\n".join(paragraphs).encode()).hexdigest()}
        described = "docstrings of the Python standard library and " + ", ".join(pretraining.DOCUMENTED_PACKAGES)

        def texts():
            return iter(paragraphs)
    if args.tokenizer:
        tokenizer = _tokenizer(args.tokenizer)
    else:
        tokenizer = pretraining.train_wordpiece(texts(), args.vocab_size)
        print(f"tokenizer: WordPiece, {len(tokenizer):,} tokens, trained on the corpus", flush=True)
    store = token_store.prepare_token_store(texts(), tokenizer, source)
    print(f"corpus: {store.meta['paragraphs']:,} paragraphs, {len(store):,} tokens ({described}); token store "
          f"{store.folder}", flush=True)
    print(f"pretraining {args.preset}: {args.steps} steps of {args.batch_size} x 128 tokens", flush=True)
    metrics = pretraining.pretrain(
        args.preset, tokenizer, store, args.output, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        save_steps=None, eval_steps=None, seed=args.seed, progress=sys.stderr.isatty(),
    )
    print(f"saved to {args.output}: masked-token accuracy {metrics['eval_masked_accuracy']:.1%}, "
          f"perplexity {metrics['perplexity']:.1f} on held-out text; {time.time() - started:.0f} s so far", flush=True)
    print(fill_mask_without_eelbert(args.output, args.examples or FILL_MASK_EXAMPLES), end="")
    print(format_size_table(size_report([args.preset], tokenizer=tokenizer)))
    print(f"done in {time.time() - started:.0f} s. Your own text: eelbert pretrain --corpus FILES_OR_FOLDERS --output FOLDER")


def _demo(args):
    from .demo import run

    run(args.model, per_package=args.per_package, seed=args.seed, num_train_epochs=args.epochs)


def _distill(args):
    from .presets import local_or_installed
    from .training import distillation

    started = time.time()
    teacher = _local_or_hub(args.teacher, "teacher")
    args.preset = local_or_installed(args.preset)
    distillation.is_new_student(args.preset)  # an unknown student fails before the corpus is read
    sentences = distillation.corpus_sentences(args.corpus, limit=args.sentences, seed=args.seed,
                                              sentence_per_line=args.sentence_per_line)
    print(f"corpus: {len(sentences):,} sentences ({', '.join(args.corpus)})", flush=True)
    tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None
    metrics = distillation.distill(
        args.preset, teacher, sentences, args.output, tokenizer=tokenizer, reduction=args.reduction, cache=args.cache,
        seed=args.seed, progress=sys.stderr.isatty(), num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, similarity_weight=args.similarity_weight,
        float16_storage=args.float16,
        config_overrides={"hidden_dropout_prob": args.dropout, "attention_probs_dropout_prob": args.dropout},
    )
    print(f"saved to {args.output} (a sentence-transformers model): mean cosine with the teacher's targets on "
          f"{metrics['validation_sentences']:,} held-out sentences {metrics['validation_cosine_before']:.3f} before, "
          f"{metrics['validation_cosine_after']:.3f} after; {time.time() - started:.0f} s")


def _new(args):
    from .modeling import modeling_eelbert
    from .presets import preset_config
    from .size import weights_bytes

    if args.num_labels is not None and args.head not in CLASSIFICATION_HEADS:
        raise ValueError(f"--num-labels needs a classification head (--head {' or '.join(CLASSIFICATION_HEADS)}), "
                         f"not {args.head}")
    labels = {} if args.num_labels is None else {"num_labels": args.num_labels}
    tokenizer = _tokenizer(args.tokenizer)
    config = preset_config(args.preset, tokenizer=tokenizer, **labels)
    model = getattr(modeling_eelbert, HEADS[args.head])(config)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    print(f"saved {args.preset} ({HEADS[args.head]}, {config.vocab_size:,} tokens) to {args.output}: "
          f"model.safetensors {weights_bytes(args.output):,} bytes")


def _size(args):
    from .size import format_size_table, size_report

    tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None
    print(format_size_table(size_report(args.presets, tokenizer=tokenizer)))


def _convert(args):
    from .convert import convert_bert
    from .size import weights_bytes

    source = _local_or_hub(args.source, "checkpoint")
    tokenizer = _local_or_hub(args.tokenizer, "tokenizer") if args.tokenizer else None
    model, tokenizer, bert_bytes = convert_bert(source, tokenizer=tokenizer)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    after = weights_bytes(args.output)
    print(f"{args.source}: {bert_bytes:,} bytes of BERT weights -> {args.output}: {type(model).__name__}, "
          f"model.safetensors {after:,} bytes ({after / bert_bytes:.1%})")


def _export(args):
    import torch
    import transformers

    from . import artifacts
    from .modeling.configuration_eelbert import auto_class_name
    from .size import weights_bytes

    config = artifacts.checkpoint_config(args.checkpoint)
    if args.onnx_input is not None and args.format != "onnx":
        raise ValueError(f"--onnx-input is for the onnx format, not {args.format}")
    model = getattr(transformers, auto_class_name(config)).from_pretrained(args.checkpoint)
    output = Path(args.output)
    if args.format in ("fp16", "bf16"):
        model.to(torch.float16 if args.format == "fp16" else torch.bfloat16).save_pretrained(output)
    elif args.format == "int8":
        artifacts.save_int8(model, output)
    else:
        artifacts.export_onnx(model, output, inputs=args.onnx_input or "input_ids")
    if (Path(args.checkpoint) / "tokenizer_config.json").is_file():
        _tokenizer(args.checkpoint).save_pretrained(output)
    if args.format == "onnx":  # both graphs, vocabulary included
        sizes = ", ".join(f"{name} {(output / name).stat().st_size:,} bytes"
                          for name in (artifacts.ONNX_GRAPH, artifacts.ONNX_QUANTIZED_GRAPH))
    else:
        sizes = f"{weights_bytes(output):,} bytes of weights"
    print(f"{args.format}: {output} ({sizes}; {args.checkpoint}: {weights_bytes(args.checkpoint):,})")


def _push(args):
    from .hub import push_to_hub

    sha = push_to_hub(args.checkpoint, args.repo_id, results=args.results, private=args.private, license=args.license)
    print(f"pushed {args.checkpoint} to {args.repo_id} at revision {sha}")


def _info(args):
    from .artifacts import checkpoint_config

    folder = Path(args.checkpoint)
    config = checkpoint_config(folder)  # refuses hand-edited embedding fields (embedding_fingerprint)
    config.check_tokenizer(folder)
    info = {
        "architecture": (config.architectures or ["?"])[0],
        "preset": config.preset,
        "layers / hidden / heads / ffn": f"{config.num_hidden_layers} / {config.hidden_size} / "
        f"{config.num_attention_heads} / {config.intermediate_size}",
        "hash": f"{config.hash_function}, seed {config.hash_seed}, n-grams 1-{config.max_ngram_order}, "
        f"{config.embedding_size} dims, hash_version {config.hash_version}"
        + (f", {config.ngram_buckets:,} learned n-gram buckets" if config.ngram_buckets else ""),
        # An ONNX folder's config.json leaves the tokens to the graph and tokenizer.json.
        "vocabulary": f"{config.vocab_size:,} tokens" + (f" ({len(config.special_tokens):,} special)" if config.vocab else ""),
        "masked-LM decoder": config.mlm_decoder,
        "files": {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()},
    }
    print(json.dumps(info, indent=2, ensure_ascii=False))


def build_parser() -> argparse.ArgumentParser:
    # --debug goes before or after the command. Its default is SUPPRESS (absent unless given: main reads it with
    # getattr), or the command's default would overwrite a --debug given before the command.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, print the full traceback, not just one line")
    parser = argparse.ArgumentParser(prog="eelbert", description="EELBERT: tiny BERTs with hash embeddings.",
                                     parents=[debug])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help):
        return commands.add_parser(name, help=help, parents=[debug])

    pretrain = command(
        "pretrain", "train a WordPiece tokenizer and pretrain an EELBERT masked LM on text, reload it, fill masks"
    )
    pretrain.add_argument("--corpus", nargs="+", help="text files or folders of .txt files, one paragraph per line "
                          "(default: the docstrings of the standard library and of installed dependencies)")
    pretrain.add_argument("--output", default="my-uno-eelbert", help="folder to write (default my-uno-eelbert)")
    pretrain.add_argument("--preset", choices=EELBERT_PRESETS, default="uno-eelbert")
    pretrain.add_argument("--tokenizer", help="use this tokenizer (folder or Hub id) instead of training one")
    pretrain.add_argument("--vocab-size", type=int, default=8000, help="of the trained tokenizer")
    pretrain.add_argument("--steps", type=int, default=300)
    pretrain.add_argument("--batch-size", type=int, default=32)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--examples", nargs="+", help="fill-mask sentences, with [MASK]")
    pretrain.set_defaults(run=_pretrain)

    demo = command("demo", "what a pretrained EELBERT is good for: fine-tuned against from scratch on a task from "
                   "installed documentation, its size, fill-mask without eelbert, a typo (offline, minutes)")
    demo.add_argument("--model", default=DEMO_MODEL,
                      help=f"masked-LM EELBERT checkpoint folder, or the name of one installed with eelbert "
                      f"(default {DEMO_MODEL})")
    demo.add_argument("--per-package", type=int, default=DEMO_PER_PACKAGE, help="paragraphs of each package's "
                      f"documentation, a fifth of them held out (default {DEMO_PER_PACKAGE})")
    demo.add_argument("--epochs", type=float, default=DEMO_FINE_TUNING["num_train_epochs"])
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    distill = command("distill", "distill a sentence-transformers teacher's embeddings into an EELBERT (a "
                      "sentence-transformers folder)")
    distill.add_argument("teacher", help="sentence-transformers model folder or Hub id")
    distill.add_argument("--corpus", nargs="+", required=True,
                         help="text files or folders of .txt files, one paragraph per line (split into sentences)")
    distill.add_argument("--output", required=True, help="folder to write")
    distill.add_argument("--preset", default="uno-eelbert",
                         help=f"the student: a preset ({', '.join(EELBERT_PRESETS)}, or a BERT baseline such as "
                         "bert-tiny) or a checkpoint folder (default uno-eelbert)")
    distill.add_argument("--tokenizer", help="a new student's tokenizer, folder or Hub id (default: the teacher's)")
    distill.add_argument("--sentences", type=int, default=100_000, help="at most this many (default 100,000)")
    distill.add_argument("--sentence-per-line", action="store_true",
                         help="the corpus is a prepared list, one sentence a line: used as it is, in its order")
    distill.add_argument("--reduction", choices=["pca", "none"], default="pca",
                         help="targets: the teacher's embeddings by PCA to the student's size (default: the model is "
                         "the transformer and mean pooling only, so transformers.js and the feature-extraction "
                         "pipeline give its embeddings), or as they are through a trained Dense layer kept in the model")
    # Defaults: the settings measured best for UNO-EELBERT from all-MiniLM-L6-v2 (README, Sentence embeddings).
    distill.add_argument("--epochs", type=float, default=5.0)
    distill.add_argument("--lr", type=float, default=2e-3)
    distill.add_argument("--batch-size", type=int, default=128)
    distill.add_argument("--dropout", type=float, default=0.0,
                         help="hidden and attention dropout of the student (default 0: it underfits the teacher)")
    distill.add_argument("--similarity-weight", type=float, default=0.0,
                         help="weight of the in-batch similarity-matrix term of the loss (default 0)")
    distill.add_argument("--float16", action="store_true",
                         help="store the transformer's weights in float16 (half the bytes; loads as float32)")
    distill.add_argument("--cache", help="folder of teacher embeddings (default $EELBERT_CACHE/teacher-embeddings)")
    distill.add_argument("--seed", type=int, default=0)
    distill.set_defaults(run=_distill)

    new = command("new", "a fresh model from a preset and a tokenizer, saved to a folder")
    new.add_argument("preset", choices=EELBERT_PRESETS)
    new.add_argument("output", help="folder to write")
    new.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub id")
    new.add_argument("--head", choices=sorted(HEADS), default="masked-lm")
    new.add_argument("--num-labels", type=int,
                     help=f"number of classes, for the classification heads ({', '.join(CLASSIFICATION_HEADS)}; default 2)")
    new.set_defaults(run=_new)

    size = command("size", "parameters and checkpoint bytes of presets against their BERT baselines")
    size.add_argument("--presets", nargs="+", default=list(EELBERT_PRESETS), choices=EELBERT_PRESETS)
    size.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: a 30,522-token vocabulary)")
    size.set_defaults(run=_size)

    convert = command("convert", "a BERT checkpoint as EELBERT (encoder and heads kept, word table dropped)")
    convert.add_argument("source", help="BERT checkpoint folder or Hub id")
    convert.add_argument("output", help="folder to write")
    convert.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the checkpoint's)")
    convert.set_defaults(run=_convert)

    export = command("export", "a deployment artifact: fp16, bf16, int8 or onnx")
    export.add_argument("format", choices=["fp16", "bf16", "int8", "onnx"])
    export.add_argument("checkpoint", help="EELBERT checkpoint folder, or the name of one installed with eelbert")
    export.add_argument("output", help="folder to write")
    export.add_argument("--onnx-input", choices=["input_ids", "inputs_embeds"],
                        help="the ONNX graph's first input (default input_ids: the hash embedding is in the graph)")
    export.set_defaults(run=_export)

    push = command("push", "upload a checkpoint folder with a generated model card")
    push.add_argument("checkpoint", help="EELBERT checkpoint folder (with its tokenizer)")
    push.add_argument("repo_id", help="user/name on the Hub")
    push.add_argument("--results", help="eval results JSON for the card's model-index")
    push.add_argument("--private", action="store_true")
    push.add_argument("--license", default="apache-2.0")
    push.set_defaults(run=_push)

    info = command("info", "what a checkpoint is: preset, hash settings, vocabulary, bytes")
    info.add_argument("checkpoint", help="EELBERT checkpoint folder, or the name of one installed with eelbert")
    info.set_defaults(run=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "checkpoint", None):  # a model installed with the package, by name
        from .presets import local_or_installed

        args.checkpoint = local_or_installed(args.checkpoint)
    debug = getattr(args, "debug", False)
    from transformers.utils import logging

    from . import register_auto_classes

    logging.disable_progress_bar()  # per-file progress bars would drown the output
    logging.set_verbosity_error()
    try:
        register_auto_classes()  # not done by `import eelbert` in this process: see eelbert/__init__.py
        args.run(args)
    except Exception as error:  # one clear line; --debug shows the traceback
        if debug:
            traceback.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        hint = "" if debug else " (--debug shows the traceback)"
        print(f"eelbert {args.command}: error: {message}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
