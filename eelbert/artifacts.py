"""Deployment artifacts: half-precision and int8 checkpoints, and ONNX graphs.

- fp16 / bf16: an ordinary checkpoint in that dtype (`save_pretrained` of the converted model); loads
  anywhere with `from_pretrained(..., trust_remote_code=True)`. `store_weights_in_float16`: float16 on disk,
  float32 once loaded (the models that ship with the package).
- int8: every matrix (linear weights, position and token-type embeddings) stored as int8 with one fp32
  scale per row (symmetric, round to nearest); vectors in fp16. `model.int8.safetensors` next to the config
  and the `modeling/` files; `load_int8` rebuilds a float model (needs this package).
- ONNX: `export_onnx` (eelbert.onnx_export): `onnx/model.onnx` and its int8 `onnx/model_quantized.onnx`, the model
  on `input_ids` with the hash embedding inside the graph (config.json a BERT config, the layout transformers.js
  loads), or on `inputs_embeds` from `embed_for_onnx(input_ids, config)`. `export_bert_onnx`: the same graphs of
  a plain BERT encoder, for size comparisons with the baselines.
"""

from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from .modeling.configuration_eelbert import auto_class_name
from .onnx_export import (  # noqa: F401  (the artifacts' one entry point)
    ONNX_GRAPH,
    ONNX_QUANTIZED_GRAPH,
    embed_for_onnx,
    export_bert_onnx,
    export_onnx,
    exported_config,
)

INT8_WEIGHTS = "model.int8.safetensors"
INT8_FORMAT = "eelbert-int8-rowwise-v1"


def checkpoint_config(folder):
    """The config of a local EELBERT checkpoint folder (fp32, fp16, bf16, int8 or ONNX), or a clear error. An ONNX
    folder's config.json is a BERT config with the EELBERT fields beside it: their EelbertConfig, without vocabulary."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
    config = AutoConfig.from_pretrained(folder)
    exported = exported_config(config.to_dict())
    if exported is not None:
        return exported
    if config.model_type != "eelbert":
        raise ValueError(f"{folder} is a {config.model_type} checkpoint, not EELBERT (see `eelbert convert`)")
    return config


def store_weights_in_float16(folder) -> None:
    """Rewrite a checkpoint's model.safetensors in float16 (half the bytes); config.json keeps dtype float32, so
    transformers loads the weights back as float32 and computes in float32 (outputs move by ~1e-4). For the models
    that ship: half the size on disk, full-precision compute on any CPU (unlike an fp16 export, which computes in
    float16)."""
    path = Path(folder) / "model.safetensors"
    tensors = load_file(path)
    save_file({name: value.half() if value.is_floating_point() else value for name, value in tensors.items()}, path,
              metadata={"format": "pt"})


def save_int8(model, folder) -> Path:
    """Write an int8 checkpoint of `model` (config, modeling files and `model.int8.safetensors`) to folder."""
    folder = Path(folder)
    model.save_pretrained(folder)  # the config (with architectures) and the modeling files
    (folder / "model.safetensors").unlink()
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().float().cpu()
        if value.dim() == 2:
            scale = value.abs().amax(dim=1).clamp(min=1e-12) / 127
            tensors[name + ":int8"] = torch.round(value / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
            tensors[name + ":scale"] = scale
        else:
            tensors[name] = value.half()
    path = folder / INT8_WEIGHTS
    save_file(tensors, path, metadata={"format": INT8_FORMAT})
    return path


def load_int8(folder):
    """A float32 model rebuilt from an int8 checkpoint written by `save_int8`."""
    folder = Path(folder)
    path = folder / INT8_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {INT8_WEIGHTS}: it is not an int8 EELBERT checkpoint")
    tensors = load_file(path)
    config = AutoConfig.from_pretrained(folder)
    model = getattr(transformers, auto_class_name(config)).from_config(config)
    state = {}
    for name, value in tensors.items():
        if name.endswith(":int8"):
            base = name[: -len(":int8")]
            state[base] = value.float() * tensors[base + ":scale"].unsqueeze(1)
        elif not name.endswith(":scale"):
            state[name] = value.float()
    model.load_state_dict(state, strict=True)
    return model.eval()
