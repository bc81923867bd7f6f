"""Sentence-embedding distillation: a student EELBERT learns a teacher sentence-transformer's embeddings (used by
`eelbert distill`).

The teacher encodes the corpus sentences once; its embeddings are stored on disk under a digest of the teacher's
files, the sentences and the normalisation, so every later student reads them instead of encoding again (the
teacher is the slow part: ~100-150 sentences/s on a CPU core); a run on fewer sentences of the same corpus and
seed reads the first rows of a larger stored run. The student is a sentence-transformers model
(Transformer + mean Pooling + Normalize) trained with `SentenceTransformerTrainer` (the Hugging Face Trainer) and
EmbeddingAndSimilarityLoss: the embeddings compare by cosine, so only their direction is taught, optionally with the
teacher's in-batch similarity structure.
The targets, by `reduction`:

- `pca`: the teacher's embeddings projected on their first `hidden_size` principal components (fitted on the
  training sentences) and renormalised. The student needs no extra layer; the directions that carry most of the
  teacher's variance are kept.
- `none`: the teacher's normalised embeddings themselves, reached through a trained linear `Dense` module
  (hidden_size -> teacher dimension) that stays in the saved model.

The output folder is a sentence-transformers model whose transformer is the EELBERT checkpoint at its root
(config.json, model.safetensors, the modeling files, the tokenizer): `SentenceTransformer(folder,
trust_remote_code=True)` loads it without this package, and `eelbert export onnx` exports it.
"""

import hashlib
import json
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..artifacts import store_weights_in_float16
from ..presets import BASELINE_OF, EELBERT_PRESETS, baseline_config, preset_config
from .token_store import file_lines, text_files

REDUCTIONS = ("pca", "none")
CACHE_FORMAT = 1

# ---- Sentences ----

# A sentence ends at . ! or ? (closing quotes or brackets included) followed by a space and a capital, a digit or
# an opening quote/bracket: enough for prose, and "e.g. this" or "3.5" are not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph (whitespace collapsed)."""
    paragraph = " ".join(paragraph.split())
    if not paragraph:
        return []
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(paragraph)]
    return [paragraph[a:b].strip() for a, b in zip(starts, starts[1:] + [len(paragraph)]) if paragraph[a:b].strip()]


def corpus_sentences(paths, *, min_words: int = 4, max_words: int = 64, limit: int | None = None, seed: int = 0,
                     sentence_per_line: bool = False) -> list[str]:
    """The distinct sentences of `min_words`..`max_words` words in text files (or folders of .txt files, one
    paragraph per line, as `eelbert pretrain --corpus` reads them), shuffled with `seed`, the first `limit` kept.
    `sentence_per_line`: the files are a prepared list, one sentence a line, kept as they are and in their order
    (not split, not shuffled)."""
    files = text_files(paths)
    lines = (" ".join(line.split()) for line in file_lines(files))
    candidates = (s for s in lines if s) if sentence_per_line else (s for line in lines for s in split_sentences(line))
    # dict: distinct, in reading order (the shuffle below is then reproducible)
    sentences = dict.fromkeys(s for s in candidates if min_words <= len(s.split()) <= max_words)
    if not sentences:
        raise ValueError(f"no sentences of {min_words}-{max_words} words in {', '.join(map(str, paths))}")
    sentences = list(sentences)
    if not sentence_per_line:
        random.Random(seed).shuffle(sentences)
    return sentences[:limit]


# ---- Teacher embeddings ----


def default_cache() -> Path:
    return Path(os.environ.get("EELBERT_CACHE", Path.home() / ".cache" / "eelbert")) / "teacher-embeddings"


def folder_digest(folder) -> str:
    """sha256 over the relative paths and contents of every file in a model folder."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        with open(file, "rb") as content:
            for chunk in iter(lambda: content.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def teacher_folder(teacher) -> Path:
    """A local sentence-transformers folder, or a Hub id's snapshot (from the local cache when offline)."""
    if Path(teacher).is_dir():
        return Path(teacher)
    from huggingface_hub import constants, snapshot_download

    return Path(snapshot_download(str(teacher), local_files_only=constants.HF_HUB_OFFLINE))


def teacher_embeddings(teacher, sentences, *, cache=None, normalize: bool = True, batch_size: int = 64,
                       progress: bool = False) -> np.ndarray:
    """[len(sentences), teacher dimension] float32 embeddings of `sentences` by the sentence-transformers model in
    folder `teacher` (or a Hub id), encoded once and stored under `cache` (default
    $EELBERT_CACHE/teacher-embeddings): one folder per teacher (a digest of its files, and `normalize`), in it
    `N-DIGEST.npy` with the N sentences beside it (`.txt`). A later call reads them; its sentences may also be the
    first ones of a stored list (corpus_sentences with a smaller limit), which is read in part."""
    folder = teacher_folder(teacher)
    sentences = list(sentences)
    if any("\n" in s for s in sentences):
        raise ValueError("a sentence contains a line break")  # the stored .txt holds one sentence a line
    teacher_key = hashlib.sha256(json.dumps(
        {"format": CACHE_FORMAT, "teacher": folder_digest(folder), "normalize": normalize}).encode()).hexdigest()
    store = Path(cache or default_cache()) / teacher_key[:32]
    text = "\n".join(sentences)
    path = store / f"{len(sentences)}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.npy"
    if path.is_file():
        return np.load(path)
    for stored in sorted(store.glob("*.npy"), key=lambda p: int(p.name.split("-")[0])):
        if int(stored.name.split("-")[0]) > len(sentences):
            with open(stored.with_suffix(".txt"), encoding="utf-8") as lines:
                if [lines.readline().rstrip("\n") for _ in sentences] == sentences:
                    return np.load(stored, mmap_mode="r")[: len(sentences)].copy()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu" if not torch.cuda.is_available() else None)
    embeddings = model.encode(sentences, batch_size=batch_size, normalize_embeddings=normalize,
                              convert_to_numpy=True, show_progress_bar=progress).astype(np.float32)
    store.mkdir(parents=True, exist_ok=True)
    # Written under temporary names, renamed into place (atomic): the sentences first, so an .npy always has them.
    with tempfile.NamedTemporaryFile("w", dir=store, suffix=".part", delete=False, encoding="utf-8") as partial:
        partial.write(text)
    os.replace(partial.name, path.with_suffix(".txt"))
    with tempfile.NamedTemporaryFile(dir=store, suffix=".part", delete=False) as partial:
        np.save(partial, embeddings)
    os.replace(partial.name, path)
    return embeddings


# ---- Targets ----


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def pca_projection(embeddings: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, [dims, teacher dimension] components): the first `dims` principal components of `embeddings`."""
    rows, width = embeddings.shape
    if dims > min(rows, width):
        raise ValueError(f"PCA to the student's {dims} dimensions needs at least {dims} teacher dimensions and "
                         f"{dims} training sentences (have {width} and {rows}); use reduction 'none' (--reduction none)")
    mean = embeddings.mean(0)
    _, _, components = np.linalg.svd(embeddings - mean, full_matrices=False)
    return mean, components[:dims]


def pca_targets(embeddings: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Embeddings projected on the components and renormalised (the student is compared by cosine)."""
    return normalized((embeddings - mean) @ components.T).astype(np.float32)


# ---- The student ----


def is_new_student(name_or_path) -> bool:
    """True for a preset, preset JSON or BERT baseline (a new model), False for a checkpoint folder, else an error."""
    if name_or_path in EELBERT_PRESETS or str(name_or_path).endswith(".json") or name_or_path in BASELINE_OF.values():
        return True
    if Path(name_or_path).is_dir():
        return False
    known = sorted({*EELBERT_PRESETS, *BASELINE_OF.values()})
    raise ValueError(f"student {str(name_or_path)!r} is neither a preset {known} nor a checkpoint folder")


def student_model(name_or_path, tokenizer=None, *, reduction: str = "pca", teacher_dim: int | None = None,
                  max_seq_length: int = 128, **config_overrides):
    """A sentence-transformers model (Transformer + mean Pooling [+ Dense to `teacher_dim` for reduction 'none'] +
    Normalize) around a new model from an EELBERT preset or preset JSON, a new plain BERT baseline (`bert-tiny`, ...),
    both bound to `tokenizer`, or an EELBERT/BERT checkpoint folder (its own tokenizer unless one is given)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import BertModel

    from ..modeling.modeling_eelbert import EelbertModel

    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose {' or '.join(REDUCTIONS)}")
    fresh = is_new_student(name_or_path)
    with tempfile.TemporaryDirectory() as scratch:
        if fresh:  # sentence-transformers' Transformer module loads from a folder: the new model goes through one
            if tokenizer is None:
                raise ValueError(f"a new student ({name_or_path}) needs a tokenizer")
            if name_or_path in BASELINE_OF.values():
                config = baseline_config(name_or_path, vocab_size=len(tokenizer))
                for key, value in config_overrides.items():
                    setattr(config, key, value)
                model = BertModel(config)
            else:
                model = EelbertModel(preset_config(name_or_path, tokenizer=tokenizer, **config_overrides))
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            source = scratch
        else:
            source = str(name_or_path)
            if tokenizer is not None:
                tokenizer.save_pretrained(scratch)
        remote = {"trust_remote_code": True}
        transformer = Transformer(
            source, max_seq_length=max_seq_length, model_kwargs=remote,
            config_kwargs=remote if fresh else {**remote, **config_overrides},
            tokenizer_name_or_path=scratch if tokenizer is not None and not fresh else None,
        )
    hidden = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(hidden, "mean")]
    if reduction == "none":
        if teacher_dim is None:
            raise ValueError("reduction 'none' needs the teacher's dimension")
        modules.append(Dense(hidden, teacher_dim, activation_function=torch.nn.Identity()))
    modules.append(Normalize())
    return SentenceTransformer(modules=modules, device="cpu" if not torch.cuda.is_available() else None)


def hidden_size(student) -> int:
    return student[0].get_embedding_dimension()


@torch.no_grad()
def cosine_agreement(student, sentences, targets, batch_size: int = 64) -> float:
    """Mean cosine between the student's embeddings of `sentences` and their `targets`."""
    embeddings = student.encode(list(sentences), batch_size=batch_size, convert_to_numpy=True)
    return float((normalized(embeddings) * normalized(targets)).sum(1).mean())


# ---- Training ----


def distillation_arguments(output, **overrides):
    """The Trainer settings distillation uses, with any `TrainingArguments` field overridden."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    settings = dict(
        output_dir=str(output), num_train_epochs=5, per_device_train_batch_size=128, learning_rate=2e-3,
        warmup_steps=0.05, lr_scheduler_type="linear", weight_decay=0.01, logging_steps=50, save_strategy="no",
        eval_strategy="no", report_to=[], dataloader_drop_last=True, use_cpu=not torch.cuda.is_available(),
    )
    settings.update(overrides)
    return SentenceTransformerTrainingArguments(**settings)


class EmbeddingAndSimilarityLoss(torch.nn.Module):
    """Cosine distance between the student's and the teacher's embeddings, plus `similarity_weight` times the mean
    squared difference of their in-batch cosine-similarity matrices: the second term teaches the relative
    similarities that semantic search and STS rank by, not only each vector's direction."""

    def __init__(self, model, similarity_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.similarity_weight = similarity_weight

    def forward(self, sentence_features, labels):
        student = torch.nn.functional.normalize(self.model(sentence_features[0])["sentence_embedding"], dim=-1)
        target = torch.nn.functional.normalize(labels.to(student.dtype), dim=-1)
        loss = 1 - (student * target).sum(-1).mean()
        if self.similarity_weight:
            loss = loss + self.similarity_weight * (student @ student.T - target @ target.T).pow(2).mean()
        return loss


def distill(student, teacher, sentences, output, *, tokenizer=None, reduction: str = "pca", cache=None,
            validation_fraction: float = 0.02, max_validation: int = 2000, seed: int = 0, progress: bool = True,
            callbacks=None, config_overrides: dict | None = None, similarity_weight: float = 0.0,
            float16_storage: bool = False, **training_arguments) -> dict:
    """Teach `student` (a SentenceTransformer, or a preset / preset JSON / checkpoint folder for student_model, new
    ones bound to `tokenizer`, default the teacher's) the embeddings of the sentence-transformers model `teacher`
    (folder or Hub id) on `sentences`; save the sentence-transformers model and a model card to `output`.
    `training_arguments` override distillation_arguments(); `similarity_weight` is EmbeddingAndSimilarityLoss's;
    `float16_storage` stores the transformer's weights in float16 (store_weights_in_float16). A held-out `validation_fraction` of the sentences (at
    most `max_validation`) measures the mean cosine between student and targets before and after; returns them
    with the training metrics."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import AutoTokenizer, set_seed

    set_seed(seed)
    sentences = list(sentences)
    held = min(max_validation, max(1, round(len(sentences) * validation_fraction)))
    if len(sentences) < held + 2:
        raise ValueError(f"{len(sentences)} sentences are too few to distill on")
    folder = teacher_folder(teacher)
    embeddings = teacher_embeddings(folder, sentences, cache=cache, normalize=True, progress=progress)
    described = student if isinstance(student, (str, Path)) else type(student).__name__
    if isinstance(student, (str, Path)):
        if tokenizer is None and is_new_student(student):
            tokenizer = AutoTokenizer.from_pretrained(folder)
        student = student_model(student, tokenizer, reduction=reduction, teacher_dim=embeddings.shape[1],
                                **(config_overrides or {}))
    train, validation = slice(held, None), slice(0, held)
    if reduction == "pca":
        mean, components = pca_projection(embeddings[train], hidden_size(student))
        targets = pca_targets(embeddings, mean, components)
    elif reduction == "none":
        targets = embeddings
    else:
        raise ValueError(f"unknown reduction {reduction!r}: choose {' or '.join(REDUCTIONS)}")
    before = cosine_agreement(student, sentences[validation], targets[validation])
    dataset = Dataset.from_dict({"sentence": sentences[train], "label": targets[train]})  # numpy: no Python floats
    args = distillation_arguments(output, seed=seed, disable_tqdm=not progress, **training_arguments)
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=dataset,
                                         loss=EmbeddingAndSimilarityLoss(student, similarity_weight),
                                         callbacks=callbacks)
    trained = trainer.train()
    after = cosine_agreement(student, sentences[validation], targets[validation])
    metrics = {**trained.metrics, "validation_sentences": held, "validation_cosine_before": before,
               "validation_cosine_after": after}
    student.save(str(output))
    if float16_storage:
        store_weights_in_float16(output)
    record = {"teacher": str(teacher), "teacher_sha256": folder_digest(folder), "student": str(described),
              "reduction": reduction, "sentences": len(sentences) - held, "seed": seed,
              "similarity_weight": similarity_weight, "float16_storage": float16_storage,
              "config_overrides": config_overrides or {}, "training_arguments": {
                  key: value for key, value in training_arguments.items() if isinstance(value, (int, float, str))},
              "metrics": metrics}
    (Path(output) / "distillation.json").write_text(json.dumps(record, indent=1))
    (Path(output) / "README.md").write_text(model_card(Path(output), record))
    return metrics


def model_card(folder: Path, record: dict) -> str:
    """A short card for a distilled folder: what it is, where it came from, how to load it."""
    config = json.loads((folder / "config.json").read_text())
    dims = json.loads((folder / "1_Pooling" / "config.json").read_text()).get("embedding_dimension")
    dense = next(folder.glob("*_Dense"), None)
    if dense is not None:
        dims = json.loads((dense / "config.json").read_text()).get("out_features", dims)
    name = folder.name
    layers = config.get("num_hidden_layers")
    if config.get("model_type") == "eelbert":
        encoder = (f"an EELBERT encoder ({layers} layer{'s' * (layers != 1)}, hidden size {config.get('hidden_size')}; "
                   "hashed character n-grams instead of BERT's word-embedding table, so it is small and handles "
                   "unseen words and typos)")
    else:
        encoder = f"a {config.get('model_type')} encoder ({layers} layer{'s' * (layers != 1)}, hidden size {config.get('hidden_size')})"
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- feature-extraction
- eelbert
license: apache-2.0
---

# {name}

A sentence-embedding model ({dims} dimensions, normalised; compare by cosine): {encoder}, distilled with
`eelbert distill` from the sentence-transformers model `{record['teacher']}` on {record['sentences']:,} sentences
(targets: reduction `{record['reduction']}`; settings and held-out scores in `distillation.json`).

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{name}", trust_remote_code=True)
embeddings = model.encode(["A sentence to embed.", "Another one."])
```

Without sentence-transformers, the transformers `feature-extraction` pipeline (`trust_remote_code=True`) gives the
token vectors: average them over the attention mask and L2-normalise{' (then apply the Dense module in ' + dense.name + '/)' if dense is not None else ''}.
"""
