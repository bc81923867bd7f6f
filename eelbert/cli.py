"""The `eelbert` command."""

import argparse
import sys

from .presets import EELBERT_PRESETS


def _size(args):
    from transformers import AutoTokenizer

    from .size import format_size_table, size_report

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else None
    print(format_size_table(size_report(args.presets, tokenizer=tokenizer)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="eelbert", description="EELBERT: tiny BERTs with hash embeddings.")
    commands = parser.add_subparsers(dest="command", required=True)
    size = commands.add_parser("size", help="parameters and checkpoint bytes of presets against their BERT baselines")
    size.add_argument("--presets", nargs="+", default=list(EELBERT_PRESETS), choices=EELBERT_PRESETS)
    size.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: a 30,522-token vocabulary)")
    size.set_defaults(run=_size)
    args = parser.parse_args(argv)
    from transformers.utils import logging

    logging.disable_progress_bar()  # per-file "Writing model shards" bars would drown the tables
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        print(f"eelbert {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
