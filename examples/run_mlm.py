"""Masked-LM pretraining of EELBERT (or a plain-BERT baseline) with the Hugging Face Trainer.

    python examples/run_mlm.py --model uno-eelbert --tokenizer bert-base-uncased --train corpus/ --output out
    accelerate launch --num_processes 2 examples/run_mlm.py ...      # the same script on several processes/GPUs

Text files (or folders of .txt files) are tokenized and cut into blocks of --block-size tokens; a held-out
fraction of the blocks measures masked-token accuracy and perplexity. The output folder (and every
checkpoint) loads with `AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)`.

Training scores only the masked positions (`sparse_prediction`; for plain BERT the small subclass below):
the loss is the same, but the vocabulary projection of the 85% unmasked tokens, most of a tiny model's
compute, is skipped (about 4x faster for eelbert-tiny / bert-tiny on CPU).
"""

import argparse
import math
import random
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.modeling_outputs import MaskedLMOutput

import eelbert


def text_files(paths):
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.txt"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"--train {path}: no such file or folder")
    if not files:
        raise ValueError(f"--train {paths}: no .txt files found")
    return files


def token_blocks(tokenizer, files, block_size):
    """Every file's text as one token stream ([SEP] between paragraphs), cut into [CLS] ... [SEP] blocks."""
    body = block_size - 2
    stream = []
    for file in files:
        paragraphs = [p for p in file.read_text(encoding="utf-8").split("\n") if p.strip()]
        for start in range(0, len(paragraphs), 1000):  # batched: fast tokenizers encode a batch in parallel
            for ids in tokenizer(paragraphs[start : start + 1000], add_special_tokens=False)["input_ids"]:
                stream += ids + [tokenizer.sep_token_id]
    blocks = [stream[i : i + body] for i in range(0, len(stream) - body + 1, body)]
    if not blocks:
        raise ValueError(f"the training text has {len(stream)} tokens, fewer than one block of {block_size}")
    return [{"input_ids": [tokenizer.cls_token_id, *b, tokenizer.sep_token_id]} for b in blocks]


def add_word_offsets(tokenizer, blocks):
    """Character offsets for whole-word masking, which finds words by gaps between offsets: a continuation
    piece (`##ing`) starts where the previous token ended, any other token after a gap."""
    prefix = eelbert.vocabulary_of(tokenizer)[2] or "##"
    for block in blocks:
        offsets, end = [], 0
        for token in tokenizer.convert_ids_to_tokens(block["input_ids"]):
            start = end if token.startswith(prefix) else end + 1
            end = start + 1
            offsets.append((start, end))
        block["offset_mapping"] = offsets


class BertForSparseMaskedLM(BertForMaskedLM):
    """BertForMaskedLM that, given labels, scores only the labelled positions, exactly as EelbertForMaskedLM
    with `sparse_prediction=True`: the plain-BERT baseline trains with the same loss at the same cost."""

    accepts_loss_kwargs = False  # a per-batch mean loss, like EelbertForMaskedLM

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if labels is None:
            return super().forward(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        labelled = labels != -100
        logits = self.cls(hidden[labelled])
        return MaskedLMOutput(loss=torch.nn.functional.cross_entropy(logits, labels[labelled]), logits=logits)


def build_model(name_or_path, tokenizer):
    """A preset (eelbert-* / uno-eelbert / bert-*), a config JSON, or a checkpoint to continue from."""
    if name_or_path in eelbert.EELBERT_PRESETS or str(name_or_path).endswith(".json"):
        config = eelbert.EelbertConfig.from_preset(name_or_path, tokenizer=tokenizer, sparse_prediction=True)
        return eelbert.EelbertForMaskedLM(config)
    if name_or_path in set(eelbert.BASELINE_OF.values()):
        return BertForSparseMaskedLM(eelbert.baseline_config(name_or_path, vocab_size=len(tokenizer)))
    if AutoConfig.from_pretrained(name_or_path, trust_remote_code=True).model_type == "bert":
        return BertForSparseMaskedLM.from_pretrained(name_or_path)
    return AutoModelForMaskedLM.from_pretrained(name_or_path, trust_remote_code=True, sparse_prediction=True)


def masked_predictions(logits, labels):
    """[batch, seq] predicted ids (-100 where nothing is masked) from the logits of the masked positions;
    only these argmaxes are kept: full logits for every validation token would not fit in memory."""
    predictions = torch.full_like(labels, -100)
    predictions[labels != -100] = logits.argmax(-1)
    return predictions


def masked_accuracy(eval_prediction):
    predictions, labels = eval_prediction
    scored = labels != -100
    return {"masked_accuracy": float((predictions[scored] == labels[scored]).mean())}


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

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    blocks = token_blocks(tokenizer, text_files(args.train), args.block_size)
    if args.whole_word_masking:
        add_word_offsets(tokenizer, blocks)
    random.Random(args.seed).shuffle(blocks)
    held_out = max(1, int(len(blocks) * args.validation_fraction))
    train, validation = blocks[held_out:], blocks[:held_out]
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=args.mlm_probability, whole_word_mask=args.whole_word_masking
    )

    training_args = TrainingArguments(
        output_dir=args.output,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=min(500, args.max_steps // 10),
        weight_decay=0.01,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        logging_steps=max(1, min(50, args.max_steps // 10)),
        seed=args.seed,
        report_to=[],
        dataloader_drop_last=True,
        remove_unused_columns=False,  # the collator needs offset_mapping (whole-word masking) and pops it
        use_cpu=not torch.cuda.is_available(),  # so that several CPU processes train together (gloo)
    )
    trainer = Trainer(
        model=build_model(args.model, tokenizer),
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=masked_accuracy,
        preprocess_logits_for_metrics=masked_predictions,
    )
    trainer.train(resume_from_checkpoint=bool(args.resume) or None)
    metrics = trainer.evaluate()
    metrics["perplexity"] = math.exp(min(metrics["eval_loss"], 50))
    metrics["processes"] = training_args.world_size
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.model.config.sparse_prediction = False  # users of the saved model get logits for every position
    trainer.save_model(args.output)  # model, config, modeling files and tokenizer (processing_class)
    return metrics


if __name__ == "__main__":
    main()
