"""ONNX export with the hash embedding inside the graph.

`model.onnx` takes `input_ids`, `attention_mask` and `token_type_ids` like a BERT ONNX: the vocabulary is packed
into the graph as a constant (every token's marked string as UTF-8 bytes back to back, one length per token) and
the graph computes the hash embedding of each id from it with standard ONNX operators (no contrib ops), bit for
bit as `eelbert.hash_embed` does (modeling/hashing_eelbert.py: the same MurmurHash3, rolling hash, projection and
float64 pooling functions are traced here).

Without data-dependent shapes: each id's marked bytes are gathered into a fixed-width row ([ids, longest token]);
an n-gram of order n starts at every lead byte (one per code point) whose string still has n code points from
there, and its bytes are a window of at most 4n bytes after the start, masked to the bytes of its n code points.
Signatures are masked to 0 where no n-gram starts (0 projects to 0); pooling sums the int64 projections (exact),
then divides in float64 and rounds to float32, as hash_embed does.

A masked-LM head with `mlm_decoder="hash"` scores against the whole table: the graph computes it from constants
only, so onnxruntime computes it once, when the session is created (constant folding: ~16 s for BERT's 30,522
tokens on one core), not on every run. onnxruntime-web runs out of WASM memory folding it: a browser session turns
constant folding off (`disable_specified_optimizers: ['ConstantFolding']`, as examples/web does for fill-mask) and
computes the table on every run (~1.4 s).
"""

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from .modeling.hashing_eelbert import (
    SIGNATURE_MODULUS,
    WORD_START_MARKER,
    _project,
    _signatures,
    mark_token,
    murmur3_32,
    order_dimensions,
    projection_weights,
)
from .modeling.configuration_eelbert import EelbertConfig
from .modeling.modeling_eelbert import hash_embed_ids

# The layout transformers.js loads (and the Hub's ONNX models use): the graphs in onnx/, config.json beside them.
ONNX_GRAPH = "onnx/model.onnx"
ONNX_QUANTIZED_GRAPH = "onnx/model_quantized.onnx"
GRAPH_INPUTS = ("input_ids", "inputs_embeds")

_FOLDED_SIZE_LIMIT = 256  # elements

# Projections of the whole vocabulary are computed in groups of dimensions: bounds the int64 temporaries.
_DIMS_PER_GROUP = 16


def packed_vocabulary(config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The vocabulary as the graph holds it: every token's marked string (step 1; special tokens: the marker, then
    the token) as UTF-8 bytes back to back (uint8), each token's byte length (uint8, or int32 past 255 bytes),
    and the ids of the special tokens (int32)."""
    special = set(config.special_tokens)
    prefix = config.continuing_subword_prefix
    encoded = []
    for token in config.vocab:
        marked = WORD_START_MARKER + token if token in special else mark_token(token, prefix)
        try:
            encoded.append(marked.encode("utf-8"))
        except UnicodeEncodeError as error:
            raise ValueError(f"token {token!r} is not valid Unicode (lone surrogate): {error.reason}") from None
    lengths = torch.tensor([len(b) for b in encoded], dtype=torch.int64)
    data = torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8).clone()
    special_ids = torch.tensor([i for i, t in enumerate(config.vocab) if t in special], dtype=torch.int32)
    return data, lengths.to(torch.uint8 if int(lengths.max()) < 256 else torch.int32), special_ids


def _half_modulus() -> torch.Tensor:
    """B / 2 as a float64 tensor: a Python float scalar would reach the graph rounded to float32 (2**30)."""
    return torch.tensor(SIGNATURE_MODULUS / 2, dtype=torch.float64)


class PackedVocabularyEmbedding(nn.Module):
    """The hash embedding computed from the packed vocabulary with traceable, fixed-shape tensor code: the
    stand-in for EelbertHashEmbedding in an exported graph. `forward(ids)` embeds any ids ([..., d] float32);
    `weight` is the whole [vocab_size, d] table (a constant expression of the graph)."""

    def __init__(self, config):
        super().__init__()
        data, lengths, special_ids = packed_vocabulary(config)
        self.register_buffer("vocab_bytes", data)
        self.register_buffer("token_lengths", lengths)
        self.register_buffer("special_ids", special_ids)
        self.width = int(lengths.max())  # the longest marked token, in bytes
        # The longest special token (bytes after the marker): the width of the whole-string hash.
        self.special_width = int(lengths[special_ids.long()].long().max()) - 1 if special_ids.numel() else 0
        self.num_embeddings = config.vocab_size
        self.embedding_dim = config.embedding_size
        self.max_ngram_order = config.max_ngram_order
        self.hash_function = config.hash_function
        self.hash_seed = config.hash_seed
        self.register_buffer("projection_weights", projection_weights(config.embedding_size).clone())
        # Look ids up in `weight` instead of embedding them: for a graph that needs the whole table anyway (the
        # masked-LM head scores against it), so it holds one copy of the embedding's subgraph (see export_graph).
        self.lookup = False

    @property
    def weight(self) -> torch.Tensor:
        # The ids 0..V-1 computed from a vocabulary-sized constant, not torch.arange: the exporter's optimizer
        # would fold arange into a [V] int64 constant in the file (V * 8 bytes).
        return self._embed((self.token_lengths >= 0).long().cumsum(0) - 1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # ONNX's Gather wraps negative indices (-1 would be the last token); as vocab_size they are out of range,
        # which onnxruntime refuses with an error, as it does every id >= vocab_size.
        input_ids = torch.where(input_ids < 0, self.num_embeddings, input_ids)
        return nn.functional.embedding(input_ids, self.weight) if self.lookup else self._embed(input_ids)

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.reshape(-1)
        rows, valid = self._byte_rows(ids)
        table = self._pooled(rows, valid)
        if self.special_ids.numel():
            # Compared as int32: an int64 copy of the special ids would be folded into the file.
            is_special = (ids.int().unsqueeze(1) == self.special_ids).any(1, keepdim=True)
            table = torch.where(is_special, self._whole_string(rows, valid), table)
        return table.reshape(*input_ids.shape, self.embedding_dim)

    def _byte_rows(self, ids):
        """[ids, width] marked bytes (int64, zero past each token's end) and the mask of real bytes."""
        lengths = self.token_lengths.long()
        starts = lengths.cumsum(0) - lengths
        position = torch.arange(self.width)
        valid = position < lengths[ids].unsqueeze(1)
        index = (starts[ids].unsqueeze(1) + position).clamp(max=self.vocab_bytes.shape[0] - 1)
        return torch.where(valid, self.vocab_bytes[index].long(), 0), valid

    def _sig(self, data, member, lead, code_points):
        """sig in [0, B) of each row of byte windows: `data` [rows, w] int64 bytes, `member` the bytes of the
        n-gram (a prefix of the row), `lead` the bytes that start a code point, `code_points` the code point
        that starts there (rolling hash only; None for murmur3)."""
        if self.hash_function == "murmur3":
            return murmur3_32(torch.where(member, data, 0), member.long().sum(1), self.hash_seed) % SIGNATURE_MODULUS
        return _signatures(torch.where(member & lead, code_points, -1), "rolling", self.hash_seed)

    def _code_points(self, rows):
        """For the rolling hash: the code point that starts at each lead byte of `rows` (UTF-8 decoding; anything
        at other bytes). None for murmur3, which hashes the bytes."""
        if self.hash_function != "rolling":
            return None
        padded = nn.functional.pad(rows, (0, 3))
        b0, b1, b2, b3 = (padded[:, j : j + rows.shape[1]] for j in range(4))
        c1, c2, c3 = b1 & 0x3F, b2 & 0x3F, b3 & 0x3F
        two = (b0 & 0x1F) * 64 + c1
        three = (b0 & 0x0F) * 4096 + c1 * 64 + c2
        four = (b0 & 0x07) * 262144 + c1 * 4096 + c2 * 64 + c3
        return torch.where(b0 < 0x80, b0, torch.where(b0 < 0xE0, two, torch.where(b0 < 0xF0, three, four)))

    def _pooled(self, rows, valid):
        """Steps 3-6 on the marked bytes: [rows, d] float32."""
        n_rows, width = rows.shape
        lead = _lead_bytes(rows, valid)
        code_points = self._code_points(rows)
        count = lead.long().cumsum(1)  # code points up to and including each byte
        length = count[:, -1:]  # code points of the token
        parts, first_dim = [], 0
        for n, dims in enumerate(order_dimensions(self.embedding_dim, self.max_ngram_order), start=1):
            starts = lead & (count + n - 1 <= length)  # an n-gram starts there
            span = 4 * n  # an n-gram has at most 4n bytes
            pad = (0, span)
            p_rows, p_valid, p_lead = (nn.functional.pad(t, pad) for t in (rows, valid, lead))
            p_count = nn.functional.pad(count, pad)
            window = torch.arange(width).unsqueeze(1) + torch.arange(span)  # [width, span] byte positions
            data, member_valid, w_lead = p_rows[:, window], p_valid[:, window], p_lead[:, window]
            # A byte belongs to the n-gram starting at s when it lies before the (n+1)-th code point from s.
            member = member_valid & (p_count[:, window] <= (count + n - 1).unsqueeze(2))
            w_code_points = None
            if code_points is not None:
                w_code_points = nn.functional.pad(code_points, pad)[:, window].reshape(-1, span)
            sig = self._sig(data.reshape(-1, span), member.reshape(-1, span), w_lead.reshape(-1, span),
                            w_code_points).reshape(n_rows, width)
            weights = self.projection_weights[first_dim : first_dim + dims]
            grams = starts.long().sum(1, keepdim=True)
            # Signature 0 projects to 0 in every dimension: masking the signatures masks the projections.
            sig = torch.where(starts, sig, 0).reshape(-1)
            sums = []
            for group in range(0, dims, _DIMS_PER_GROUP):
                sums.append(_project(sig, weights[group : group + _DIMS_PER_GROUP]).reshape(n_rows, width, -1).sum(1))
            # Sums of integers below 2**53 are exact in float64; then one division and rounding, as hash_embed.
            sums = torch.cat(sums, 1).double()
            parts.append((sums / (grams.clamp(min=1).double() * _half_modulus())).float())
            first_dim += dims
        return torch.cat(parts, 1)

    def _whole_string(self, rows, valid):
        """Step 2: the projection of one hash of the whole (unmarked) token over all d dimensions."""
        # Special tokens are stored after the marker; the columns past the longest one are zero for them.
        rows, valid = rows[:, 1 : 1 + self.special_width], valid[:, 1 : 1 + self.special_width]
        sig = self._sig(rows, valid, _lead_bytes(rows, valid), self._code_points(rows))
        return (_project(sig, self.projection_weights).double() / _half_modulus()).float()


def _lead_bytes(rows, valid):
    """The first byte of each UTF-8 code point (not a continuation byte 10xxxxxx) among the valid bytes."""
    return valid & ((rows & 0xC0) != 0x80)


def embed_for_onnx(input_ids: torch.Tensor, config) -> torch.Tensor:
    """The `inputs_embeds` a graph exported with `inputs="inputs_embeds"` expects: the hash embeddings of the
    ids' token strings."""
    return hash_embed_ids(input_ids, config)


class _Graph(nn.Module):
    """The model as a graph from (input_ids or inputs_embeds, attention_mask, token_type_ids) to its outputs."""

    def __init__(self, model, first_input, output_names):
        super().__init__()
        self.model, self.first_input, self.output_names = model, first_input, output_names

    def forward(self, first, attention_mask, token_type_ids):
        outputs = self.model(**{self.first_input: first}, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


def export_graph(module, example, *, input_names, output_names, dynamic_shapes):
    """The ONNX ModelProto of `module` called on `example`, as model.onnx is written: torch.onnx.export(dynamo=True),
    constant folding of small tensors only, without the exporter's per-node annotations."""
    import onnx_ir.passes.common  # the `onnx` extra, as torch.onnx.export(dynamo=True) needs it
    import onnxscript

    program = torch.onnx.export(
        module, example, dynamo=True, verbose=False, dynamic_shapes=dynamic_shapes, input_names=input_names,
        output_names=output_names, optimize=False,
    )
    # The exporter's optimizer, folding constants only up to a small size: by default it would store the
    # vocabulary-sized results of constant expressions (the whole table's intermediates) in the file.
    onnxscript.optimizer.optimize(program.model, output_size_limit=_FOLDED_SIZE_LIMIT)
    # Identical subgraphs computed once: the whole table, when both the input embedding and the head use it.
    onnx_ir.passes.common.CommonSubexpressionEliminationPass()(program.model)
    graph = program.model_proto
    _compact(graph)
    return graph


def _compact(model):
    """Drop what onnxruntime does not need from a ModelProto, in place: intermediate shapes (value_info; it infers
    them), node names, doc strings and metadata (the exporter's per-node stack traces would be most of the file),
    and long intermediate value names (short ones instead). For a model this small the names are a tenth of it."""
    graph = model.graph
    if any(attribute.type in (attribute.GRAPH, attribute.GRAPHS) for node in graph.node for attribute in node.attribute):
        raise ValueError("the graph has subgraphs (If/Loop/Scan), which _compact does not rename")
    kept = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    short_names = {}

    def short(name):
        return name if not name or name in kept else short_names.setdefault(name, f"{len(short_names):x}")

    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        del node.metadata_props[:]
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    del graph.value_info[:]


def quantize_onnx(path, output) -> Path:
    """`output`: the graph at `path` with 8-bit weights, by onnxruntime's dynamic quantization (MatMul/Gemm
    weights uint8 with one scale per tensor, activations quantized at run time by DynamicQuantizeLinear; Gather
    tables uint8): standard ONNX operators, so any onnxruntime loads it, and it computes the operators' exact
    integer products everywhere. Weights are uint8, not the default int8: on x86 CPUs without VNNI (AVX2)
    onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose 16-bit sums saturate, so
    native onnxruntime's outputs drift from the exact ones (and from onnxruntime-web's) by up to ~4e-3."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It logs a warning on the root logger for every integer tensor it declines to quantize (the vocabulary's).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(path, output, weight_type=QuantType.QUInt8)
    finally:
        root.setLevel(level)
    model = onnx.load(output)
    _compact(model)  # the quantizer infers every intermediate shape into value_info and names its nodes
    onnx.save(model, output)
    return Path(output)


def transformers_js_config(config, architecture: str) -> dict:
    """config.json of an exported folder: a BERT config (model_type "bert", architectures Bert*), so
    transformers.js and other ONNX runtimes that know BERT load the graph with BERT's inputs and outputs; the
    EELBERT fields stay beside it (all but the vocabulary and special tokens, which the graph and tokenizer.json
    hold) to say what the graph computes. No auto_map: there is nothing here for transformers' remote code to load."""
    fields = config.to_dict()
    for name in ("vocab", "special_tokens", "auto_map"):  # the special ids are in the graph
        fields.pop(name, None)
    fields["model_type"] = "bert"
    fields["architectures"] = [bert_architecture(architecture)]
    fields["exported_from"] = "eelbert"
    return fields


def bert_architecture(eelbert_architecture: str) -> str:
    """EelbertForMaskedLM -> BertForMaskedLM."""
    return eelbert_architecture.replace("Eelbert", "Bert", 1)


def exported_config(fields: dict):
    """The EelbertConfig (without vocabulary) of an exported folder's config.json fields, or None if the folder was
    not exported from EELBERT."""
    if fields.get("exported_from") != "eelbert":
        return None
    fields = {name: value for name, value in fields.items() if name not in ("model_type", "exported_from")}
    fields["architectures"] = [name.replace("Bert", "Eelbert", 1) for name in fields.get("architectures") or []]
    return EelbertConfig(**fields)


def export_onnx(model, folder, *, inputs: str = "input_ids") -> Path:
    """Export `model` (an EelbertModel or any task head) to folder/onnx/model.onnx, its int8 version to
    folder/onnx/model_quantized.onnx (`quantize_onnx`), and its config to folder/config.json: a BERT config
    (`transformers_js_config`), or for `inputs="inputs_embeds"` the EELBERT config `embed_for_onnx` needs.

    Inputs (int64, dynamic batch and sequence; multiple choice: [batch, choices, sequence]): `input_ids`,
    `attention_mask`, `token_type_ids`, with the hash embedding computed inside the graph from the packed
    vocabulary (see the module docstring); or, with `inputs="inputs_embeds"`, `inputs_embeds` [..., embedding_size]
    float32 from `embed_for_onnx` instead of `input_ids`. Outputs: the model's outputs with their transformers
    names (`last_hidden_state` and `pooler_output`, `logits`, or `start_logits` and `end_logits`).
    Models with learned n-gram buckets (`ngram_buckets` > 0) are refused. Nothing is written unless the export succeeds."""
    if inputs not in GRAPH_INPUTS:
        raise ValueError(f"inputs must be one of {GRAPH_INPUTS}, got {inputs!r}")
    if getattr(model.config, "model_type", None) != "eelbert":
        raise ValueError(f"only EELBERT models can be exported this way, got a {type(model).__name__}")
    if getattr(model.config, "ngram_buckets", 0):
        raise ValueError(f"the ONNX export does not support the learned n-gram buckets yet (ngram_buckets="
                         f"{model.config.ngram_buckets}): only models with ngram_buckets=0 can be exported")
    config, architecture = model.config, type(model).__name__
    embedding = PackedVocabularyEmbedding(config)  # refuses unencodable tokens
    model = copy.deepcopy(model).eval().float()  # the export swaps the embedding module: not the caller's model
    model.base_model.embeddings.word_embeddings = embedding
    embedding.lookup = getattr(config, "mlm_decoder", None) == "hash" and type(model).__name__ == "EelbertForMaskedLM"

    multiple_choice = type(model).__name__ == "EelbertForMultipleChoice"
    shape = (2, 2, 8) if multiple_choice else (2, 8)
    input_ids = torch.arange(math.prod(shape)).reshape(shape) % config.vocab_size
    first = input_ids if inputs == "input_ids" else embed_for_onnx(input_ids, config)
    example = (first, torch.ones(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long))
    with torch.no_grad():
        output_names = list(model(**{inputs: first}, return_dict=True).keys())  # the outputs that are not None
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=config.max_position_embeddings)
    dims = {0: batch, 1: torch.export.Dim("choices"), 2: sequence} if multiple_choice else {0: batch, 1: sequence}
    graph = export_graph(
        _Graph(model, inputs, output_names).eval(), example, input_names=[inputs, "attention_mask", "token_type_ids"],
        output_names=output_names, dynamic_shapes={"first": dims, "attention_mask": dims, "token_type_ids": dims},
    )

    folder = Path(folder)
    _write_graphs(graph, folder)
    if inputs == "input_ids":
        (folder / "config.json").write_text(json.dumps(transformers_js_config(config, architecture), indent=2, sort_keys=True) + "\n")
    else:  # embed_for_onnx needs the vocabulary: the EELBERT config
        config.save_pretrained(folder)
    return folder / ONNX_GRAPH


def export_bert_onnx(model, folder) -> Path:
    """Export a plain transformers BERT encoder (a `BertModel`: a BERT baseline, a sentence-transformers teacher) on
    `input_ids`, `attention_mask` and `token_type_ids` to folder/onnx/model.onnx (`last_hidden_state`) and its int8
    version to folder/onnx/model_quantized.onnx, with the exporter and quantization `export_onnx` uses, so that the
    sizes compare with EELBERT's. Writes no config: the folder's own config.json describes the model."""
    if getattr(getattr(model, "config", None), "model_type", None) != "bert":
        raise ValueError(f"export_bert_onnx exports BERT encoders, got a {type(model).__name__}; "
                         "EELBERT models: export_onnx")
    model = copy.deepcopy(model).eval().float()
    shape = (2, 8)
    input_ids = torch.arange(math.prod(shape)).reshape(shape) % model.config.vocab_size
    example = (input_ids, torch.ones(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    dims = {0: batch, 1: sequence}
    graph = export_graph(
        _Graph(model, "input_ids", ["last_hidden_state"]).eval(), example,
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_shapes={"first": dims, "attention_mask": dims, "token_type_ids": dims},
    )
    folder = Path(folder)
    _write_graphs(graph, folder)
    return folder / ONNX_GRAPH


def _write_graphs(graph, folder: Path) -> None:
    """folder/onnx/model.onnx and its int8 version (quantize_onnx), both made before anything is written to folder."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model_quantized.onnx"
        fp32.write_bytes(graph.SerializeToString())
        quantize_onnx(fp32, int8)
        (folder / ONNX_GRAPH).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fp32, folder / ONNX_GRAPH)
        shutil.copyfile(int8, folder / ONNX_QUANTIZED_GRAPH)
