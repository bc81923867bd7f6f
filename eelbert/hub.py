"""Publishing to the Hugging Face Hub with a generated model card."""

import json
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants

from .artifacts import INT8_WEIGHTS, ONNX_GRAPH, ONNX_QUANTIZED_GRAPH, checkpoint_config
from .modeling.configuration_eelbert import auto_class_name
from .size import DTYPE_LABELS, bert_counterpart, stored_dtype, weights_bytes

# What a Trainer checkpoint folder holds besides the model (the state to resume training: transformers.trainer's
# OPTIMIZER_NAME, SCHEDULER_NAME, ... and its subfolders), and the card, which push_to_hub writes itself.
NOT_UPLOADED = [
    "README.md", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin",
    "trainer_state.json", "checkpoint-*/", "runs/",
]
EXAMPLE = "EELBERT is a tiny BERT."
# The Hub task of each head, keyed by the Auto classes of AUTO_MAP (the one list of heads). Not read from
# transformers' pipelines: those change between versions (5.25 dropped question-answering), the Hub's tasks do not.
PIPELINE_TAG_OF = {
    "AutoModel": "feature-extraction",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForQuestionAnswering": "question-answering",
    "AutoModelForMultipleChoice": None,  # the Hub has no multiple-choice task
}


def check_hub_reachable(timeout: float = 5.0):
    """Raise a ConnectionError naming the Hub endpoint unless one connection to it (or to the proxy for it)
    opens: huggingface_hub and transformers retry for about a minute, then report a bare socket error."""
    if constants.HF_HUB_OFFLINE:
        raise ConnectionError(f"HF_HUB_OFFLINE is set, so the Hub at {constants.ENDPOINT} is not used: unset it")
    url = urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(
            f"cannot reach the Hub at {constants.ENDPOINT} ({error}): check the network connection, or set "
            "HF_ENDPOINT to a Hub you can reach (HF_HUB_OFFLINE=1 to use only downloaded files)"
        ) from None


def _eval_results(results: dict) -> list[EvalResult]:
    """model-index entries from an eval results JSON:
    {"dataset": {"name": "GLUE", "type": "glue"}, "results": [{"task": "sst2", "metric": "accuracy", "value": 81.2}]}"""
    try:
        dataset = results["dataset"]
        return [
            EvalResult(task_type="text-classification", dataset_type=dataset["type"], dataset_name=f"{dataset['name']} {r['task']}",
                       dataset_config=r["task"], metric_type=r["metric"], metric_value=r["value"])
            for r in results["results"]
        ]
    except (KeyError, TypeError) as error:
        raise ValueError(
            "eval results must look like {'dataset': {'name', 'type'}, 'results': [{'task', 'metric', 'value'}]}; "
            f"missing {error}"
        ) from None


def _weights_file(folder: Path) -> str:
    """Which artifact a checkpoint folder is, by its weights file (see eelbert.artifacts)."""
    for name in ("model.safetensors", INT8_WEIGHTS, ONNX_GRAPH):
        if (folder / name).is_file():
            return name
    raise FileNotFoundError(f"{folder} has no weights: no model.safetensors, {INT8_WEIGHTS} or {ONNX_GRAPH}")


def _graph_input(folder: Path) -> str:
    """The first input of the folder's ONNX graph: input_ids (embedding in the graph) or inputs_embeds."""
    import onnx

    return onnx.load(folder / ONNX_GRAPH, load_external_data=False).graph.input[0].name


def _tokenizer_class(folder: Path) -> str:
    """The transformers class of the folder's tokenizer (tokenizer_config.json), or AutoTokenizer."""
    path = folder / "tokenizer_config.json"
    name = json.loads(path.read_text()).get("tokenizer_class") if path.is_file() else None
    return name if isinstance(name, str) and name.isidentifier() else "AutoTokenizer"


def _example_batch(auto_class: str) -> list[str]:
    """Code that tokenizes an example `batch` for the model (multiple choice: one question with two choices)."""
    if auto_class == "AutoModelForMultipleChoice":
        return [f'batch = tokenizer(["{EXAMPLE}"] * 2, ["It fits on a phone.", "It needs a server."], return_tensors="pt")',
                "batch = {name: ids.unsqueeze(0) for name, ids in batch.items()}  # [questions, choices, tokens]"]
    return [f'batch = tokenizer(["{EXAMPLE}"], return_tensors="pt")']


def _usage(weights: str, repo_id: str, auto_class: str, architecture: str, pin: str, folder: Path,
           graph_input: str | None) -> list[str]:
    """The card's usage snippet for the artifact: from_pretrained for safetensors weights (any dtype),
    eelbert.artifacts for int8, onnxruntime for ONNX (`graph_input`: the graph's first input)."""
    tokenizer_class = _tokenizer_class(folder)
    if weights == INT8_WEIGHTS:
        return [
            "```python",
            "from huggingface_hub import snapshot_download",
            "from transformers import AutoTokenizer",
            "",
            "from eelbert.artifacts import load_int8  # needs the eelbert package",
            "",
            f'folder = snapshot_download("{repo_id}"{pin})',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f"model = load_int8(folder)  # {architecture} with float weights rebuilt from the int8 ones",
            *_example_batch(auto_class),
            "outputs = model(**batch)",
            "```",
            "",
            f"The weights are int8 with one fp32 scale per row (`{INT8_WEIGHTS}`); `load_int8` rebuilds a float model.",
        ]
    if weights == ONNX_GRAPH and graph_input == "input_ids":
        return [
            "```python",
            "import onnxruntime",
            "from huggingface_hub import snapshot_download",
            f"from transformers import {tokenizer_class}",
            "",
            f'folder = snapshot_download("{repo_id}"{pin})',
            # Not AutoTokenizer: it reads config.json first, whose remote code it would ask about for 15 s.
            f"tokenizer = {tokenizer_class}.from_pretrained(folder)",
            f'session = onnxruntime.InferenceSession(f"{{folder}}/{ONNX_GRAPH}")',
            *_example_batch(auto_class),
            "outputs = session.run(None, {name: ids.numpy() for name, ids in batch.items()})",
            "```",
            "",
            f"The graph ({architecture}) computes the hash embeddings of the token ids itself, from the vocabulary",
            "packed into it: onnxruntime and a tokenizer are all it needs. Its outputs have transformers' names",
            "(`session.get_outputs()`).",
        ]
    if weights == ONNX_GRAPH:
        return [
            "```python",
            "import onnxruntime",
            "from huggingface_hub import snapshot_download",
            "from transformers import AutoConfig, AutoTokenizer",
            "",
            "from eelbert.artifacts import embed_for_onnx  # needs the eelbert package",
            "",
            f'folder = snapshot_download("{repo_id}"{pin})',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            "config = AutoConfig.from_pretrained(folder)",
            f'session = onnxruntime.InferenceSession(f"{{folder}}/{ONNX_GRAPH}")',
            f'batch = tokenizer(["{EXAMPLE}"], return_tensors="pt")',
            "outputs = session.run(None, {",
            '    "inputs_embeds": embed_for_onnx(batch["input_ids"], config).numpy(),',
            '    "attention_mask": batch["attention_mask"].numpy(),',
            '    "token_type_ids": batch["token_type_ids"].numpy(),',
            "})",
            "```",
            "",
            f"The graph ({architecture}) runs on `inputs_embeds`, so it holds no vocabulary-sized table: `embed_for_onnx`",
            "computes the hash embeddings of the token ids first. Its outputs have transformers' names.",
        ]
    return [
        "```python",
        f"from transformers import AutoTokenizer, {auto_class}",
        "",
        # AutoTokenizer reads config.json first, and without trust_remote_code it stops at a 15 s [y/N] prompt.
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True{pin})',
        f'model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True{pin})',
        *_example_batch(auto_class),
        "outputs = model(**batch)",
        "```",
        "",
        "`trust_remote_code=True` runs the three `*_eelbert.py` files of this repository (torch + transformers only);",
        "pinning `revision` to a commit you have read keeps that code from changing under you. With the `eelbert`",
        "package installed (`import eelbert`) no remote code is needed.",
    ]


def model_card(folder, repo_id: str, revision: str | None = None, results: dict | None = None, license: str = "apache-2.0") -> str:
    """The README.md of a saved EELBERT checkpoint (safetensors in any dtype, int8 or ONNX, see eelbert.artifacts):
    YAML front matter, usage pinned to `revision`, sizes, training notes."""
    folder = Path(folder)
    config = checkpoint_config(folder)
    weights = _weights_file(folder)
    architecture = (config.architectures or ["EelbertModel"])[0]
    auto_class = auto_class_name(config)
    # BERT's bytes in the dtype this checkpoint stores, so that the two rows compare (int8 and ONNX: against fp32)
    dtype = stored_dtype(folder) if weights == "model.safetensors" else torch.float32
    bert_name, bert_class, _, bert_bytes = bert_counterpart(config, architecture, dtype)
    # A graph on input_ids in the transformers.js layout (config.json a BERT config) is a transformers.js model.
    graph_input = _graph_input(folder) if weights == ONNX_GRAPH else None
    in_graph = graph_input == "input_ids"
    evaluated = bool(results and results.get("results"))  # a card may carry training notes before any scores
    card_data = ModelCardData(
        library_name="transformers.js" if in_graph else "transformers",
        license=license,
        tags=["eelbert", "bert", "hash-embeddings", "tiny-model"] + (["onnx"] if weights == ONNX_GRAPH else []),
        pipeline_tag=PIPELINE_TAG_OF[auto_class],
        model_name=repo_id.split("/")[-1],
        datasets=[results["dataset"]["type"]] if evaluated else None,
        eval_results=_eval_results(results) if evaluated else None,
    )
    pin = f', revision="{revision}"' if revision else ""
    lines = [
        "---",
        card_data.to_yaml(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        "An [EELBERT](https://arxiv.org/abs/2310.20144) model: a BERT whose word-embedding table is replaced by",
        "embeddings computed on the fly from hashed character n-grams of each token (no trainable parameters),",
        f"so the checkpoint holds only the encoder{f' (preset `{config.preset}`)' if config.preset else ''}.",
        "",
        "## Usage",
        "",
        *_usage(weights, repo_id, auto_class, architecture, pin, folder, graph_input),
        "",
        "## Size",
        "",
        "| model | weights file | bytes |",
        "| --- | --- | ---: |",
        f"| this checkpoint ({architecture}{', ' + DTYPE_LABELS[dtype] if weights == 'model.safetensors' else ''}) | {weights} | "
        f"{weights_bytes(folder):,} |",
        *([f"| this checkpoint, int8 weights | {ONNX_QUANTIZED_GRAPH} | {(folder / ONNX_QUANTIZED_GRAPH).stat().st_size:,} |"]
          if (folder / ONNX_QUANTIZED_GRAPH).is_file() else []),
        f"| {bert_name} ({bert_class}, {DTYPE_LABELS[dtype]}) | model.safetensors | {bert_bytes:,} |",
        "",
        f"Encoder: {config.num_hidden_layers} layer(s), hidden size {config.hidden_size}, {config.num_attention_heads} heads, "
        f"FFN {config.intermediate_size}; hash embedding of size {config.embedding_size} from character n-grams of orders "
        f"1-{config.max_ngram_order} ({config.hash_function}, seed {config.hash_seed}, hash_version {config.hash_version}); "
        f"vocabulary of {config.vocab_size:,} tokens.",
        "",
        "## Training",
        "",
        results.get("training", "See the eelbert repository for the pretraining and fine-tuning scripts.") if results else
        "See the eelbert repository for the pretraining and fine-tuning scripts.",
        "",
    ]
    if evaluated:
        lines += ["## Evaluation", "", "| task | metric | value |", "| --- | --- | ---: |"]
        lines += [f"| {r['task']} | {r['metric']} | {r['value']} |" for r in results["results"]] + [""]
    card = "\n".join(lines)
    ModelCard(card)  # parses the front matter: a malformed card is an error here, not on the Hub
    return card


def push_to_hub(checkpoint, repo_id: str, results: dict | str | None = None, private: bool = False,
                license: str = "apache-2.0", token: str | None = None) -> str:
    """Upload a saved checkpoint folder (weights, config, modeling files, tokenizer; not a Trainer's training
    state) to `repo_id`, then a model card whose usage pins the commit of those files. Returns the commit sha of
    the model files. The card is built before anything is created on the Hub, so a bad folder leaves no trace."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a saved checkpoint (no config.json)")
    if not (checkpoint / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} has no tokenizer: save it there first (tokenizer.save_pretrained)")
    if isinstance(results, str):
        results = json.loads(Path(results).read_text())
    model_card(checkpoint, repo_id, revision="0" * 40, results=results, license=license)  # raises before any upload
    check_hub_reachable()
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    files = api.upload_folder(repo_id=repo_id, folder_path=checkpoint, commit_message="Upload EELBERT checkpoint",
                              ignore_patterns=NOT_UPLOADED)
    card = model_card(checkpoint, repo_id, revision=files.oid, results=results, license=license)
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id, commit_message="Add model card")
    return files.oid
