"""Publishing to the Hugging Face Hub with a generated model card."""

import json
import tempfile
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCardData
from transformers import AutoConfig, BertConfig

from .modeling.configuration_eelbert import auto_class_name
from .presets import BASELINE_OF, baseline_config

PIPELINE_TAGS = {
    "EelbertModel": "feature-extraction",
    "EelbertForMaskedLM": "fill-mask",
    "EelbertForSequenceClassification": "text-classification",
    "EelbertForTokenClassification": "token-classification",
    "EelbertForQuestionAnswering": "question-answering",
    "EelbertForMultipleChoice": None,  # no pipeline for multiple choice
}
def _bert_counterpart_bytes(config) -> tuple[str, int]:
    """Name and fp32 weight bytes of the BERT with the same encoder and vocabulary size."""
    if config.preset in BASELINE_OF:
        name = BASELINE_OF[config.preset]
        bert = baseline_config(name, vocab_size=config.vocab_size)
    else:
        name = "BERT with the same encoder"
        bert = BertConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                          num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                          intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
                          type_vocab_size=config.type_vocab_size)
    h, layers, ffn = bert.hidden_size, bert.num_hidden_layers, bert.intermediate_size
    embeddings = (bert.vocab_size + bert.max_position_embeddings + bert.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h * ffn + ffn + h + 4 * h
    pooler = h * h + h
    return name, 4 * (embeddings + layers * layer + pooler)


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


def model_card(folder, repo_id: str, revision: str | None = None, results: dict | None = None, license: str = "apache-2.0") -> str:
    """The README.md of a saved EELBERT checkpoint: YAML front matter, usage pinned to `revision`, sizes,
    training notes."""
    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    architecture = (config.architectures or ["EelbertModel"])[0]
    auto_class = auto_class_name(config)
    weights = folder / "model.safetensors"
    file_bytes = weights.stat().st_size if weights.exists() else None
    bert_name, bert_bytes = _bert_counterpart_bytes(config)
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        tags=["eelbert", "bert", "hash-embeddings", "tiny-model"],
        pipeline_tag=PIPELINE_TAGS[architecture],
        model_name=repo_id.split("/")[-1],
        datasets=[results["dataset"]["type"]] if results else None,
        eval_results=_eval_results(results) if results else None,
    )
    pin = f', revision="{revision}"' if revision else ""
    size_rows = f"| this checkpoint ({architecture}) | {file_bytes:,} B |\n" if file_bytes else ""
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
        "```python",
        f"from transformers import AutoTokenizer, {auto_class}",
        "",
        # AutoTokenizer reads config.json first, and without trust_remote_code it stops at a 15 s [y/N] prompt.
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True{pin})',
        f'model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True{pin})',
        "```",
        "",
        "`trust_remote_code=True` runs the three `*_eelbert.py` files of this repository (torch + transformers only);",
        "pinning `revision` to a commit you have read keeps that code from changing under you. With the `eelbert`",
        "package installed (`import eelbert`) no remote code is needed.",
        "",
        "## Size",
        "",
        "| model | model.safetensors (fp32) |",
        "| --- | ---: |",
        size_rows + f"| {bert_name} | {bert_bytes:,} B |",
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
    if results:
        lines += ["## Evaluation", "", "| task | metric | value |", "| --- | --- | ---: |"]
        lines += [f"| {r['task']} | {r['metric']} | {r['value']} |" for r in results["results"]] + [""]
    return "\n".join(lines)


def push_to_hub(checkpoint, repo_id: str, results: dict | str | None = None, private: bool = False,
                license: str = "apache-2.0", token: str | None = None) -> str:
    """Upload a saved checkpoint folder (weights, config, modeling files, tokenizer) to `repo_id`, then a model
    card whose usage pins the commit of those files. Returns the commit sha of the model files."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a saved checkpoint (no config.json)")
    if not (checkpoint / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} has no tokenizer: save it there first (tokenizer.save_pretrained)")
    if isinstance(results, str):
        results = json.loads(Path(results).read_text())
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    files = api.upload_folder(repo_id=repo_id, folder_path=checkpoint, commit_message="Upload EELBERT checkpoint",
                              ignore_patterns=["README.md"])
    card = model_card(checkpoint, repo_id, revision=files.oid, results=results, license=license)
    with tempfile.TemporaryDirectory() as tmp:
        readme = Path(tmp) / "README.md"
        readme.write_text(card)
        api.upload_file(path_or_fileobj=readme, path_in_repo="README.md", repo_id=repo_id, commit_message="Add model card")
    return files.oid
