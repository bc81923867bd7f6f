"""Sentence-embedding evaluation (benchmarks/bench_embeddings.py): any encoder of sentences to vectors, scored
zero-shot on STS-B and by linear probes on SST-2 and MRPC, on clean text and with typos, with its size and speed.

- STS-B dev: Spearman x 100 between the cosine of the two sentences' embeddings and the gold score.
- SST-2 / MRPC dev: accuracy (and F1 for MRPC) of a logistic regression (scikit-learn, features standardised)
  trained on the frozen normalised embeddings of train sentences: SST-2 on one sentence, MRPC on the pair features
  [u, v, |u - v|, u * v].
- Typos (eelbert.typos): the same scores with a one-character edit in `fraction` of the words of the dev
  sentences only (the probes stay trained on clean text), averaged over seeds, and the relative drop
  (clean - typos) / clean.
- Size: bytes of the weight files (fp32), and of an int8 format where the model has one: for sentence-transformers
  models around an EELBERT or BERT encoder the int8 ONNX graph of the encoder (`eelbert export onnx`'s
  onnx/model_quantized.onnx; export_bert_onnx for BERT) plus the other modules' weight files (a Dense
  projection, kept fp32); for model2vec its own int8 quantisation.
- Speed: sentences per second of one `encode` call on fixed sentences, after a warm-up batch (best of 3 calls).
"""

import json
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .training.distillation import normalized
from .training.finetuning import TASKS, read_examples
from .typos import add_typos

SCORES = ("stsb_spearman", "sst2_accuracy", "mrpc_accuracy", "mrpc_f1")


# ---- Data ----


@dataclass
class EvaluationData:
    """The sentences and labels of the evaluation (GLUE STS-B, SST-2 and MRPC)."""

    sts_dev: tuple[list[str], list[str], np.ndarray]  # sentence1, sentence2, gold similarity
    sst2_train: tuple[list[str], np.ndarray]
    sst2_dev: tuple[list[str], np.ndarray]
    mrpc_train: tuple[list[str], list[str], np.ndarray]
    mrpc_dev: tuple[list[str], list[str], np.ndarray]


def _read(glue, task, split, limit=None):
    spec = TASKS[task]
    rows = read_examples(Path(glue) / spec.folder / split, spec.columns)[:limit]
    return [list(column) for column in zip(*(row.texts for row in rows))], [row.label for row in rows]


def _integers(values) -> np.ndarray:
    return np.array([int(value) for value in values])


def glue_evaluation_data(glue, *, sst2_train: int | None = 10_000, mrpc_train: int | None = None,
                         dev_limit: int | None = None, seed: int = 0) -> EvaluationData:
    """The evaluation sentences from a GLUE folder (STS-B, SST-2, MRPC): every dev row (the first `dev_limit` of
    each task), a random subset of `sst2_train` SST-2 train sentences drawn with `seed` (None: all), the first
    `mrpc_train` MRPC train pairs (None: all 3,668)."""
    (first, second), scores = _read(glue, "stsb", "dev.tsv", dev_limit)
    (train,), train_labels = _read(glue, "sst2", "train.tsv")
    if sst2_train is not None and sst2_train < len(train):
        chosen = sorted(random.Random(seed).sample(range(len(train)), sst2_train))
        train, train_labels = [train[i] for i in chosen], [train_labels[i] for i in chosen]
    (dev,), dev_labels = _read(glue, "sst2", "dev.tsv", dev_limit)
    (mrpc1, mrpc2), mrpc_labels = _read(glue, "mrpc", "train.tsv", mrpc_train)
    (dev1, dev2), dev_mrpc_labels = _read(glue, "mrpc", "dev.tsv", dev_limit)
    return EvaluationData(
        sts_dev=(first, second, np.array([float(s) for s in scores])),
        sst2_train=(train, _integers(train_labels)), sst2_dev=(dev, _integers(dev_labels)),
        mrpc_train=(mrpc1, mrpc2, _integers(mrpc_labels)), mrpc_dev=(dev1, dev2, _integers(dev_mrpc_labels)),
    )


def with_typos(data: EvaluationData, fraction: float, seed: int) -> EvaluationData:
    """`data` with typos (add_typos) in the dev sentences: STS-B's and MRPC's two sides drawn as one text."""
    first, second, scores = data.sts_dev
    edited = add_typos(first + second, fraction, seed)
    dev, dev_labels = data.sst2_dev
    dev1, dev2, dev_mrpc_labels = data.mrpc_dev
    mrpc = add_typos(dev1 + dev2, fraction, seed)
    return EvaluationData(
        sts_dev=(edited[: len(first)], edited[len(first) :], scores), sst2_train=data.sst2_train,
        sst2_dev=(add_typos(dev, fraction, seed), dev_labels), mrpc_train=data.mrpc_train,
        mrpc_dev=(mrpc[: len(dev1)], mrpc[len(dev1) :], dev_mrpc_labels),
    )


# ---- Encoders ----


class Embeddings:
    """Normalised float32 embeddings by `encode` (a list of sentences -> an array), each distinct sentence encoded
    once: the clean dev sentences serve every typo seed, repeated sentences are encoded once."""

    def __init__(self, encode):
        self.encode, self.stored = encode, {}

    def __call__(self, sentences) -> np.ndarray:
        missing = list(dict.fromkeys(s for s in sentences if s not in self.stored))
        if missing:
            self.stored.update(zip(missing, normalized(np.asarray(self.encode(missing), dtype=np.float32))))
        return np.stack([self.stored[s] for s in sentences]) if sentences else np.zeros((0, 0), np.float32)


def sentence_transformer_encode(model, batch_size: int = 32):
    """`encode` of a SentenceTransformer: a list of sentences -> [n, dimension] float32."""
    return lambda sentences: model.encode(list(sentences), batch_size=batch_size, convert_to_numpy=True,
                                          show_progress_bar=False)


def static_model_encode(model, batch_size: int = 32):
    """`encode` of a model2vec StaticModel (in this process: no worker processes)."""
    return lambda sentences: model.encode(list(sentences), batch_size=batch_size, use_multiprocessing=False)


def sentences_per_second(encode, sentences, batch_size: int, repeats: int = 3) -> float:
    """Throughput of `encode` on `sentences` (one call), after a warm-up call on the first batch: the best of
    `repeats` calls (on a shared machine the others' load only ever slows a call down)."""
    encode(sentences[:batch_size])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(sentences)
        best = min(best, time.perf_counter() - start)
    return len(sentences) / best


# ---- Scores ----


def sts_spearman(embed, first, second, gold) -> float:
    """Spearman x 100 between the cosine similarities of the pairs' embeddings and the gold scores."""
    from scipy.stats import spearmanr

    cosine = (embed(first) * embed(second)).sum(1)
    return 100 * float(spearmanr(cosine, gold).statistic)


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def fit_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A logistic regression on standardised features (the embeddings' scale differs between models)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(features, labels)


@dataclass
class Probes:
    sst2: object
    mrpc: object


def train_probes(embed, data: EvaluationData, seed: int = 0) -> Probes:
    sentences, labels = data.sst2_train
    first, second, pair_labels = data.mrpc_train
    return Probes(sst2=fit_probe(embed(sentences), labels, seed),
                  mrpc=fit_probe(pair_features(embed(first), embed(second)), pair_labels, seed))


def dev_scores(embed, data: EvaluationData, probes: Probes) -> dict[str, float]:
    """STS-B Spearman, SST-2 accuracy, MRPC accuracy and F1 (all x 100) on the dev sentences of `data`."""
    from sklearn.metrics import accuracy_score, f1_score

    sentences, labels = data.sst2_dev
    first, second, pair_labels = data.mrpc_dev
    mrpc = probes.mrpc.predict(pair_features(embed(first), embed(second)))
    return {
        "stsb_spearman": sts_spearman(embed, *data.sts_dev),
        "sst2_accuracy": 100 * float(accuracy_score(labels, probes.sst2.predict(embed(sentences)))),
        "mrpc_accuracy": 100 * float(accuracy_score(pair_labels, mrpc)),
        "mrpc_f1": 100 * float(f1_score(pair_labels, mrpc)),
    }


def evaluate(encode, data: EvaluationData, *, typo_fraction: float = 0.1, typo_seeds=(0, 1, 2), seed: int = 0,
             ) -> dict:
    """The scores of `encode` on clean dev text, and with typos: the mean over `typo_seeds`, each seed's scores,
    and the relative drop (clean - typos) / clean of each score."""
    embed = Embeddings(encode)
    probes = train_probes(embed, data, seed)
    clean = dev_scores(embed, data, probes)
    per_seed = [dev_scores(embed, with_typos(data, typo_fraction, s), probes) for s in typo_seeds]
    typos = {name: float(np.mean([scores[name] for scores in per_seed])) for name in SCORES}
    drop = {name: (clean[name] - typos[name]) / clean[name] if clean[name] else float("nan") for name in SCORES}
    return {"scores": clean, "typos": {"fraction_of_words": typo_fraction, "seeds": list(typo_seeds),
                                       "scores": typos, "per_seed": per_seed, "relative_drop": drop}}


# ---- Sizes ----

def weight_files_bytes(folder, *, exclude: tuple[str, ...] = ("onnx",)) -> int:
    """Bytes of the .safetensors files in `folder` and its subfolders (a sentence-transformers model's modules, e.g.
    2_Dense/model.safetensors), those under `exclude` subfolders left out (exported graphs)."""
    folder = Path(folder)
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors")
               if f.is_file() and f.relative_to(folder).parts[0] not in exclude)


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def sentence_transformer_int8_bytes(model, folder) -> int:
    """Bytes of the int8 form of the SentenceTransformer `model` saved in `folder`: its encoder's int8 ONNX graph
    (export_onnx for EELBERT, export_bert_onnx for BERT; written to a scratch folder) plus the weight files of its
    other modules (e.g. a Dense projection, fp32)."""
    from .onnx_export import ONNX_QUANTIZED_GRAPH, export_bert_onnx, export_onnx

    encoder = model[0].auto_model
    with tempfile.TemporaryDirectory() as scratch:
        if encoder.config.model_type == "eelbert":
            export_onnx(encoder, scratch)
        else:
            export_bert_onnx(encoder, scratch)
        graph = (Path(scratch) / ONNX_QUANTIZED_GRAPH).stat().st_size
    modules = json.loads((Path(folder) / "modules.json").read_text())
    others = sum(weight_files_bytes(Path(folder) / m["path"]) for m in modules[1:] if m["path"])
    return graph + others


# ---- Models ----


def load_sentence_transformer(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")


def undistilled_student(folder, seed: int = 0):
    """The student of the distilled folder (written by `eelbert distill`) as it was before distillation: the same
    preset, baseline or checkpoint (from distillation.json), the same tokenizer, reduction and Dense shape, a new
    random initialisation from `seed`."""
    from transformers import AutoTokenizer

    from .training import distillation

    folder = Path(folder)
    record_file = folder / "distillation.json"
    if not record_file.is_file():
        raise FileNotFoundError(f"{folder} has no distillation.json: not a folder written by `eelbert distill`")
    record = json.loads(record_file.read_text())
    dense = next(folder.glob("*_Dense"), None)
    teacher_dim = json.loads((dense / "config.json").read_text())["out_features"] if dense else None
    new = distillation.is_new_student(record["student"])
    torch.manual_seed(seed)
    return distillation.student_model(record["student"], AutoTokenizer.from_pretrained(folder) if new else None,
                                      reduction=record["reduction"], teacher_dim=teacher_dim)


def model2vec_distill(teacher, folder, **options):
    """A model2vec StaticModel distilled from the sentence-transformers folder `teacher` (model2vec.distill.distill
    with `options`, weights kept fp32), saved to `folder`."""
    from model2vec.distill import distill

    model = distill(str(teacher), quantize_to="float32", **options)
    model.save_pretrained(str(folder))
    return model


def static_model_int8_bytes(folder) -> int:
    """Bytes of the weights of the model2vec model in `folder` saved with its own int8 quantisation."""
    from model2vec import StaticModel

    with tempfile.TemporaryDirectory() as scratch:
        StaticModel.from_pretrained(str(folder), quantize_to="int8").save_pretrained(scratch)
        return weight_files_bytes(scratch)
