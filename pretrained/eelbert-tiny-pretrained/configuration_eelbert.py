"""EELBERT model configuration: BERT's encoder fields plus the dynamic-embedding (hash) fields."""

import hashlib
import json
import os
import re
from pathlib import Path

from transformers import PreTrainedConfig

from .hashing_eelbert import HASH_VERSION, check_hash_settings


# Every Auto class a checkpoint loads with. save_pretrained only writes the entries of the config and the
# class being saved, so the config carries all of them (module names are the files saved beside it).
AUTO_MAP = {
    "AutoConfig": "configuration_eelbert.EelbertConfig",
    "AutoModel": "modeling_eelbert.EelbertModel",
    "AutoModelForMaskedLM": "modeling_eelbert.EelbertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_eelbert.EelbertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_eelbert.EelbertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_eelbert.EelbertForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_eelbert.EelbertForMultipleChoice",
}
# Model class name -> the Auto class that loads it ("EelbertForMaskedLM" -> "AutoModelForMaskedLM").
AUTO_CLASS_OF = {target.split(".")[1]: auto for auto, target in AUTO_MAP.items() if auto != "AutoConfig"}


def auto_class_name(config) -> str:
    """The Auto class that loads a saved config's model ("AutoModel" when it names no architecture)."""
    return AUTO_CLASS_OF[(config.architectures or ["EelbertModel"])[0]]

MLM_DECODERS = ("hash", "learned")
EMBEDDING_TABLE_MODES = ("lazy", "full", "per_batch")
_UNUSED_TOKEN = re.compile(r"\[unused\d+\]")


# config.json keeps the vocabulary as one string, tokens separated by NUL (a character no tokenizer puts in a
# token): one JSON string parses and copies far faster than tens of thousands of list items.
TOKEN_SEPARATOR = "\x00"

# The fields that define the word embedding: the weights were trained against the table they give. A saved
# config.json carries a digest of each (`embedding_fingerprint`), so that a hand edit of one of them, which would
# load silently and give other outputs, is a clear error naming the field.
EMBEDDING_FIELDS = ("vocab", "special_tokens", "continuing_subword_prefix", "embedding_size", "max_ngram_order",
                    "hash_function", "hash_seed", "hash_version")


class Tokens(tuple):
    """An immutable list of token strings that deep-copies as itself: transformers deep-copies a config
    several times per load, and copying tens of thousands of strings each time would cost a noticeable
    part of the load time. Saved to JSON as a plain list."""

    def __deepcopy__(self, memo):
        return self


def vocabulary_of(tokenizer) -> tuple[list[str], list[str], str | None]:
    """The token string of every id of a Hugging Face tokenizer, its special tokens, and its WordPiece
    continuation prefix. BERT's `[unusedN]` placeholders count as special (they are not words)."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing:
        raise ValueError(f"the tokenizer has no token for ids {missing[:5]}: its ids must run from 0 to {size - 1}")
    special = set(tokenizer.all_special_tokens)
    special.update(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special)
    special.update(t for t in tokens if _UNUSED_TOKEN.fullmatch(t))
    prefix = None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        prefix = getattr(backend.model, "continuing_subword_prefix", None)
    elif hasattr(tokenizer, "wordpiece_tokenizer"):
        prefix = "##"
    return tokens, [t for t in tokens if t in special], prefix


def saved_tokenizer_vocabulary(folder) -> list[str] | None:
    """The token of every id of the tokenizer saved in `folder` (its tokenizer.json, read as JSON: building the
    tokenizer would cost more), or None when the folder holds no tokenizer.json."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    vocab = saved.get("model", {}).get("vocab")
    if isinstance(vocab, dict):  # WordPiece, BPE, WordLevel: token -> id
        by_id = {i: token for token, i in vocab.items()}
    elif isinstance(vocab, list):  # Unigram: [token, score] in id order
        by_id = {i: entry[0] for i, entry in enumerate(vocab)}
    else:
        return None
    by_id.update((added["id"], added["content"]) for added in saved.get("added_tokens", []))
    return [by_id.get(i) for i in range(max(by_id, default=-1) + 1)]


class EelbertConfig(PreTrainedConfig):
    r"""
    Configuration of an EELBERT model: a BERT whose input word embeddings are computed from each token's
    string by a parameter-free n-gram hash (EELBERT, Cohn et al., EMNLP 2023, arXiv 2310.20144).

    Encoder fields (same meaning as in `BertConfig`):
        vocab_size (`int`): number of token ids. Derived from `vocab` when omitted; must equal `len(vocab)`.
        hidden_size (`int`, 768), num_hidden_layers (`int`, 12), num_attention_heads (`int`, 12),
        intermediate_size (`int`, 3072), hidden_act (`str`, "gelu"), hidden_dropout_prob (`float`, 0.1),
        attention_probs_dropout_prob (`float`, 0.1), max_position_embeddings (`int`, 512),
        type_vocab_size (`int`, 2), initializer_range (`float`, 0.02), layer_norm_eps (`float`, 1e-12),
        pad_token_id (`int`, 0), classifier_dropout (`float`, None = hidden_dropout_prob).

    Dynamic-embedding fields:
        vocab (`list[str]`): the string of every token id. The embedding of id i is the hash embedding of
            `vocab[i]`; a model cannot be built without it (see `EelbertConfig.from_tokenizer`). In config.json
            it is one string with the tokens separated by "\u0000" (NUL), which is much faster to load.
        special_tokens (`list[str]`): tokens embedded whole (one hash of the string) instead of by n-grams.
        continuing_subword_prefix (`str`, "##"): WordPiece's mark of a word-internal piece; such pieces are
            hashed without it and without the word-start marker. None for vocabularies without one.
        embedding_size (`int`, None = hidden_size): dimension d of the hash embedding.
        max_ngram_order (`int`, 3): n-grams of orders 1..N are pooled; order n gets d*n/(N(N+1)/2) dims.
        hash_function (`str`, "murmur3"): "murmur3" (MurmurHash3_x86_32) or "rolling" (polynomial hash).
        hash_seed (`int`, 0): seed of the n-gram hash.
        hash_version (`int`, 1): version of the hashing algorithm the checkpoint was trained with.
        embedding_projection (`bool`, None = embedding_size != hidden_size): put a learned
            `Linear(embedding_size, hidden_size)` after the hash embedding.
        mlm_decoder (`str`, "hash"): the masked-LM output layer. "hash" scores tokens against the fixed
            hash table (no vocabulary-sized matrix to store); "learned" uses a `Linear(embedding_size, vocab_size)`.
        embedding_table (`str`, "lazy"): when the rows of the hash table are computed. "lazy": the first time
            an id is looked up (a load pays only for the tokens it sees); "full": all at construction and load;
            "per_batch": never stored, the rows of each batch are computed on every call (least memory, slower;
            not with the "hash" masked-LM decoder, which scores every token). Values are identical in all modes.
        sparse_prediction (`bool`, False): masked-LM with `labels` scores only the labelled positions and returns
            logits of shape [labelled positions, vocab_size]: the same loss, without the vocabulary projection of
            the ~85% unmasked tokens (most of a small model's pretraining compute). As in ModernBERT.
        ngram_buckets (`int`, 0 = none): the number of rows of a learned `nn.EmbeddingBag` added to the hash
            embedding (before the projection), as fastText's subword buckets: each token adds the mean of the rows
            of its n-grams (those the hash pools; a special token's whole string), an n-gram's row being
            `MurmurHash3_x86_32(utf8(g), hash_seed + 1) mod ngram_buckets` (`ngram_bucket_ids`). Zero at
            initialization, so a new model's embedding is the fixed one. Not added to `inputs_embeds`. 0 is
            the paper's EELBERT: no learned word-embedding parameter at all.
        preset (`str`): the name of the preset the config was made from, if any (informational).
        embedding_fingerprint (`dict`): written by `save_pretrained`, not set by hand: a digest of each field that
            defines the word embedding (EMBEDDING_FIELDS). Loading a config.json whose fields no longer match it
            (a hand edit of `vocab`, `hash_seed`, `special_tokens`, ...) is a ValueError naming the field.
    """

    model_type = "eelbert"

    def __init__(
        self,
        vocab_size=None,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        classifier_dropout=None,
        vocab=None,
        special_tokens=None,
        continuing_subword_prefix="##",
        embedding_size=None,
        max_ngram_order=3,
        hash_function="murmur3",
        hash_seed=0,
        hash_version=HASH_VERSION,
        embedding_projection=None,
        mlm_decoder="hash",
        embedding_table="lazy",
        sparse_prediction=False,
        ngram_buckets=0,
        preset=None,
        embedding_fingerprint=None,
        **kwargs,
    ):
        kwargs.pop("auto_map", None)  # always the complete map below
        kwargs.setdefault("tie_word_embeddings", False)  # the decoder ties to a buffer, not a parameter
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        if isinstance(vocab, str):
            vocab = vocab.split(TOKEN_SEPARATOR)
        self.vocab = Tokens(vocab) if vocab is not None else None
        self.vocab_size = vocab_size if vocab_size is not None or vocab is None else len(self.vocab)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.special_tokens = Tokens(special_tokens if special_tokens is not None else ())
        self.continuing_subword_prefix = continuing_subword_prefix
        self.embedding_size = embedding_size if embedding_size is not None else hidden_size
        self.max_ngram_order = max_ngram_order
        self.hash_function = hash_function
        self.hash_seed = hash_seed
        self.hash_version = hash_version
        self.embedding_projection = (
            embedding_projection if embedding_projection is not None else self.embedding_size != hidden_size
        )
        self.mlm_decoder = mlm_decoder
        self.embedding_table = embedding_table
        self.sparse_prediction = sparse_prediction
        self.ngram_buckets = ngram_buckets
        self.preset = preset
        self.auto_map = dict(AUTO_MAP)
        self._check()
        if embedding_fingerprint is not None and self.vocab is not None:
            self._check_fingerprint(embedding_fingerprint)

    def _check(self):
        """Raise a ValueError naming the field for any value a model cannot be built from."""

        def positive(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            positive(name)
        if self.vocab_size is not None:
            positive("vocab_size")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads ({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        check_hash_settings(embedding_size=self.embedding_size, max_ngram_order=self.max_ngram_order,
                            hash_function=self.hash_function, hash_seed=self.hash_seed, hash_version=self.hash_version)
        if self.mlm_decoder not in MLM_DECODERS:
            raise ValueError(f"mlm_decoder must be one of {MLM_DECODERS}, got {self.mlm_decoder!r}")
        if not isinstance(self.sparse_prediction, bool):
            raise ValueError(f"sparse_prediction must be true or false, got {self.sparse_prediction!r}")
        if not isinstance(self.ngram_buckets, int) or isinstance(self.ngram_buckets, bool) or self.ngram_buckets < 0:
            raise ValueError(f"ngram_buckets must be a non-negative integer (0 = none), got {self.ngram_buckets!r}")
        if self.embedding_table not in EMBEDDING_TABLE_MODES:
            raise ValueError(f"embedding_table must be one of {EMBEDDING_TABLE_MODES}, got {self.embedding_table!r}")
        if self.embedding_size != self.hidden_size and not self.embedding_projection:
            raise ValueError(
                f"embedding_projection must be true when embedding_size ({self.embedding_size}) != hidden_size ({self.hidden_size})"
            )
        if self.vocab is not None:
            if not all(isinstance(t, str) for t in self.vocab):
                raise ValueError("vocab must be a list of strings")
            bad = next((t for t in self.vocab if TOKEN_SEPARATOR in t), None)
            if bad is not None:
                raise ValueError(f"vocab token {bad!r} contains the NUL character, which EELBERT configs cannot store")
            if self.vocab_size != len(self.vocab):
                raise ValueError(
                    f"vocab_size ({self.vocab_size}) disagrees with the vocabulary, which has {len(self.vocab)} tokens"
                )
            if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
                raise ValueError(f"pad_token_id ({self.pad_token_id}) is outside the vocabulary of {self.vocab_size} tokens")

    def embedding_fingerprint(self) -> dict[str, str]:
        """A short SHA-256 digest of each of EMBEDDING_FIELDS, as saved in config.json."""
        fingerprint = {}
        for name in EMBEDDING_FIELDS:
            value = getattr(self, name)
            text = TOKEN_SEPARATOR.join(value) if isinstance(value, (tuple, list)) else json.dumps(value)
            fingerprint[name] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return fingerprint

    def _check_fingerprint(self, saved):
        if not isinstance(saved, dict):
            raise ValueError(f"embedding_fingerprint must be a mapping of field names to digests, got {saved!r}")
        for name, digest in self.embedding_fingerprint().items():
            if saved.get(name, digest) != digest:
                raise ValueError(
                    f"{name} is not the one this config was saved with (its embedding_fingerprint differs; was "
                    f"config.json edited by hand?): the weights were trained against the embedding the saved {name} "
                    "gives, so the model would silently give other outputs. Restore it, or delete embedding_fingerprint "
                    "to accept the change"
                )

    def check_tokenizer(self, tokenizer):
        """Raise a ValueError naming the first id whose token differs between a tokenizer and this config's
        vocabulary: a tokenizer with other ids would silently feed the model other tokens. `tokenizer` is a
        Hugging Face tokenizer or a checkpoint folder (checked against its tokenizer.json, if it has one)."""
        if self.vocab is None:
            return
        if isinstance(tokenizer, (str, os.PathLike)):
            tokens, source = saved_tokenizer_vocabulary(tokenizer), f"the tokenizer in {tokenizer}"
            if tokens is None:
                return
        else:
            tokens, source = vocabulary_of(tokenizer)[0], "the tokenizer"
        if tuple(tokens) == self.vocab:
            return
        vocab = self.vocab
        i = next((i for i, (a, b) in enumerate(zip(tokens, vocab)) if a != b), min(len(tokens), len(vocab)))
        in_tokenizer, in_config = (repr(seq[i]) if i < len(seq) else "absent" for seq in (tokens, vocab))
        raise ValueError(
            f"{source} does not match the model's vocabulary ({len(tokens):,} tokens against {len(vocab):,} in "
            f"config.json): id {i} is {in_tokenizer} in the tokenizer but {in_config} in config.json. Use the "
            "tokenizer the model was built with, or bind this one with model.set_vocab(tokenizer) and save both"
        )

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "EelbertConfig":
        """A config bound to a tokenizer's vocabulary (strings, special tokens, continuation prefix, pad id)."""
        config = cls(**kwargs)
        config.set_vocab(tokenizer)
        return config

    def set_vocab(self, tokenizer_or_tokens, special_tokens=None):
        """Bind a vocabulary: a Hugging Face tokenizer, or a list of token strings (id order) with
        optional `special_tokens`. Sets `vocab`, `vocab_size` and, for a tokenizer, the special tokens,
        continuation prefix and pad id."""
        if isinstance(tokenizer_or_tokens, (list, tuple)):
            tokens = list(tokenizer_or_tokens)
            special = list(special_tokens) if special_tokens is not None else []
            prefix = self.continuing_subword_prefix
        else:
            tokenizer = tokenizer_or_tokens
            tokens, special, prefix = vocabulary_of(tokenizer)
            if special_tokens is not None:
                special = list(special_tokens)
            if tokenizer.pad_token_id is not None:
                self.pad_token_id = tokenizer.pad_token_id
        self.vocab, self.vocab_size, self.special_tokens = Tokens(tokens), len(tokens), Tokens(special)
        self.continuing_subword_prefix = prefix
        self._check()

    def to_dict(self):
        output = super().to_dict()
        if output.get("vocab") is not None:
            output["vocab"] = TOKEN_SEPARATOR.join(output["vocab"])
            output["embedding_fingerprint"] = self.embedding_fingerprint()
        return output

    def __repr__(self):
        # The vocabulary is tens of thousands of strings: show its size, not its contents. (transformers
        # formats configs into log messages during every load, so this must also be cheap.)
        shown = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        for name in ("vocab", "special_tokens"):
            if shown.get(name) is not None:
                shown[name] = f"<{len(shown[name])} tokens>"
        return f"{self.__class__.__name__} {shown}"


__all__ = ["AUTO_CLASS_OF", "AUTO_MAP", "EMBEDDING_FIELDS", "EelbertConfig", "Tokens", "auto_class_name",
           "saved_tokenizer_vocabulary", "vocabulary_of"]
