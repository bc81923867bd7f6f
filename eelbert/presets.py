"""Named presets (configs/*.json) and the plain-BERT baseline each EELBERT preset is compared with."""

import json

from transformers import BertConfig

from .modeling.configuration_eelbert import PRESETS_DIR

EELBERT_PRESETS = ("eelbert-base", "eelbert-mini", "eelbert-tiny", "uno-eelbert")
# The BERT whose encoder each preset shares (UNO-EELBERT is the paper's one-layer shrink of BERT-tiny).
BASELINE_OF = {
    "eelbert-base": "bert-base",
    "eelbert-mini": "bert-mini",
    "eelbert-tiny": "bert-tiny",
    "uno-eelbert": "bert-tiny",
}


def baseline_config(name: str, vocab_size: int | None = None) -> BertConfig:
    """The `BertConfig` of a plain-BERT preset (`bert-base`, `bert-mini`, `bert-tiny`)."""
    path = PRESETS_DIR / f"{name}.json"
    if name not in BASELINE_OF.values() or not path.is_file():
        raise ValueError(f"unknown BERT baseline {name!r}: known baselines are {sorted(set(BASELINE_OF.values()))}")
    fields = json.loads(path.read_text())
    fields.pop("model_type")
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return BertConfig(**fields)
