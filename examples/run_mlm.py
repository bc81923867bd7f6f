"""Masked-LM pretraining of EELBERT (or a plain-BERT baseline) with the Hugging Face Trainer.

    python examples/run_mlm.py --model uno-eelbert --tokenizer bert-base-uncased --train corpus/ --output out
    python examples/run_mlm.py ... --dataset wikimedia/wikipedia --dataset-config 20231101.en   # a datasets corpus
    accelerate launch --multi_gpu --num_processes 2 examples/run_mlm.py ...   # several processes (CPU: gloo) or GPUs

The text (files or folders of .txt files, one paragraph per line, or a Hugging Face dataset streamed from the Hub
or a local folder) is tokenized once into a token store on disk (--token-store, default under ~/.cache/eelbert),
reused by every later run and every process; a deterministic held-out share of its blocks measures masked-token
accuracy and perplexity. The output folder (and every checkpoint) loads with
`AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)`. Training scores only the masked positions
(see eelbert/training/pretraining.py), for EELBERT and BERT alike.
"""

import argparse
import sys

from eelbert.training import pretraining, token_store


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="uno-eelbert", help="preset, preset JSON or checkpoint folder/Hub id")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub id")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--train", nargs="+", help="text files or folders of .txt files, one paragraph per line")
    text.add_argument("--dataset", help="a Hugging Face dataset (Hub id or local folder), streamed")
    parser.add_argument("--dataset-config", help="the dataset's configuration name")
    parser.add_argument("--dataset-split", default="train")
    parser.add_argument("--text-column", default="text", help="the dataset's text column")
    parser.add_argument("--token-store", help="folder of the token store (default: under ~/.cache/eelbert, keyed by "
                        "the text and the tokenizer)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--validation-fraction", type=float, default=0.02)
    parser.add_argument("--max-validation-blocks", type=int, default=10_000, help="at most this many held-out blocks")
    parser.add_argument("--whole-word-masking", action="store_true")
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--batch-size", type=int, default=64, help="per process and step")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=None, help="warm-up steps (>= 1) or share of the steps (< 1); "
                        "default min(500, steps / 10)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--eval-steps", type=int, default=500)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (pays on GPUs, not on CPUs "
                        "without AMX/AVX-512 BF16)")
    parser.add_argument("--torch-compile", action="store_true", help="compile the model with torch.compile")
    parser.add_argument("--dataloader-workers", type=int, default=0, help="processes that prepare batches")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    args = parser.parse_args(argv)
    if args.dataset is None and (args.dataset_config or args.dataset_split != "train" or args.text_column != "text"):
        parser.error("--dataset-config, --dataset-split and --text-column apply to --dataset only")
    for name in ("block_size", "batch_size", "gradient_accumulation_steps", "max_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def open_token_store(args, tokenizer):
    """The token store of the run's text, made by the first process while the others wait, then opened by all."""
    from accelerate import PartialState

    with PartialState().main_process_first():
        if args.train:
            return token_store.files_token_store(args.train, tokenizer, folder=args.token_store)
        source = {"dataset": args.dataset, "config": args.dataset_config, "split": args.dataset_split,
                  "column": args.text_column}
        lines = token_store.dataset_lines(args.dataset, args.dataset_split, args.text_column, args.dataset_config)
        return token_store.prepare_token_store(lines, tokenizer, source, folder=args.token_store)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    except OSError as error:
        sys.exit(f"run_mlm.py: error: --tokenizer {args.tokenizer}: {str(error).splitlines()[0]}")
    try:
        store = open_token_store(args, tokenizer)
    except (FileNotFoundError, ValueError, ImportError) as error:
        sys.exit(f"run_mlm.py: error: {'--train' if args.train else '--dataset'}: {error}")
    warmup = {}
    if args.warmup is not None:
        warmup = {"warmup_steps": int(args.warmup if args.warmup >= 1 else args.warmup * args.max_steps)}
    return pretraining.pretrain(
        args.model, tokenizer, store, args.output,
        block_size=args.block_size, validation_fraction=args.validation_fraction,
        max_validation_blocks=args.max_validation_blocks,
        whole_word_masking=args.whole_word_masking, mlm_probability=args.mlm_probability, seed=args.seed,
        resume=args.resume, per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
        gradient_accumulation_steps=args.gradient_accumulation_steps, weight_decay=args.weight_decay,
        max_steps=args.max_steps, save_steps=args.save_steps, eval_steps=args.eval_steps, bf16=args.bf16,
        torch_compile=args.torch_compile, dataloader_num_workers=args.dataloader_workers, **warmup,
    )


if __name__ == "__main__":
    main()
