"""The model heads by the names the command line and the size table use ("encoder", "masked-lm", ...).

The one list of heads is AUTO_MAP in modeling/configuration_eelbert.py (checkpoints carry it). This module reads
it from that file's source instead of importing it: configuration_eelbert imports transformers, which
`eelbert --help` must not wait for (seconds). Only the standard library here.
"""

import ast
import importlib.util
import re
from pathlib import Path


def source_literal(module: str, name: str):
    """The value of `NAME = <literal>` in a module's source, read without running the module."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{module} has no literal {name}")


def head_name(auto_class: str) -> str:
    """The name of the head an Auto class loads: AutoModel -> encoder, AutoModelForMaskedLM -> masked-lm."""
    task = auto_class.removeprefix("AutoModel").removeprefix("For")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "-", task).lower() or "encoder"


# Head name -> model class name ("masked-lm" -> "EelbertForMaskedLM"), in AUTO_MAP's order.
HEADS = {
    head_name(auto_class): target.split(".")[1]
    for auto_class, target in source_literal("eelbert.modeling.configuration_eelbert", "AUTO_MAP").items()
    if auto_class != "AutoConfig"
}
CLASSIFICATION_HEADS = sorted(head for head in HEADS if head.endswith("classification"))  # the heads with num_labels
