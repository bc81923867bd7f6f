"""Convert a BERT checkpoint to EELBERT: keep its encoder, pooler and heads, drop the word-embedding table,
bind the tokenizer's vocabulary. The result is ready for continued (masked-LM) pretraining, during which
the encoder learns to read hash embeddings instead of the learned ones it was trained with."""

import re
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, BertConfig, BertForPreTraining

from .modeling import modeling_eelbert
from .modeling.configuration_eelbert import AUTO_CLASS_OF, EelbertConfig
from .size import bert_class_of, weights_bytes

# BERT class name -> (how to load it, the EELBERT class that keeps the same head): every EELBERT head, and
# BERT's pretraining model, whose next-sentence head is dropped.
CONVERTIBLE = {
    bert_class_of(name).__name__: (bert_class_of(name), getattr(modeling_eelbert, name)) for name in AUTO_CLASS_OF
}
CONVERTIBLE["BertForPreTraining"] = (BertForPreTraining, modeling_eelbert.EelbertForMaskedLM)
# Encoder fields copied from BertConfig (everything else is EELBERT's own or a default).
BERT_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
    "initializer_range", "layer_norm_eps", "classifier_dropout", "id2label", "label2id", "problem_type",
)
# BERT state-dict names -> EELBERT names; None drops the tensor.
RENAMES = [
    (r"^bert\.embeddings\.word_embeddings\.", None),  # replaced by the hash embedding
    (r"^cls\.predictions\.decoder\.", None),  # tied to the word embeddings in BERT; to the hash table here
    (r"^cls\.seq_relationship\.", None),  # next-sentence prediction
    (r"^bert\.embeddings\.position_ids$", None),
    (r"^bert\.", "eelbert."),
    (r"^cls\.predictions\.transform\.", "cls.predictions."),
]


# A folder holds a tokenizer if it has one of these (tokenizer_config.json alone makes a 5-token tokenizer).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def _rename(key: str) -> str | None:
    for pattern, replacement in RENAMES:
        if re.search(pattern, key):
            if replacement is None:
                return None
            key = re.sub(pattern, replacement, key)
    return key


def convert_bert(source, tokenizer=None, **config_overrides):
    """(EELBERT model, tokenizer, bytes of the BERT weights) for the BERT checkpoint `source` (folder or Hub
    id). `tokenizer` (object, folder or Hub id) defaults to the one saved with the checkpoint; it must be the
    tokenizer BERT was trained with, since ids keep their meaning."""
    bert_config = AutoConfig.from_pretrained(source)
    if not isinstance(bert_config, BertConfig):
        raise ValueError(f"{source} is a {type(bert_config).__name__} checkpoint, not BERT")
    architecture = (bert_config.architectures or ["BertModel"])[0]
    if architecture not in CONVERTIBLE:
        raise ValueError(f"{source} is a {architecture}; convertible BERT classes: {sorted(CONVERTIBLE)}")
    bert_class, eelbert_class = CONVERTIBLE[architecture]
    if tokenizer is None and Path(source).is_dir() and not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(
            f"{source} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): pass the tokenizer this BERT was trained "
            "with (--tokenizer FOLDER_OR_HUB_ID)"
        )
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer or source)
    if len(tokenizer) != bert_config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer):,} tokens but {source} was trained with vocab_size "
            f"{bert_config.vocab_size:,}: pass the tokenizer this BERT was trained with (--tokenizer FOLDER_OR_HUB_ID)"
        )
    fields = {name: getattr(bert_config, name) for name in BERT_FIELDS if hasattr(bert_config, name)}
    config = EelbertConfig.from_tokenizer(tokenizer, embedding_size=bert_config.hidden_size, **fields, **config_overrides)

    bert = bert_class.from_pretrained(source)
    bert_bytes = weights_bytes(bert)
    state = {}
    for key, value in bert.state_dict().items():
        new_key = _rename(key)
        if new_key is not None:
            state[new_key] = value
    model = eelbert_class(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if ".ngram_buckets." not in key]  # EELBERT's own learned part: starts at zero
    if unexpected or missing:
        raise ValueError(f"cannot map the BERT weights onto {eelbert_class.__name__}: missing {missing}, unexpected {unexpected}")
    return model, tokenizer, bert_bytes
