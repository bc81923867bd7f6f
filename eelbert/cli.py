"""The `eelbert` command: pretrain, new, size, convert, export, push, info."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .presets import EELBERT_PRESETS

HEADS = {
    "encoder": "EelbertModel",
    "masked-lm": "EelbertForMaskedLM",
    "sequence-classification": "EelbertForSequenceClassification",
    "token-classification": "EelbertForTokenClassification",
    "question-answering": "EelbertForQuestionAnswering",
    "multiple-choice": "EelbertForMultipleChoice",
}


def _tokenizer(name_or_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def _weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) + sum(f.stat().st_size for f in folder.glob("*.onnx"))


def _eelbert_config(checkpoint):
    """The config of a local EELBERT checkpoint folder, or a clear error."""
    from transformers import AutoConfig

    import eelbert  # noqa: F401  (registers EelbertConfig with AutoConfig)

    folder = Path(checkpoint)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "eelbert":
        raise ValueError(f"{folder} is a {config.model_type} checkpoint, not EELBERT (see `eelbert convert`)")
    return config


# Run in a fresh process where `import eelbert` fails: the saved folder alone must load (remote code).
RELOAD_AND_FILL_MASK = """
import sys
sys.modules["eelbert"] = None
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
from transformers.utils import logging
logging.set_verbosity_error()
logging.disable_progress_bar()
folder, sentences = sys.argv[1], sys.argv[2:]
model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
fill_mask = pipeline("fill-mask", model=model, tokenizer=tokenizer)
print(f"reloaded {type(model).__name__} from {folder} in a fresh process (trust_remote_code=True, no eelbert package)")
for sentence in sentences:
    sentence = sentence.replace("[MASK]", tokenizer.mask_token)
    guesses = ", ".join(f"{p['token_str']} ({p['score']:.2f})" for p in fill_mask(sentence, top_k=3))
    print(f"  {sentence}  ->  {guesses}")
"""
FILL_MASK_EXAMPLES = [
    "Returns a [MASK] of tensors.",
    "The model is saved to the [MASK] directory.",
    "This argument is [MASK] in a future version.",
]


def _pretrain(args):
    import hashlib

    from transformers import AutoTokenizer

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
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
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
    examples = args.examples or FILL_MASK_EXAMPLES
    reload = subprocess.run([sys.executable, "-c", RELOAD_AND_FILL_MASK, str(args.output), *examples],
                            capture_output=True, text=True)
    if reload.returncode:
        raise RuntimeError(f"reloading {args.output} in a fresh process failed: {reload.stderr.strip()[-2000:]}")
    print(reload.stdout, end="")
    print(format_size_table(size_report([args.preset], tokenizer=tokenizer)))
    print(f"done in {time.time() - started:.0f} s. Your own text: eelbert pretrain --corpus FILES_OR_FOLDERS --output FOLDER")


def _new(args):
    import eelbert

    tokenizer = _tokenizer(args.tokenizer)
    config = eelbert.EelbertConfig.from_preset(args.preset, tokenizer=tokenizer, num_labels=args.num_labels)
    model = getattr(eelbert, HEADS[args.head])(config)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    print(f"saved {args.preset} ({HEADS[args.head]}, {config.vocab_size:,} tokens) to {args.output}: "
          f"model.safetensors {_weights_bytes(Path(args.output)):,} bytes")


def _size(args):
    from .size import format_size_table, size_report

    tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None
    print(format_size_table(size_report(args.presets, tokenizer=tokenizer)))


def _convert(args):
    from .convert import convert_bert

    model, tokenizer, bert_bytes = convert_bert(args.source, tokenizer=args.tokenizer)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    after = _weights_bytes(Path(args.output))
    print(f"{args.source}: {bert_bytes:,} bytes of BERT weights -> {args.output}: {type(model).__name__}, "
          f"model.safetensors {after:,} bytes ({after / bert_bytes:.1%})")


def _export(args):
    import torch
    import transformers

    from . import artifacts
    from .modeling.configuration_eelbert import auto_class_name

    config = _eelbert_config(args.checkpoint)
    model = getattr(transformers, auto_class_name(config)).from_pretrained(args.checkpoint)
    output = Path(args.output)
    if args.format in ("fp16", "bf16"):
        model.to(torch.float16 if args.format == "fp16" else torch.bfloat16).save_pretrained(output)
    elif args.format == "int8":
        artifacts.save_int8(model, output)
    else:
        artifacts.export_onnx(model, output)
    if (Path(args.checkpoint) / "tokenizer_config.json").is_file():
        _tokenizer(args.checkpoint).save_pretrained(output)
    print(f"{args.format}: {output} ({_weights_bytes(output):,} bytes of weights; "
          f"{args.checkpoint}: {_weights_bytes(Path(args.checkpoint)):,})")


def _push(args):
    from .hub import push_to_hub

    sha = push_to_hub(args.checkpoint, args.repo_id, results=args.results, private=args.private, license=args.license)
    print(f"pushed {args.checkpoint} to {args.repo_id} at revision {sha}")


def _info(args):
    folder = Path(args.checkpoint)
    config = _eelbert_config(folder)  # refuses hand-edited embedding fields (embedding_fingerprint)
    config.check_tokenizer(folder)
    info = {
        "architecture": (config.architectures or ["?"])[0],
        "preset": config.preset,
        "layers / hidden / heads / ffn": f"{config.num_hidden_layers} / {config.hidden_size} / "
        f"{config.num_attention_heads} / {config.intermediate_size}",
        "hash": f"{config.hash_function}, seed {config.hash_seed}, n-grams 1-{config.max_ngram_order}, "
        f"{config.embedding_size} dims, hash_version {config.hash_version}",
        "vocabulary": f"{config.vocab_size:,} tokens ({len(config.special_tokens):,} special)",
        "masked-LM decoder": config.mlm_decoder,
        "files": {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.is_file()},
    }
    print(json.dumps(info, indent=2, ensure_ascii=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eelbert", description="EELBERT: tiny BERTs with hash embeddings.")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser(
        "pretrain", help="train a WordPiece tokenizer and pretrain an EELBERT masked LM on text, reload it, fill masks"
    )
    pretrain.add_argument("--corpus", nargs="+", help="text files or folders of .txt files, one paragraph per line "
                          "(default: the docstrings of the standard library and of installed dependencies)")
    pretrain.add_argument("--output", default="uno-eelbert-pretrained", help="folder to write")
    pretrain.add_argument("--preset", choices=EELBERT_PRESETS, default="uno-eelbert")
    pretrain.add_argument("--tokenizer", help="use this tokenizer (folder or Hub id) instead of training one")
    pretrain.add_argument("--vocab-size", type=int, default=8000, help="of the trained tokenizer")
    pretrain.add_argument("--steps", type=int, default=300)
    pretrain.add_argument("--batch-size", type=int, default=32)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--examples", nargs="+", help="fill-mask sentences, with [MASK]")
    pretrain.set_defaults(run=_pretrain)

    new = commands.add_parser("new", help="a fresh model from a preset and a tokenizer, saved to a folder")
    new.add_argument("preset", choices=EELBERT_PRESETS)
    new.add_argument("output", help="folder to write")
    new.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub id")
    new.add_argument("--head", choices=sorted(HEADS), default="masked-lm")
    new.add_argument("--num-labels", type=int, default=2, help="for classification heads")
    new.set_defaults(run=_new)

    size = commands.add_parser("size", help="parameters and checkpoint bytes of presets against their BERT baselines")
    size.add_argument("--presets", nargs="+", default=list(EELBERT_PRESETS), choices=EELBERT_PRESETS)
    size.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: a 30,522-token vocabulary)")
    size.set_defaults(run=_size)

    convert = commands.add_parser("convert", help="a BERT checkpoint as EELBERT (encoder and heads kept, word table dropped)")
    convert.add_argument("source", help="BERT checkpoint folder or Hub id")
    convert.add_argument("output", help="folder to write")
    convert.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the checkpoint's)")
    convert.set_defaults(run=_convert)

    export = commands.add_parser("export", help="a deployment artifact: fp16, bf16, int8 or onnx")
    export.add_argument("format", choices=["fp16", "bf16", "int8", "onnx"])
    export.add_argument("checkpoint", help="EELBERT checkpoint folder")
    export.add_argument("output", help="folder to write")
    export.set_defaults(run=_export)

    push = commands.add_parser("push", help="upload a checkpoint folder with a generated model card")
    push.add_argument("checkpoint", help="EELBERT checkpoint folder (with its tokenizer)")
    push.add_argument("repo_id", help="user/name on the Hub")
    push.add_argument("--results", help="eval results JSON for the card's model-index")
    push.add_argument("--private", action="store_true")
    push.add_argument("--license", default="apache-2.0")
    push.set_defaults(run=_push)

    info = commands.add_parser("info", help="what a checkpoint is: preset, hash settings, vocabulary, bytes")
    info.add_argument("checkpoint", help="EELBERT checkpoint folder")
    info.set_defaults(run=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from transformers.utils import logging

    logging.disable_progress_bar()  # per-file progress bars would drown the output
    logging.set_verbosity_error()
    try:
        args.run(args)
    except Exception as error:  # the command line shows one clear line, not a traceback
        message = " ".join(str(error).split())
        print(f"eelbert {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
