"""Named presets (configs/*.json), the plain-BERT baseline each EELBERT preset is compared with, and the trained
models installed with the package (pretrained/).

The presets live in the library, not in modeling/: a checkpoint's remote-code copy of modeling/ has no configs
folder beside it, and a saved config.json already holds every field a preset set."""

import json
from importlib.resources import files
from pathlib import Path

from transformers import BertConfig

from .modeling.configuration_eelbert import EelbertConfig

# configs/ in the repository, installed as the package eelbert.configs.
PRESETS_DIR = Path(str(files("eelbert.configs")))
# pretrained/ in the repository, installed as eelbert.pretrained: trained models, one loadable folder each.
PRETRAINED_DIR = Path(str(files("eelbert.pretrained")))

EELBERT_PRESETS = ("eelbert-base", "eelbert-mini", "eelbert-tiny", "uno-eelbert")
# The BERT whose encoder each preset shares (UNO-EELBERT is the paper's one-layer shrink of BERT-tiny).
BASELINE_OF = {
    "eelbert-base": "bert-base",
    "eelbert-mini": "bert-mini",
    "eelbert-tiny": "bert-tiny",
    "uno-eelbert": "bert-tiny",
}


def preset_config(name_or_path, tokenizer=None, **overrides) -> EelbertConfig:
    """An `EelbertConfig` from a named preset (`eelbert-base`, `eelbert-mini`, `eelbert-tiny`, `uno-eelbert`) or a
    preset JSON file, with `overrides` applied and, if given, bound to `tokenizer` (or a list of tokens)."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PRESETS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
        raise ValueError(f"unknown preset {str(name_or_path)!r}: known presets are {known} (or pass a .json path)")
    fields = json.loads(path.read_text())
    if fields.pop("model_type", EelbertConfig.model_type) != EelbertConfig.model_type:
        raise ValueError(f"preset {str(name_or_path)!r} is not an EELBERT config (it is a plain-BERT baseline)")
    fields.setdefault("preset", path.stem)
    config = EelbertConfig(**{**fields, **overrides})
    if tokenizer is not None:
        config.set_vocab(tokenizer)
    return config


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


def pretrained_models() -> list[str]:
    """The names of the trained models installed with the package."""
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())


def pretrained_path(name: str) -> Path:
    """The folder of a trained model installed with the package (for example `uno-eelbert-sentence`, a
    sentence-transformers model: `SentenceTransformer(str(pretrained_path(name)), trust_remote_code=True)`)."""
    if name not in pretrained_models():
        raise ValueError(f"no pretrained model {name!r}: installed are {pretrained_models()}")
    return PRETRAINED_DIR / name


def local_or_installed(name_or_path: str) -> str:
    """The folder of a model installed with the package if `name_or_path` names one and is not a folder here (a
    local folder wins, as from_pretrained would take it), else `name_or_path` unchanged."""
    if name_or_path in pretrained_models() and not Path(name_or_path).is_dir():
        return str(pretrained_path(name_or_path))
    return name_or_path
