"""Masked-LM pretraining with the Hugging Face Trainer (used by `eelbert pretrain` and examples/run_mlm.py).

Text is tokenized once into a token store on disk (token_store.py) and read as blocks of `block_size` tokens; a
held-out fraction of the blocks measures masked-token accuracy and perplexity. Training scores only the masked positions (`sparse_prediction`; for plain BERT the small
subclass below): the loss is the same, but the vocabulary projection of the 85% unmasked tokens, most of a tiny
model's compute, is skipped (about 4x faster steps for eelbert-tiny / bert-tiny on CPU).
"""

import importlib.util
import math
import re
import sysconfig
from pathlib import Path

import numpy as np
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

from ..modeling.configuration_eelbert import vocabulary_of
from ..modeling.modeling_eelbert import EelbertForMaskedLM, masked_lm_loss
from ..presets import BASELINE_OF, EELBERT_PRESETS, baseline_config, preset_config
from .token_store import TokenStore

# ---- Text ----


# Documentation shipped with the dependencies: the standard library's and these packages' docstrings.
DOCUMENTED_PACKAGES = ("transformers", "torch", "huggingface_hub", "accelerate")
_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?[.,;:]?")


def package_documentation(max_bytes: int = 3_000_000) -> list[str]:
    """English prose that every machine with eelbert installed has: paragraphs of the docstrings in the Python
    standard library and in transformers, torch, huggingface_hub and accelerate, read from their source files
    (nothing is imported). Code examples, parameter lists and other non-prose paragraphs are left out."""
    paragraphs, size = [], 0
    for paragraph, _ in documentation_paragraphs():
        paragraphs.append(paragraph)
        size += len(paragraph) + 1
        if size >= max_bytes:
            break
    return paragraphs


def documentation_paragraphs():
    """(paragraph, package) for package_documentation's paragraphs, each once, in its order: the package is
    `python` for the standard library, else one of DOCUMENTED_PACKAGES (those installed)."""
    roots = [("python", Path(sysconfig.get_paths()["stdlib"]), ("site-packages", "dist-packages", "test", "tests", "idlelib"))]
    for name in DOCUMENTED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.append((name, Path(next(iter(spec.submodule_search_locations))), ("tests", "test")))
    seen = set()
    for package, root, skipped in roots:
        for file in sorted(root.rglob("*.py")):
            if skipped and set(file.relative_to(root).parts[:-1]) & set(skipped):
                continue
            for docstring in _DOCSTRING.findall(file.read_text(encoding="utf-8", errors="replace")):
                for paragraph in _prose(docstring):
                    if paragraph not in seen:
                        seen.add(paragraph)
                        yield paragraph, package


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


class BlockMasking(DataCollatorForLanguageModeling):
    """DataCollatorForLanguageModeling whose masks are a function of the seed and of each block's place in the token
    store (its `block`), not of which process, worker or batch position draws it: a run on 2 processes masks
    exactly what a run on 1 process with the same global batch masks, so both compute the same loss curve, and
    validation blocks are masked the same way at every evaluation. (Masks are static per block, as in BERT's
    original data preparation; runs on a large store see each block about once.)"""

    def __init__(self, tokenizer, seed: int = 0, **kwargs):
        super().__init__(tokenizer, seed=seed, **kwargs)
        self.special_ids = torch.tensor(tokenizer.all_special_ids)

    def torch_call(self, examples):
        # Blocks all have the same length: no padding and no attention mask (all ones) to make, and the special
        # tokens found at once (the stock collator asks the tokenizer token by token).
        input_ids = torch.tensor([example["input_ids"] for example in examples])
        special = torch.isin(input_ids, self.special_ids)
        labels = torch.empty_like(input_ids)
        for i, example in enumerate(examples):
            self.generator = torch.Generator().manual_seed((self.seed * 0x9E3779B1 + example["block"]) % 2**63)
            offsets = [example["offset_mapping"]] if "offset_mapping" in example else None  # whole-word masking
            input_ids[i : i + 1], labels[i : i + 1] = self.torch_mask_tokens(input_ids[i : i + 1], special[i : i + 1], offsets)
        return {"input_ids": input_ids, "labels": labels}


class WholeWordOffsets:
    """Adds the character offsets that whole-word masking needs to each block. DataCollatorForLanguageModeling
    finds words by gaps between offsets: a continuation piece (`##ing`) starts where the previous token ended, any
    other token after a gap."""

    def __init__(self, tokenizer, blocks):
        self.blocks = blocks
        prefix = vocabulary_of(tokenizer)[2] or "##"
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.continues = np.array([t.startswith(prefix) for t in tokens])

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        block = self.blocks[i]
        block["offset_mapping"] = word_offsets(np.asarray(block["input_ids"]), self.continues)
        return block


def word_offsets(ids: np.ndarray, continues: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) character offsets where a token that continues a word starts at the previous token's end."""
    starts = np.cumsum(np.where(continues[ids], 1, 2)) - 1
    return list(zip(starts.tolist(), (starts + 1).tolist()))


# ---- Models ----


class BertForSparseMaskedLM(BertForMaskedLM):
    """BertForMaskedLM that, given labels, scores only the labelled positions, exactly as EelbertForMaskedLM
    with `sparse_prediction=True`: the plain-BERT baseline trains with the same loss at the same cost."""

    accepts_loss_kwargs = True  # num_items_in_batch, as EelbertForMaskedLM

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, num_items_in_batch=None,
                **kwargs):
        if labels is None:
            return super().forward(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        labelled = labels != -100
        if self.training and torch.is_grad_enabled():  # the same chunked loss as EELBERT's, no logits held
            loss = masked_lm_loss(self.cls.predictions, hidden[labelled], labels[labelled], None, num_items_in_batch)
            return MaskedLMOutput(loss=loss)
        logits = self.cls(hidden[labelled])
        if num_items_in_batch is None:
            return MaskedLMOutput(loss=torch.nn.functional.cross_entropy(logits, labels[labelled]), logits=logits)
        loss = torch.nn.functional.cross_entropy(logits, labels[labelled], reduction="sum") / num_items_in_batch
        return MaskedLMOutput(loss=loss, logits=logits)


def is_fresh(name_or_path) -> bool:
    """Whether build_model makes a new model (a preset or config JSON) rather than loading a checkpoint."""
    return name_or_path in EELBERT_PRESETS or str(name_or_path).endswith(".json") or name_or_path in BASELINE_OF.values()


def build_model(name_or_path, tokenizer):
    """A preset (eelbert-* / uno-eelbert / bert-*), a config JSON, or a checkpoint to continue from."""
    if name_or_path in EELBERT_PRESETS or str(name_or_path).endswith(".json"):
        return EelbertForMaskedLM(preset_config(name_or_path, tokenizer=tokenizer, sparse_prediction=True))
    if name_or_path in set(BASELINE_OF.values()):
        return BertForSparseMaskedLM(baseline_config(name_or_path, vocab_size=len(tokenizer)))
    if AutoConfig.from_pretrained(name_or_path, trust_remote_code=True).model_type == "bert":
        return BertForSparseMaskedLM.from_pretrained(name_or_path)
    return AutoModelForMaskedLM.from_pretrained(name_or_path, trust_remote_code=True, sparse_prediction=True)


def masked_predictions(logits, labels):
    """[batch, seq] predicted ids (-100 where nothing is masked) from the logits of the masked positions;
    only these argmaxes are kept: full logits for every validation token would not fit in memory."""
    masked = labels != -100
    if logits.shape[:-1] == labels.shape:  # a model that scored every position (no sparse prediction)
        logits = logits[masked]
    predictions = torch.full_like(labels, -100)
    predictions[masked] = logits.argmax(-1)
    return predictions


def masked_accuracy(eval_prediction):
    predictions, labels = eval_prediction
    scored = labels != -100
    return {"masked_accuracy": float((predictions[scored] == labels[scored]).mean())}


# ---- Training ----


@torch.no_grad()
def start_bias_at_unigram_log_frequencies(model, token_counts, tokenizer):
    """Set a fresh model's masked-LM output bias to the log frequency of each token in the training text.
    Before it sees any context a masked LM should predict these frequencies; with Adam moving each bias entry by
    about the learning rate per step, reaching them from zero (log-frequencies span ~15 nats) takes thousands of
    steps. BERT's tied embeddings can shortcut this; EELBERT's fixed hash table cannot, so both start here."""
    counts = torch.as_tensor(token_counts, dtype=torch.float64) + 1  # add-one: unseen tokens keep a finite bias
    counts[tokenizer.all_special_ids] = 1  # never masked, never a label
    bias = model.cls.predictions.bias
    bias.copy_((counts / counts.sum()).log().to(bias.dtype))


def pretraining_arguments(output, **overrides) -> TrainingArguments:
    """The Trainer settings pretraining uses, with any `TrainingArguments` field overridden (bf16,
    gradient_accumulation_steps, torch_compile, dataloader_num_workers, learning_rate, ...)."""
    max_steps = overrides.get("max_steps", 1000)
    eval_steps = overrides.pop("eval_steps", 500)
    save_steps = overrides.pop("save_steps", 500)
    batch_size = overrides.get("per_device_train_batch_size", 64)
    settings = dict(
        output_dir=str(output),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        # Validation scores every masked position with full [n, vocab_size] logits (for their argmax): small
        # batches keep that tensor small; the total work is the same.
        per_device_eval_batch_size=min(batch_size, 16),
        learning_rate=1e-3,
        warmup_steps=min(500, max_steps // 10),
        weight_decay=0.01,
        eval_strategy="no" if eval_steps is None else "steps",
        eval_steps=eval_steps,
        save_strategy="no" if save_steps is None else "steps",
        save_steps=save_steps or 500,
        logging_steps=max(1, min(50, max_steps // 10)),
        report_to=[],
        dataloader_drop_last=True,
        remove_unused_columns=False,  # the collator needs offset_mapping (whole-word masking) and pops it
        # The hash table is a buffer every process computes itself from the vocabulary: DDP need not send it.
        ddp_broadcast_buffers=False,
        use_cpu=not torch.cuda.is_available(),  # so that several CPU processes train together (gloo)
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def pretrain(
    model,
    tokenizer,
    store: TokenStore,
    output,
    *,
    block_size=128,
    validation_fraction=0.02,
    max_validation_blocks=10_000,
    whole_word_masking=False,
    mlm_probability=0.15,
    seed=0,
    resume=False,
    progress=True,
    callbacks=None,
    **training_arguments,
) -> dict:
    """Pretrain `model` (a model, or a preset name, config JSON or checkpoint) on the blocks of a token store; save
    model + tokenizer to `output`. `training_arguments` override the `TrainingArguments` of pretraining_arguments()
    (`eval_steps`/`save_steps` None: validate only at the end / save no checkpoints); `callbacks` go to the Trainer.
    Returns the final validation metrics."""
    set_seed(seed)
    store.check_tokenizer(tokenizer)
    training_args = pretraining_arguments(output, seed=seed, disable_tqdm=not progress, **training_arguments)
    # At least one full validation batch per process (batches are dropped when incomplete).
    train, validation = store.blocks(
        block_size, tokenizer.cls_token_id, tokenizer.sep_token_id, validation_fraction,
        min_validation_blocks=training_args.per_device_eval_batch_size * training_args.world_size,
        max_validation_blocks=max_validation_blocks,
    )
    if whole_word_masking:
        train, validation = WholeWordOffsets(tokenizer, train), WholeWordOffsets(tokenizer, validation)
    collator = BlockMasking(tokenizer, seed=seed, mlm_probability=mlm_probability, whole_word_mask=whole_word_masking)
    if isinstance(model, (str, Path)):
        fresh, model = is_fresh(model), build_model(model, tokenizer)
        if fresh:
            start_bias_at_unigram_log_frequencies(model, store.token_counts(), tokenizer)
    elif hasattr(model.config, "sparse_prediction"):
        model.config.sparse_prediction = True  # the same loss, without the vocabulary projection of unmasked tokens
    # The whole hash table, built once before the first step: no step pays for (or syncs on) a missing row.
    model.get_input_embeddings().weight  # noqa: B018
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=masked_accuracy,
        preprocess_logits_for_metrics=masked_predictions,
        callbacks=callbacks,
    )
    trained = trainer.train(resume_from_checkpoint=bool(resume) or None)
    trainer.save_metrics("train", trained.metrics)  # train_results.json: runtime, samples per second, loss
    last = [e for e in trainer.state.log_history if "eval_loss" in e and e["step"] == trainer.state.global_step]
    metrics = {k: v for k, v in last[-1].items() if k.startswith("eval_")} if last else trainer.evaluate()
    metrics["perplexity"] = math.exp(min(metrics["eval_loss"], 50))
    metrics["processes"] = training_args.world_size
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_state()  # trainer_state.json: the loss and evaluation history
    trainer.model.config.sparse_prediction = False  # users of the saved model get logits for every position
    trainer.save_model(str(output))  # model, config, modeling files and tokenizer (processing_class)
    return metrics
