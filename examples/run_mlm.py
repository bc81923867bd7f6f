"""Masked-LM pretraining of EELBERT (or a plain-BERT baseline) with the Hugging Face Trainer.

    python examples/run_mlm.py --model uno-eelbert --tokenizer bert-base-uncased --train corpus/ --output out
    accelerate launch --num_processes 2 examples/run_mlm.py ...      # the same script on several processes/GPUs

Text files (or folders of .txt files) are tokenized and cut into blocks of --block-size tokens; a held-out
fraction of the blocks measures masked-token accuracy and perplexity. The output folder (and every
checkpoint) loads with `AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)`.
Training scores only the masked positions (see eelbert/pretraining.py), for EELBERT and BERT alike.
"""

import argparse

from transformers import AutoTokenizer

from eelbert.pretraining import pretrain, read_paragraphs, text_files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="uno-eelbert", help="preset, preset JSON or checkpoint folder/Hub id")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub id")
    parser.add_argument("--train", nargs="+", required=True, help="text files or folders of .txt files")
    parser.add_argument("--output", required=True)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--validation-fraction", type=float, default=0.02)
    parser.add_argument("--whole-word-masking", action="store_true")
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--eval-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    args = parser.parse_args(argv)

    try:
        paragraphs = read_paragraphs(text_files(args.train))
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"--train: {error}")
    return pretrain(
        args.model, AutoTokenizer.from_pretrained(args.tokenizer), paragraphs, args.output,
        block_size=args.block_size, validation_fraction=args.validation_fraction,
        whole_word_masking=args.whole_word_masking, mlm_probability=args.mlm_probability,
        batch_size=args.batch_size, learning_rate=args.learning_rate, max_steps=args.max_steps,
        save_steps=args.save_steps, eval_steps=args.eval_steps, seed=args.seed, resume=args.resume,
    )


if __name__ == "__main__":
    main()
