"""PyTorch EELBERT: BERT with a parameter-free, n-gram hash word embedding (Cohn et al., EMNLP 2023).

The encoder, pooler and task heads are BERT's. The only difference is the input word embedding: instead of a
learned [vocab_size, hidden] table, row i is the hash embedding of the string `config.vocab[i]`
(see hashing_eelbert.py). That table is a non-persistent buffer, recomputed at construction and load and
never written to disk, which is why an EELBERT checkpoint is a fraction of BERT's size.
"""

import contextlib
import os
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_eelbert import AUTO_CLASS_OF, EelbertConfig
from .hashing_eelbert import hash_embedding_table, ngram_bucket_ids

# The hash table's entries have an RMS of about 0.3 (BERT's uncased vocabulary, n-grams 1-3): 15x the 0.02 of a
# freshly initialized BERT embedding. With a unit LayerNorm gain, masked-LM scores against this fixed table
# start ~12x larger than BERT's (loss ~16 instead of ln(vocab) ~10) and pretraining spends its first
# thousand steps shrinking the gain; the head's gain therefore starts at initializer_range / HASH_TABLE_RMS.
HASH_TABLE_RMS = 0.3


def _require_vocab(config):
    if config.vocab is None:
        raise ValueError(
            "this EELBERT config has no vocabulary (`vocab`), so the word embeddings cannot be computed: build the "
            "config with eelbert.preset_config(name, tokenizer=...) or EelbertConfig.from_tokenizer(tokenizer), "
            "or call config.set_vocab(tokenizer); a saved checkpoint keeps it in config.json"
        )


class EelbertHashEmbedding(nn.Module):
    """The word embedding: row i is the hash embedding of `config.vocab[i]`, looked up by id.

    The rows live in `table`, a non-persistent buffer (it follows `.to()`/`.half()` but is never saved), and
    are computed as `config.embedding_table` says: "lazy" (default) when an id is first looked up (rows not yet
    looked up are zeros), "full" at construction/load, or "per_batch" on every call without being kept. `weight`
    is the whole table. Traced or compiled (torch.compile, torch.export, torch.jit.trace), a lazy table is
    completed first, outside the graph, which then holds a plain lookup."""

    def __init__(self, config):
        super().__init__()
        _require_vocab(config)
        self.config = config
        self.num_embeddings = config.vocab_size
        self.embedding_dim = config.embedding_size
        rows = 0 if config.embedding_table == "per_batch" else config.vocab_size
        self.register_buffer("table", torch.zeros(rows, config.embedding_size), persistent=False)
        self.register_buffer("built", torch.zeros(rows, dtype=torch.bool), persistent=False)
        self.complete = False  # all rows built: lets the lazy path skip its check

    def initialize(self):
        """Build the table as `embedding_table` says: all rows ("full") or none yet ("lazy": zeros)."""
        if self.complete:  # a head's post_init runs after its encoder's: build once
            return
        self.complete = self.config.embedding_table == "full"
        if self.complete:
            init.copy_(self.table, vocabulary_table(self.config, self.table.device))
        else:
            init.zeros_(self.table)
        init.constant_(self.built, self.complete)

    @property
    def weight(self) -> torch.Tensor:
        """The whole [vocab_size, embedding_size] table, computing any missing rows."""
        if self.config.embedding_table == "per_batch":
            return vocabulary_table(self.config, self.table.device)
        return self.table if self.complete else self._build_whole_table()

    def _vocabulary(self) -> str:
        return f"the vocabulary of {self.num_embeddings} tokens (ids 0..{self.num_embeddings - 1})"

    @torch.compiler.disable  # under torch.compile, hash between graphs: the hashing reads Python strings
    def _build_whole_table(self) -> torch.Tensor:
        with _untraced():
            rows = vocabulary_table(self.config, self.table.device).to(self.table.dtype)
            if torch.compiler.is_exporting():
                # torch.export traces with fake stand-ins for the buffers, so the rows cannot be stored: they
                # become a constant of the exported program instead.
                return rows
            self.table.copy_(rows)
            self.built.fill_(True)
        self.complete = True
        return self.table

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if (tracing or input_ids.is_cuda) and not torch.onnx.is_in_onnx_export():
            # A graph cannot raise from data, and reading a CUDA value back would stall every step: assert on the
            # device instead, so a bad id fails with this message, not an index kernel's.
            inside = ((input_ids >= 0) & (input_ids < self.num_embeddings)).all()
            torch._assert_async(inside, f"input_ids contain an id outside {self._vocabulary()}")
        elif not tracing and input_ids.numel():
            low, high = (int(x) for x in torch.aminmax(input_ids))
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(
                    f"input_ids contain id {high if high >= self.num_embeddings else low}, outside "
                    f"{self._vocabulary()}; to add tokens, use model.set_vocab(tokenizer)"
                )
        if self.config.embedding_table == "per_batch":
            return hash_embed_ids(input_ids, self.config)
        if self.complete or tracing:
            return nn.functional.embedding(input_ids, self.weight)
        if not bool(self.built[input_ids].all()):
            ids = torch.unique(input_ids)
            missing = ids[~self.built[ids]]
            vocab = self.config.vocab
            rows = hash_embed([vocab[i] for i in missing.tolist()], self.config, missing.device)
            self.table[missing] = rows.to(self.table.dtype)
            self.built[missing] = True
        return nn.functional.embedding(input_ids, self.table)


@contextlib.contextmanager
def _untraced():
    """Run real tensor code while torch.jit.trace records or torch.export traces with fake tensors."""
    from torch.utils._python_dispatch import _disable_current_modes

    jit_state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        with _disable_current_modes():
            yield
    finally:
        torch._C._set_tracing_state(jit_state)


def hash_embed(tokens: list[str], config, device=None) -> torch.Tensor:
    """The [len(tokens), embedding_size] hash embeddings of any token strings under `config`'s hash settings
    (the same values the model uses for its vocabulary; `##` pieces and special tokens as in the vocabulary),
    computed on `device` (default: the CPU)."""
    return hash_embedding_table(
        tokens,
        embedding_size=config.embedding_size,
        max_ngram_order=config.max_ngram_order,
        hash_function=config.hash_function,
        hash_seed=config.hash_seed,
        special_tokens=config.special_tokens,
        continuing_subword_prefix=config.continuing_subword_prefix,
        hash_version=config.hash_version,
        device=device,
    )


def hash_embed_ids(input_ids: torch.Tensor, config) -> torch.Tensor:
    """The hash embeddings of token ids ([..., embedding_size]), computing each distinct id once."""
    ids, inverse = torch.unique(input_ids, return_inverse=True)
    vocab = config.vocab
    return hash_embed([vocab[i] for i in ids.tolist()], config, input_ids.device)[inverse]


def vocabulary_table(config, device=None) -> torch.Tensor:
    """The word-embedding table of the config's vocabulary, computed on `device` (default: the CPU)."""
    _require_vocab(config)
    return hash_embed(config.vocab, config, device)


class EelbertNgramBuckets(nn.EmbeddingBag):
    """The learned part of the word embedding (`config.ngram_buckets` > 0), added to the fixed hash embedding as
    fastText's subword buckets: token i gets the mean of the learned vectors of its n-grams' buckets
    (`ngram_bucket_ids`). Zero at initialization, so a new model starts with the paper's embedding exactly.

    The bucket lists of the whole vocabulary (about 17 per token) are computed once and kept outside the state
    dict: at construction/load (embedding_table "full") or at the first call ("lazy"); "per_batch" computes those
    of each batch's ids on every call instead. Each call looks up every distinct id of the batch once."""

    def __init__(self, config):
        # Built from zeros, not reset_parameters' random draw: the other parameters then get the same random
        # values as without buckets (_init_weights zeros the table again, except where a checkpoint loads it).
        zeros = torch.zeros(config.ngram_buckets, config.embedding_size)
        super().__init__(config.ngram_buckets, config.embedding_size, mode="mean", _weight=zeros)
        self.config = config
        self.index = None  # (vocab, flat bucket ids, offsets, counts) of the whole vocabulary

    def bucket_ids(self, tokens: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        return ngram_bucket_ids(
            tokens, num_buckets=config.ngram_buckets, max_ngram_order=config.max_ngram_order,
            hash_seed=config.hash_seed, special_tokens=config.special_tokens,
            continuing_subword_prefix=config.continuing_subword_prefix, device=device,
        )

    def initialize(self):
        if self.config.embedding_table == "full" and self.weight.device.type != "meta":
            self._vocabulary_index(self.weight.device)

    def _vocabulary_index(self, device):
        vocab = self.config.vocab
        if self.index is None or self.index[0] is not vocab:  # not built yet, or model.set_vocab since
            flat, offsets = self.bucket_ids(list(vocab), "cpu")
            self.index = (vocab, flat, offsets, torch.diff(offsets, append=offsets.new_tensor([len(flat)])))
        if self.index[1].device != device:
            self.index = (vocab, *(t.to(device) for t in self.index[1:]))
        return self.index[1:]

    @torch.compiler.disable  # the bucket lists come from the vocabulary's Python strings
    def _bags(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EmbeddingBag inputs of the distinct ids `ids`."""
        if self.config.embedding_table == "per_batch":
            vocab = self.config.vocab
            return self.bucket_ids([vocab[i] for i in ids.tolist()], ids.device)
        flat, offsets, counts = self._vocabulary_index(ids.device)
        starts, counts = offsets[ids], counts[ids]
        bag_offsets = counts.cumsum(0) - counts
        # Position j of bag b is flat[starts[b] + j]: one gather for all bags.
        within = torch.arange(int(counts.sum()), device=ids.device) - torch.repeat_interleave(bag_offsets, counts)
        return flat[torch.repeat_interleave(starts, counts) + within], bag_offsets

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.compiler.is_exporting():  # the bags' sizes depend on the ids' values
            raise ValueError("a model with learned n-gram buckets (ngram_buckets > 0) cannot be traced or exported "
                             "yet (torch.compile works)")
        ids, inverse = torch.unique(input_ids, return_inverse=True)
        return super().forward(*self._bags(ids))[inverse]


class EelbertEmbeddings(nn.Module):
    """Hash word embeddings (plus the learned n-gram buckets, if any; optionally projected to hidden_size) + position
    + token type, then LayerNorm and dropout."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = EelbertHashEmbedding(config)
        self.ngram_buckets = EelbertNgramBuckets(config) if config.ngram_buckets else None
        self.projection = (
            nn.Linear(config.embedding_size, config.hidden_size) if config.embedding_projection else None
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings).unsqueeze(0), persistent=False)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
            if self.ngram_buckets is not None:
                inputs_embeds = inputs_embeds + self.ngram_buckets(input_ids)
        seq_length = inputs_embeds.shape[1]
        if seq_length > self.position_ids.shape[1]:
            raise ValueError(
                f"sequence length {seq_length} exceeds max_position_embeddings ({self.position_ids.shape[1]})"
            )
        if position_ids is None:
            position_ids = self.position_ids[:, :seq_length]
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        if self.projection is not None:
            inputs_embeds = self.projection(inputs_embeds)
        # The buffer follows .half()/.to(); the learned parts set the compute dtype.
        embeddings = inputs_embeds.to(self.position_embeddings.weight.dtype)
        embeddings = embeddings + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class EelbertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.is_causal = False  # an encoder; sdpa would otherwise assume causal attention

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        query = self.query(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.value(hidden_states).view(hidden_shape).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        if output_attentions:  # only eager attention materialises the weights that output_attentions returns
            attention_interface = eager_attention_forward
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
        )
        return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights


class EelbertSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class EelbertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = EelbertSelfAttention(config)
        self.output = EelbertSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, output_attentions)
        return self.output(attn_output, hidden_states), attn_weights


class EelbertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class EelbertOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class EelbertLayer(GradientCheckpointingLayer):
    """One BERT layer. As a GradientCheckpointingLayer, model.gradient_checkpointing_enable() (with its
    `every_n_layers` and `gradient_checkpointing_kwargs`) checkpoints it; its tensors are therefore passed
    positionally."""

    def __init__(self, config):
        super().__init__()
        self.attention = EelbertAttention(config)
        self.intermediate = EelbertIntermediate(config)
        self.output = EelbertOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, output_attentions)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, attn_weights


class EelbertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([EelbertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, attn_weights = layer(hidden_states, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


class EelbertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        # BERT pools by taking the hidden state of the first ([CLS]) token.
        return self.activation(self.dense(hidden_states[:, 0]))


class EelbertPreTrainedModel(PreTrainedModel):
    config: EelbertConfig
    config_class = EelbertConfig
    base_model_prefix = "eelbert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["EelbertEmbeddings", "EelbertLayer"]
    _tied_weights_keys = None

    def __init__(self, config, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # The tags transformers' push_to_hub and Trainer put in the model card; a list per model, since
        # add_model_tags and push_to_hub(tags=...) append to it.
        self.model_tags = ["eelbert"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, EelbertHashEmbedding):
            # Not a parameter: a pure function of the vocabulary strings, recomputed on every build and load.
            module.initialize()
        elif isinstance(module, EelbertNgramBuckets):
            # Zeros: a new model's word embedding is the paper's fixed one; training learns the offset.
            init.zeros_(module.weight)
            module.initialize()
        elif isinstance(module, EelbertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).unsqueeze(0))
        elif isinstance(module, EelbertLMPredictionHead):
            init.zeros_(module.bias)
            if module.decoder is None:  # scores against the fixed hash table: start at BERT's score scale
                init.constant_(module.LayerNorm.weight, std / HASH_TABLE_RMS)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, then: a checkpoint folder that also holds a tokenizer must hold the one
        its vocabulary came from (pipelines load both from the folder; other ids would silently give other outputs)."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        folder = os.path.join(str(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        if os.path.isdir(folder):
            model.config.check_tokenizer(folder)
        return loaded

    def get_input_embeddings(self):
        return self.base_model.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        raise ValueError("EELBERT's word embeddings are computed from the vocabulary: use model.set_vocab(tokenizer)")

    def set_vocab(self, tokenizer_or_tokens, special_tokens=None):
        """Bind a new vocabulary (a tokenizer, or token strings in id order) after e.g. `tokenizer.add_tokens`.
        Every token gets its hash embedding with no new parameters; ids that keep their string keep their
        masked-LM bias (a learned decoder gets fresh rows for new ids)."""
        old_vocab = self.config.vocab
        self.config.set_vocab(tokenizer_or_tokens, special_tokens)
        old = self.get_input_embeddings()
        embedding = EelbertHashEmbedding(self.config).to(device=old.table.device, dtype=old.table.dtype)
        embedding.initialize()
        self.base_model.embeddings.word_embeddings = embedding
        if hasattr(self, "cls"):
            self.cls.predictions.resize(old_vocab, self.config)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        if new_num_tokens is None or new_num_tokens == self.config.vocab_size:
            return self.get_input_embeddings()
        raise ValueError(
            f"EELBERT cannot resize to {new_num_tokens} tokens from a number alone: its embeddings are computed "
            "from the token strings. Call model.set_vocab(tokenizer) after tokenizer.add_tokens(...) instead."
        )


def _attention_mask_4d(attention_mask, dtype):
    # [batch, seq] of 1/0 -> additive [batch, 1, 1, seq] (0 to attend, a large negative to ignore).
    if attention_mask is None:
        return None
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


def _check_inputs(input_ids, inputs_embeds, attention_mask, expected_dims=2):
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
    if input_ids is not None and input_ids.dim() != expected_dims:
        raise ValueError(f"input_ids must have {expected_dims} dimensions, got shape {tuple(input_ids.shape)}")
    if inputs_embeds is not None and inputs_embeds.dim() != expected_dims + 1:
        raise ValueError(f"inputs_embeds must have {expected_dims + 1} dimensions, got shape {tuple(inputs_embeds.shape)}")
    if input_ids is not None and input_ids.dtype not in (torch.long, torch.int):
        raise ValueError(f"input_ids must be integer token ids (torch.long or torch.int), got dtype {input_ids.dtype}")
    shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
    if 0 in shape:
        # As in BERT (which fails with a reshape error): every sequence needs its first ([CLS]) token.
        raise ValueError(f"the input is empty (shape {tuple(shape)}): give at least one sequence of at least one token")
    if attention_mask is not None and attention_mask.shape != shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but the input has shape {tuple(shape)}")


class EelbertModel(EelbertPreTrainedModel):
    """The bare EELBERT encoder: hash embeddings, BERT layers and (optionally) BERT's pooler."""

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = EelbertEmbeddings(config)
        self.encoder = EelbertEncoder(config)
        self.pooler = EelbertPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """`inputs_embeds`, if given instead of `input_ids`, are [batch, seq, embedding_size] hash embeddings
        (e.g. from `eelbert.hash_embed`), before the optional projection; they are used as given (the learned
        n-gram buckets, which need the ids, are not added)."""
        _check_inputs(input_ids, inputs_embeds, attention_mask)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        encoder_outputs = self.encoder(
            embedding_output,
            _attention_mask_4d(attention_mask, embedding_output.dtype),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        sequence_output = encoder_outputs.last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class EelbertLMPredictionHead(nn.Module):
    """Transform to embedding_size, then score every token: against the fixed hash table (`mlm_decoder="hash"`,
    nothing vocabulary-sized to store but the bias) or with a learned decoder (`mlm_decoder="learned"`)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.decoder = (
            nn.Linear(config.embedding_size, config.vocab_size, bias=False) if config.mlm_decoder == "learned" else None
        )
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def transform(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))

    def decoder_weight(self, hash_table):
        """The [vocab_size, embedding_size] matrix each token is scored with."""
        return self.decoder.weight if self.decoder is not None else hash_table

    def forward(self, hidden_states, hash_table):
        hidden_states = self.transform(hidden_states)
        return hidden_states @ self.decoder_weight(hash_table).to(hidden_states.dtype).T + self.bias

    @torch.no_grad()
    def resize(self, old_vocab, config):
        """Carry the bias (and learned decoder rows) of every token string that is still in the vocabulary."""
        old_index = {token: i for i, token in enumerate(old_vocab)}
        kept = [(new, old_index[t]) for new, t in enumerate(config.vocab) if t in old_index]
        new_ids = torch.tensor([n for n, _ in kept], dtype=torch.long)
        old_ids = torch.tensor([o for _, o in kept], dtype=torch.long)
        bias = torch.zeros(config.vocab_size, dtype=self.bias.dtype, device=self.bias.device)
        bias[new_ids] = self.bias[old_ids]
        self.bias = nn.Parameter(bias)
        if self.decoder is not None:
            decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=False).to(self.decoder.weight)
            nn.init.normal_(decoder.weight, std=config.initializer_range)
            decoder.weight[new_ids] = self.decoder.weight[old_ids]
            self.decoder = decoder


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T + bias` against `labels`, and its gradients, computed in chunks of
    rows during the forward pass: the [n, vocab_size] logits, their softmax and its gradient, three tensors as
    large as the rest of a tiny model's step together, never exist at once (as Liger's fused linear cross-entropy).
    The backward pass only scales the gradients kept from the forward pass. Computed in fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_rows, count):
        with torch.autocast(hidden.device.type, enabled=False):  # in fp32 under bf16/fp16 autocast too
            n = hidden.shape[0]
            h, w, b = hidden.float(), weight.float(), bias.float()
            grad_hidden = torch.empty_like(h)
            grad_bias = torch.zeros_like(b)
            grad_weight = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
            loss = h.new_zeros(())
            # The chunks' one big tensor, allocated once: logits, then in place exp(logits - max). (A fresh one per
            # chunk is fresh memory the system must hand over and zero each time.)
            chunk = h.new_empty(min(n, chunk_rows), w.shape[0])
            for start in range(0, n, chunk_rows):
                rows, targets = h[start : start + chunk_rows], labels[start : start + chunk_rows]
                exps = torch.addmm(b, rows, w.T, out=chunk[: len(rows)])
                target_logits = exps.gather(1, targets[:, None]).squeeze(1)
                top = exps.amax(1, keepdim=True)
                sums = exps.sub_(top).exp_().sum(1, keepdim=True)
                loss += (sums.log() + top).squeeze(1).sub_(target_logits).sum()
                # d loss / d logits = exps / sums - onehot(targets): the 1 / sums scales the small factor of each product,
                # and the one-hot part is a gather / scatter, so the big tensor is read by the products only.
                inverse = sums.reciprocal_()
                grad_hidden[start : start + chunk_rows] = (exps @ w).mul_(inverse).sub_(w[targets])
                grad_bias.addmv_(exps.T, inverse.squeeze(1)).index_add_(0, targets, torch.ones_like(target_logits), alpha=-1)
                if grad_weight is not None:
                    grad_weight.addmm_(exps.T, rows * inverse).index_add_(0, targets, rows, alpha=-1)
            scale = 1 / max(float(n if count is None else count), 1)  # no labelled rows: loss 0, not 0 / 0
            ctx.save_for_backward(
                (grad_hidden * scale).to(hidden.dtype),
                (grad_bias * scale).to(bias.dtype),
                None if grad_weight is None else (grad_weight * scale).to(weight.dtype),
            )
            return (loss * scale).to(torch.promote_types(hidden.dtype, torch.float32))  # an fp32 loss under bf16

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_bias, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_loss.to(grad_hidden.dtype),
                None if grad_weight is None else grad_weight * grad_loss.to(grad_weight.dtype),
                grad_bias * grad_loss.to(grad_bias.dtype), None, None, None)


def masked_lm_loss(head, hidden_states, labels, hash_table=None, num_items_in_batch=None, chunk_rows=256):
    """The masked-LM loss of the labelled rows `hidden_states` ([n, hidden]) under a prediction head with
    `transform`, a decoder weight and `bias` (EELBERT's, or BERT's `cls.predictions`), without holding their
    [n, vocab_size] logits: see ChunkedLinearCrossEntropy. The mean over the n rows, or the sum divided by
    `num_items_in_batch` (the Trainer's count of labels over all processes and accumulation steps)."""
    transformed = head.transform(hidden_states)
    weight = head.decoder_weight(hash_table) if hash_table is not None else head.decoder.weight
    return ChunkedLinearCrossEntropy.apply(transformed, weight, head.bias, labels, chunk_rows, num_items_in_batch)


class EelbertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = EelbertLMPredictionHead(config)

    def forward(self, sequence_output, hash_table):
        return self.predictions(sequence_output, hash_table)


class EelbertForMaskedLM(EelbertPreTrainedModel):
    # The Trainer passes num_items_in_batch, so that the loss is the mean over every label of all processes and
    # accumulation steps (not a mean of per-batch means): 2 processes then train exactly as 1 with their batch.
    accepts_loss_kwargs = True

    def __init__(self, config):
        super().__init__(config)
        if config.embedding_table == "per_batch" and config.mlm_decoder == "hash":
            raise ValueError(
                "embedding_table='per_batch' keeps no hash table, but mlm_decoder='hash' scores every token "
                "against it: use embedding_table='lazy' or 'full' for masked-LM"
            )
        self.eelbert = EelbertModel(config, add_pooling_layer=False)
        self.cls = EelbertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        num_items_in_batch=None,
    ):
        """`labels`: [batch, seq] token ids to predict, -100 where no prediction is scored; the loss is their mean,
        or their sum divided by `num_items_in_batch` when given (the Trainer's count across processes). With
        `config.sparse_prediction`, logits are returned for the labelled positions only ([n, vocab_size]), and
        in training (train mode with gradients recorded) not at all (`logits=None`): the loss and its gradients
        are then computed chunk by chunk, without the [n, vocab_size] logits (masked_lm_loss)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.eelbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        sequence_output = outputs.last_hidden_state
        if labels is not None and self.config.sparse_prediction:
            labelled = labels != -100
            sequence_output, labels = sequence_output[labelled], labels[labelled]
        table = self.eelbert.embeddings.word_embeddings.weight
        prediction_scores = loss = None
        if labels is not None and self.config.sparse_prediction and self.training and torch.is_grad_enabled():
            loss = masked_lm_loss(self.cls.predictions, sequence_output, labels, table, num_items_in_batch)
        else:
            prediction_scores = self.cls(sequence_output, table)
            if labels is not None:
                reduction = "mean" if num_items_in_batch is None else "sum"
                loss = CrossEntropyLoss(reduction=reduction)(prediction_scores.view(-1, self.config.vocab_size), labels.view(-1))
                if num_items_in_batch is not None:
                    loss = loss / num_items_in_batch
        output = MaskedLMOutput(
            loss=loss, logits=prediction_scores, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class EelbertForSequenceClassification(EelbertPreTrainedModel):
    """Pooled output -> dropout -> linear. Loss as in BERT: regression (num_labels == 1), single-label
    (integer labels) or multi-label (float labels) classification, or as `config.problem_type` says."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.eelbert = EelbertModel(config)
        classifier_dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.eelbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype)) if self.num_labels == 1 \
                    else MSELoss()(logits, labels)
            elif self.config.problem_type == "single_label_classification":
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class EelbertForMultipleChoice(EelbertPreTrainedModel):
    """Inputs are [batch, num_choices, seq]; each choice is scored from its pooled output."""

    def __init__(self, config):
        super().__init__(config)
        self.eelbert = EelbertModel(config)
        classifier_dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        _check_inputs(input_ids, inputs_embeds, attention_mask, expected_dims=3)
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]

        def flat(x):
            return x.reshape(-1, *x.shape[2:]) if x is not None else None

        outputs = self.eelbert(
            flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            inputs_embeds=flat(inputs_embeds),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)
        loss = CrossEntropyLoss()(logits, labels) if labels is not None else None
        output = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class EelbertForTokenClassification(EelbertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.eelbert = EelbertModel(config, add_pooling_layer=False)
        classifier_dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """`labels`: [batch, seq] class ids, -100 where no label is scored."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.eelbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class EelbertForQuestionAnswering(EelbertPreTrainedModel):
    """Extractive QA: a start and an end logit per token (config.num_labels must be 2)."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.eelbert = EelbertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.eelbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()
        total_loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are clamped to an ignored index, as in BERT.
            ignored_index = start_logits.size(1)
            start_positions = start_positions.view(-1).clamp(0, ignored_index)
            end_positions = end_positions.view(-1).clamp(0, ignored_index)
            loss_fct = CrossEntropyLoss(ignore_index=ignored_index)
            total_loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2
        output = QuestionAnsweringModelOutput(
            loss=total_loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


# save_pretrained copies these files next to every checkpoint (see AUTO_MAP in configuration_eelbert.py).
EelbertConfig.register_for_auto_class()
for _class_name, _auto_class in AUTO_CLASS_OF.items():
    globals()[_class_name].register_for_auto_class(_auto_class)

__all__ = ["hash_embed", "hash_embed_ids", "EelbertPreTrainedModel", *AUTO_CLASS_OF]
