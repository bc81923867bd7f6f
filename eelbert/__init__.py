"""eelbert: EELBERT models for Hugging Face transformers.

`import eelbert` registers EELBERT with the Auto classes, so `AutoConfig`, `AutoModel` and
`AutoModelFor{MaskedLM, SequenceClassification, TokenClassification, QuestionAnswering, MultipleChoice}`
load EELBERT checkpoints without `trust_remote_code`. Checkpoints also carry the `modeling/` files, so
they load with `trust_remote_code=True` where eelbert is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .modeling.configuration_eelbert import EelbertConfig, vocabulary_of
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
from .presets import BASELINE_OF, EELBERT_PRESETS, baseline_config
from .size import SizeRow, format_size_table, size_report

AutoConfig.register("eelbert", EelbertConfig, exist_ok=True)
for _auto, _model in (
    (AutoModel, EelbertModel),
    (AutoModelForMaskedLM, EelbertForMaskedLM),
    (AutoModelForSequenceClassification, EelbertForSequenceClassification),
    (AutoModelForTokenClassification, EelbertForTokenClassification),
    (AutoModelForQuestionAnswering, EelbertForQuestionAnswering),
    (AutoModelForMultipleChoice, EelbertForMultipleChoice),
):
    _auto.register(EelbertConfig, _model, exist_ok=True)

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
    "size_report",
    "vocabulary_of",
]
