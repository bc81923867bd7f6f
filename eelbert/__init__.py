"""eelbert: EELBERT models for Hugging Face transformers.

`import eelbert` registers EELBERT with the Auto classes, so `AutoConfig`, `AutoModel` and
`AutoModelFor{MaskedLM, SequenceClassification, TokenClassification, QuestionAnswering, MultipleChoice}`
load EELBERT checkpoints without `trust_remote_code`. Checkpoints also carry the `modeling/` files, so
they load with `trust_remote_code=True` where eelbert is not installed.

The names below are imported on first use (PEP 562), so that the `eelbert` command can answer `--help`
without importing torch and transformers (seconds); the command registers the Auto classes itself.
"""

import importlib
import sys
from pathlib import Path

from .heads import HEADS

__version__ = "0.1.0"

# Public name -> the module that defines it (the model classes: one per head, from the one list of heads).
_HOME_OF = {
    "EelbertConfig": ".modeling.configuration_eelbert",
    "vocabulary_of": ".modeling.configuration_eelbert",
    "HASH_VERSION": ".modeling.hashing_eelbert",
    "EelbertPreTrainedModel": ".modeling.modeling_eelbert",
    **{class_name: ".modeling.modeling_eelbert" for class_name in HEADS.values()},
    "hash_embed": ".modeling.modeling_eelbert",
    "BASELINE_OF": ".presets",
    "EELBERT_PRESETS": ".presets",
    "baseline_config": ".presets",
    "preset_config": ".presets",
    "pretrained_models": ".presets",
    "pretrained_path": ".presets",
    "SizeRow": ".size",
    "format_size_table": ".size",
    "size_report": ".size",
}
__all__ = sorted(_HOME_OF)


def __getattr__(name):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'eelbert' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name], __name__), name)
    globals()[name] = value  # once: later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME_OF))


def register_auto_classes():
    """Register EelbertConfig with AutoConfig and each EELBERT model with its Auto class (idempotent)."""
    import transformers

    from .modeling import modeling_eelbert
    from .modeling.configuration_eelbert import AUTO_CLASS_OF, EelbertConfig

    transformers.AutoConfig.register("eelbert", EelbertConfig, exist_ok=True)
    for class_name, auto_class in AUTO_CLASS_OF.items():
        getattr(transformers, auto_class).register(EelbertConfig, getattr(modeling_eelbert, class_name), exist_ok=True)


def _started_as_the_command():
    """Whether this process is the `eelbert` command (its console script, or `python -m eelbert.cli`):
    the command registers after parsing its arguments, so that `--help` imports neither torch nor transformers."""
    argv = sys.orig_argv
    by_module = any(flag == "-m" and module == "eelbert.cli" for flag, module in zip(argv, argv[1:]))
    return by_module or Path(sys.argv[0]).name in ("eelbert", "eelbert.exe")


if not _started_as_the_command():
    register_auto_classes()
