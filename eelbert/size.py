"""Size accounting: parameters and `model.safetensors` bytes of EELBERT presets against their BERT baselines."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .modeling.modeling_eelbert import EelbertForMaskedLM, EelbertModel
from .presets import BASELINE_OF, EELBERT_PRESETS, baseline_config, preset_config

BERT_UNCASED_VOCAB_SIZE = 30522


@dataclass
class SizeRow:
    preset: str
    head: str  # "encoder" (AutoModel) or "masked-lm"
    parameters: int
    file_bytes: int
    baseline: str
    baseline_parameters: int
    baseline_file_bytes: int

    @property
    def ratio(self) -> float:
        """EELBERT bytes / BERT bytes."""
        return self.file_bytes / self.baseline_file_bytes


def saved_size(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, bytes of model.safetensors) of a model saved with save_pretrained."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return sum(p.numel() for p in model.parameters()), (Path(folder) / "model.safetensors").stat().st_size


def size_report(presets=EELBERT_PRESETS, tokenizer=None, heads=("encoder", "masked-lm")) -> list[SizeRow]:
    """Build each preset and its BERT baseline with the same vocabulary, save both, and compare.
    Without a tokenizer the vocabulary is 30,522 placeholder strings (bert-base-uncased's size): the
    sizes depend on the number of tokens, not on their strings."""
    from transformers import BertForMaskedLM, BertModel  # here: importing BERT's modeling slows `import eelbert`

    if tokenizer is None:
        vocab_args = dict(vocab=[f"token{i}" for i in range(BERT_UNCASED_VOCAB_SIZE)])
        vocab_size = BERT_UNCASED_VOCAB_SIZE
    else:
        vocab_args, vocab_size = {}, len(tokenizer)
    classes = {"encoder": (EelbertModel, BertModel), "masked-lm": (EelbertForMaskedLM, BertForMaskedLM)}
    rows = []
    for preset in presets:
        config = preset_config(preset, tokenizer=tokenizer, **vocab_args)
        bert_config = baseline_config(BASELINE_OF[preset], vocab_size=vocab_size)
        for head in heads:
            eelbert_class, bert_class = classes[head]
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
