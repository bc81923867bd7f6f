"""eelbert: EELBERT models for Hugging Face transformers.

`import eelbert` registers EELBERT with the Auto classes, so `AutoConfig`, `AutoModel` and
`AutoModelFor{MaskedLM, SequenceClassification, TokenClassification, QuestionAnswering, MultipleChoice}`
load EELBERT checkpoints without `trust_remote_code`. Checkpoints also carry the `modeling/` files, so
they load with `trust_remote_code=True` where eelbert is not installed.
"""

import transformers

from .modeling import modeling_eelbert
from .modeling.configuration_eelbert import AUTO_CLASS_OF, EelbertConfig, vocabulary_of
from .modeling.hashing_eelbert import HASH_VERSION
from .modeling.modeling_eelbert import (
    EelbertForMaskedLM,
    EelbertForMultipleChoice,
    EelbertForQuestionAnswering,
    EelbertForSequenceClassification,
    EelbertForTokenClassification,
    EelbertModel,
    EelbertPreTrainedModel,
    hash_embed,
)
from .presets import BASELINE_OF, EELBERT_PRESETS, baseline_config, preset_config
from .size import SizeRow, format_size_table, size_report

transformers.AutoConfig.register("eelbert", EelbertConfig, exist_ok=True)
for _class_name, _auto_class in AUTO_CLASS_OF.items():
    getattr(transformers, _auto_class).register(EelbertConfig, getattr(modeling_eelbert, _class_name), exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "BASELINE_OF",
    "EELBERT_PRESETS",
    "HASH_VERSION",
    "EelbertConfig",
    "EelbertForMaskedLM",
    "EelbertForMultipleChoice",
    "EelbertForQuestionAnswering",
    "EelbertForSequenceClassification",
    "EelbertForTokenClassification",
    "EelbertModel",
    "EelbertPreTrainedModel",
    "SizeRow",
    "baseline_config",
    "format_size_table",
    "hash_embed",
    "preset_config",
    "size_report",
    "vocabulary_of",
]
