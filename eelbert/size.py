"""Size accounting: parameters and weight-file bytes of EELBERT models against their BERT baselines.

`weights_bytes` is the one count of a checkpoint's bytes: the size table, the model card and the command line
all use it."""

import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from .heads import HEADS
from .modeling import modeling_eelbert
from .presets import BASELINE_OF, EELBERT_PRESETS, baseline_config, preset_config

BERT_UNCASED_VOCAB_SIZE = 30522
WEIGHT_FILES = ("*.safetensors", "onnx/model.onnx")  # fp32/fp16/bf16 and int8 checkpoints, the fp32 ONNX graph


def weights_bytes(model_or_folder) -> int:
    """Bytes of the weight files of a checkpoint folder (what a download stores), or of the folder that
    `model.save_pretrained` writes for a model."""
    if isinstance(model_or_folder, torch.nn.Module):
        with tempfile.TemporaryDirectory() as folder:
            model_or_folder.save_pretrained(folder)
            return weights_bytes(folder)
    folder = Path(model_or_folder)
    return sum(file.stat().st_size for pattern in WEIGHT_FILES for file in folder.glob(pattern))


def bert_class_of(eelbert_class_name: str) -> type:
    """The BERT model class with the same head (EelbertForMaskedLM -> BertForMaskedLM)."""
    return getattr(transformers, eelbert_class_name.replace("Eelbert", "Bert", 1))


@dataclass
class SizeRow:
    preset: str
    head: str  # as on the command line: "encoder" (AutoModel), "masked-lm", ...
    parameters: int
    file_bytes: int
    baseline: str
    baseline_parameters: int
    baseline_file_bytes: int

    @property
    def ratio(self) -> float:
        """EELBERT bytes / BERT bytes."""
        return self.file_bytes / self.baseline_file_bytes


DTYPE_LABELS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_dtype(folder) -> torch.dtype:
    """The floating-point dtype a checkpoint's model.safetensors stores its weights in (the shipped models: float16
    on disk, float32 once loaded)."""
    from safetensors import safe_open

    with safe_open(Path(folder) / "model.safetensors", "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    floating = {_SAFETENSORS_DTYPES[d] for d in dtypes if d in _SAFETENSORS_DTYPES}
    return floating.pop() if len(floating) == 1 else torch.float32


@functools.lru_cache(maxsize=8)
def _bert_size(bert_class: str, bert_config: str, dtype: torch.dtype) -> tuple[int, int]:
    return saved_size(getattr(transformers, bert_class)(transformers.BertConfig.from_dict(json.loads(bert_config))).to(dtype))


def bert_counterpart(config, architecture: str, dtype=torch.float32) -> tuple[str, str, int, int]:
    """Name, class, parameters and weight bytes (stored in `dtype`) of the BERT with the same encoder, head and
    vocabulary size as an EELBERT config: its preset's baseline (as in the size table), else a BERT of its shape."""
    if config.preset in BASELINE_OF:
        name = BASELINE_OF[config.preset]
        bert = baseline_config(name, vocab_size=config.vocab_size)
    else:
        name = "BERT with the same encoder"
        bert = transformers.BertConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size)
    bert.num_labels = config.num_labels  # the classification heads' size
    bert_class = bert_class_of(architecture).__name__
    return (name, bert_class, *_bert_size(bert_class, bert.to_json_string(), dtype))


def saved_size(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, weights_bytes) of a model."""
    return sum(p.numel() for p in model.parameters()), weights_bytes(model)


def size_report(presets=EELBERT_PRESETS, tokenizer=None, heads=("encoder", "masked-lm")) -> list[SizeRow]:
    """Build each preset and its BERT baseline with the same vocabulary, save both, and compare.
    Without a tokenizer the vocabulary is 30,522 placeholder strings (bert-base-uncased's size): the
    sizes depend on the number of tokens, not on their strings."""
    if tokenizer is None:
        vocab_args = dict(vocab=[f"token{i}" for i in range(BERT_UNCASED_VOCAB_SIZE)])
        vocab_size = BERT_UNCASED_VOCAB_SIZE
    else:
        vocab_args, vocab_size = {}, len(tokenizer)
    unknown = sorted(set(heads) - set(HEADS))
    if unknown:
        raise ValueError(f"unknown heads {unknown}: known heads are {sorted(HEADS)}")
    rows = []
    for preset in presets:
        config = preset_config(preset, tokenizer=tokenizer, **vocab_args)
        bert_config = baseline_config(BASELINE_OF[preset], vocab_size=vocab_size)
        for head in heads:
            eelbert_class, bert_class = getattr(modeling_eelbert, HEADS[head]), bert_class_of(HEADS[head])
            parameters, file_bytes = saved_size(eelbert_class(config))
            baseline_parameters, baseline_bytes = saved_size(bert_class(bert_config))
            rows.append(
                SizeRow(preset, head, parameters, file_bytes, BASELINE_OF[preset], baseline_parameters, baseline_bytes)
            )
    return rows


def format_size_table(rows: list[SizeRow]) -> str:
    """A markdown table of the report."""
    lines = [
        "| model | head | parameters | model.safetensors | BERT baseline | BERT parameters | BERT model.safetensors | size ratio |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.head} | {r.parameters:,} | {r.file_bytes:,} B ({r.file_bytes / 1e6:.2f} MB) | "
            f"{r.baseline} | {r.baseline_parameters:,} | {r.baseline_file_bytes:,} B ({r.baseline_file_bytes / 1e6:.1f} MB) | "
            f"{r.ratio:.3f} (1/{1 / r.ratio:.1f}) |"
        )
    return "\n".join(lines)
