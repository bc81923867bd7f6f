"""Masked-LM pretraining with the Hugging Face Trainer (used by `eelbert pretrain` and examples/run_mlm.py).

Text is cut into blocks of `block_size` tokens; a held-out fraction of the blocks measures masked-token accuracy
and perplexity. Training scores only the masked positions (`sparse_prediction`; for plain BERT the small
subclass below): the loss is the same, but the vocabulary projection of the 85% unmasked tokens, most of a tiny
model's compute, is skipped (about 4x faster steps for eelbert-tiny / bert-tiny on CPU).
"""

import importlib.util
import math
import random
import re
import sysconfig
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    BertForMaskedLM,
    BertTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.modeling_outputs import MaskedLMOutput

from .modeling.configuration_eelbert import EelbertConfig, vocabulary_of
from .modeling.modeling_eelbert import EelbertForMaskedLM
from .presets import BASELINE_OF, EELBERT_PRESETS, baseline_config

# ---- Text ----


def text_files(paths) -> list[Path]:
    """The files named, and the .txt files inside the folders named."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.txt"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"{[str(p) for p in paths]}: no .txt files found")
    return files


def read_paragraphs(files) -> list[str]:
    """The non-empty lines of the files (one paragraph per line)."""
    return [line for file in files for line in Path(file).read_text(encoding="utf-8").split("\n") if line.strip()]


# Documentation shipped with the dependencies: the standard library's and these packages' docstrings.
DOCUMENTED_PACKAGES = ("transformers", "torch", "huggingface_hub", "accelerate")
_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?[.,;:]?")


def package_documentation(max_bytes: int = 3_000_000) -> list[str]:
    """English prose that every machine with eelbert installed has: paragraphs of the docstrings in the Python
    standard library and in transformers, torch, huggingface_hub and accelerate, read from their source files
    (nothing is imported). Code examples, parameter lists and other non-prose paragraphs are left out."""
    roots = [(Path(sysconfig.get_paths()["stdlib"]), ("site-packages", "dist-packages", "test", "tests", "idlelib"))]
    for name in DOCUMENTED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.append((Path(next(iter(spec.submodule_search_locations))), ("tests", "test")))
    paragraphs, seen, size = [], set(), 0
    for root, skipped in roots:
        for file in sorted(root.rglob("*.py")):
            if skipped and set(file.relative_to(root).parts[:-1]) & set(skipped):
                continue
            for docstring in _DOCSTRING.findall(file.read_text(encoding="utf-8", errors="replace")):
                for paragraph in _prose(docstring):
                    if paragraph not in seen:
                        seen.add(paragraph)
                        paragraphs.append(paragraph)
                        size += len(paragraph) + 1
                        if size >= max_bytes:
                            return paragraphs
    return paragraphs


def _prose(docstring):
    """The paragraphs of a docstring that read as sentences (8+ words, 85% of them plain words)."""
    for block in re.split(r"\n\s*\n", docstring):
        lines = [line.strip() for line in block.splitlines()]
        if any(line.startswith((">>>", "...", "$", "- ", "* ", "|", ":param", "---")) or line.endswith(":") for line in lines):
            continue
        words = " ".join(lines).split()
        if len(words) >= 8 and sum(bool(_WORD.fullmatch(w)) for w in words) >= 0.85 * len(words):
            yield " ".join(words)


def train_wordpiece(paragraphs, vocab_size: int = 8000) -> BertTokenizer:
    """A lower-casing WordPiece tokenizer (BERT's special tokens and `##` continuation prefix) learned from text."""
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(paragraphs, vocab_size=vocab_size, min_frequency=2, show_progress=False)
    return BertTokenizer(vocab=trainer.get_vocab(), do_lower_case=True)


def token_blocks(tokenizer, paragraphs, block_size):
    """All paragraphs as one token stream ([SEP] between paragraphs), cut into [CLS] ... [SEP] blocks."""
    body = block_size - 2
    stream = []
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
    prefix = vocabulary_of(tokenizer)[2] or "##"
    for block in blocks:
        offsets, end = [], 0
        for token in tokenizer.convert_ids_to_tokens(block["input_ids"]):
            start = end if token.startswith(prefix) else end + 1
            end = start + 1
            offsets.append((start, end))
        block["offset_mapping"] = offsets


# ---- Models ----


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


def is_fresh(name_or_path) -> bool:
    """Whether build_model makes a new model (a preset or config JSON) rather than loading a checkpoint."""
    return name_or_path in EELBERT_PRESETS or str(name_or_path).endswith(".json") or name_or_path in BASELINE_OF.values()


def build_model(name_or_path, tokenizer):
    """A preset (eelbert-* / uno-eelbert / bert-*), a config JSON, or a checkpoint to continue from."""
    if name_or_path in EELBERT_PRESETS or str(name_or_path).endswith(".json"):
        return EelbertForMaskedLM(EelbertConfig.from_preset(name_or_path, tokenizer=tokenizer, sparse_prediction=True))
    if name_or_path in set(BASELINE_OF.values()):
        return BertForSparseMaskedLM(baseline_config(name_or_path, vocab_size=len(tokenizer)))
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


# ---- Training ----


@torch.no_grad()
def start_bias_at_unigram_log_frequencies(model, blocks, tokenizer):
    """Set a fresh model's masked-LM output bias to the log frequency of each token in the training blocks.
    Before it sees any context a masked LM should predict these frequencies; with Adam moving each bias entry by
    about the learning rate per step, reaching them from zero (log-frequencies span ~15 nats) takes thousands of
    steps. BERT's tied embeddings can shortcut this; EELBERT's fixed hash table cannot, so both start here."""
    counts = torch.ones(len(tokenizer), dtype=torch.float64)  # add-one: unseen tokens keep a finite bias
    ids = torch.tensor([i for block in blocks for i in block["input_ids"]])
    counts += torch.bincount(ids, minlength=len(tokenizer)).double()
    counts[tokenizer.all_special_ids] = 1  # never masked, never a label
    bias = model.cls.predictions.bias
    bias.copy_((counts / counts.sum()).log().to(bias.dtype))


def pretrain(
    model,
    tokenizer,
    paragraphs,
    output,
    *,
    block_size=128,
    validation_fraction=0.02,
    whole_word_masking=False,
    mlm_probability=0.15,
    batch_size=64,
    learning_rate=1e-3,
    max_steps=1000,
    save_steps=500,
    eval_steps=500,
    seed=0,
    resume=False,
    progress=True,
) -> dict:
    """Pretrain `model` (preset, config JSON or checkpoint) on `paragraphs`; save model + tokenizer to `output`
    (a checkpoint every `save_steps`, none if None; validation every `eval_steps` and at the end, only at the
    end if None). Returns the final validation metrics."""
    set_seed(seed)
    blocks = token_blocks(tokenizer, paragraphs, block_size)
    if whole_word_masking:
        add_word_offsets(tokenizer, blocks)
    random.Random(seed).shuffle(blocks)
    training_args = TrainingArguments(
        output_dir=str(output),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=min(500, max_steps // 10),
        weight_decay=0.01,
        eval_strategy="no" if eval_steps is None else "steps",
        eval_steps=eval_steps,
        save_strategy="no" if save_steps is None else "steps",
        save_steps=save_steps or 500,
        logging_steps=max(1, min(50, max_steps // 10)),
        seed=seed,
        report_to=[],
        disable_tqdm=not progress,
        dataloader_drop_last=True,
        remove_unused_columns=False,  # the collator needs offset_mapping (whole-word masking) and pops it
        use_cpu=not torch.cuda.is_available(),  # so that several CPU processes train together (gloo)
    )
    # At least one full validation batch per process (batches are dropped when incomplete).
    held_out = max(batch_size * training_args.world_size, int(len(blocks) * validation_fraction))
    if held_out >= len(blocks):
        raise ValueError(
            f"the text gives {len(blocks)} blocks of {block_size} tokens: too few to hold out {held_out} for validation"
        )
    train, validation = blocks[held_out:], blocks[:held_out]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, whole_word_mask=whole_word_masking)
    model_name, model = model, build_model(model, tokenizer)
    if is_fresh(model_name):
        start_bias_at_unigram_log_frequencies(model, train, tokenizer)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=masked_accuracy,
        preprocess_logits_for_metrics=masked_predictions,
    )
    trained = trainer.train(resume_from_checkpoint=bool(resume) or None)
    trainer.save_metrics("train", trained.metrics)  # train_results.json: runtime, samples per second, loss
    metrics = trainer.evaluate()
    metrics["perplexity"] = math.exp(min(metrics["eval_loss"], 50))
    metrics["processes"] = training_args.world_size
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_state()  # trainer_state.json: the loss and evaluation history
    trainer.model.config.sparse_prediction = False  # users of the saved model get logits for every position
    trainer.save_model(str(output))  # model, config, modeling files and tokenizer (processing_class)
    return metrics
