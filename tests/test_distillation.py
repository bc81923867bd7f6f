"""Sentence-embedding distillation (eelbert.training.distillation, `eelbert distill`): a tiny randomly initialised
BERT teacher saved as a sentence-transformers folder, a few hundred corpus sentences, a few steps."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import BERT_UNCASED, SHARED_DATA, WITHOUT_EELBERT, run_python

pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer  # noqa: E402

from eelbert.artifacts import store_weights_in_float16  # noqa: E402
from eelbert.cli import main  # noqa: E402
from eelbert.training import distillation  # noqa: E402

CORPUS = SHARED_DATA / "corpus" / "registry" / "brown_corpus.txt"
TEACHER_DIM = 160  # above UNO-EELBERT's hidden size (128): PCA has room to reduce
STEPS = dict(max_steps=30, per_device_train_batch_size=16, learning_rate=2e-3, progress=False)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 1-layer BERT with the BERT uncased vocabulary, random weights, as a sentence-transformers folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    bert = tmp_path_factory.mktemp("teacher-bert")
    config = BertConfig(vocab_size=30522, hidden_size=TEACHER_DIM, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    BertModel(config).save_pretrained(bert)
    AutoTokenizer.from_pretrained(BERT_UNCASED).save_pretrained(bert)
    folder = tmp_path_factory.mktemp("teacher")
    model = SentenceTransformer(modules=[Transformer(str(bert)), Pooling(TEACHER_DIM, "mean"), Normalize()], device="cpu")
    model.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def sentences():
    return distillation.corpus_sentences([CORPUS], limit=400)


@pytest.fixture(scope="module")
def distilled(teacher, sentences, tmp_path_factory):
    """UNO-EELBERT distilled on PCA targets: (folder, metrics)."""
    folder = tmp_path_factory.mktemp("distilled")
    cache = tmp_path_factory.mktemp("cache")
    metrics = distillation.distill("uno-eelbert", teacher, sentences, folder, cache=cache, validation_fraction=0.1,
                                   **dict(STEPS, max_steps=80))
    return folder, metrics


def test_corpus_sentences_split_bound_dedup_shuffle_and_limit(tmp_path):
    (tmp_path / "a.txt").write_text("One two three four. Five six seven eight! Too short.\n"
                                    "One two three four. Nine ten eleven twelve thirteen?\n")
    (tmp_path / "b.txt").write_text("Mr Smith said e.g. this one: 3.5 words here and more\n")
    found = distillation.corpus_sentences([tmp_path], min_words=4, max_words=11, seed=1)
    assert sorted(found) == sorted(["One two three four.", "Five six seven eight!", "Nine ten eleven twelve thirteen?",
                                    "Mr Smith said e.g. this one: 3.5 words here and more"])
    assert distillation.corpus_sentences([tmp_path], min_words=4, max_words=11, seed=1) == found  # seeded
    assert [distillation.corpus_sentences([tmp_path], seed=s) for s in range(5)].count(found) < 5  # and shuffled
    assert distillation.corpus_sentences([tmp_path], seed=1, limit=2) == found[:2]
    # A prepared list: one sentence a line, in file order, not split; duplicates and short lines still dropped.
    (tmp_path / "c.txt").write_text("Second one here. Not split.\nFirst  one  here now\nshort\nFirst one here now\n")
    assert distillation.corpus_sentences([tmp_path / "c.txt"], sentence_per_line=True) == [
        "Second one here. Not split.", "First one here now"]


def test_distillation_raises_the_cosine_with_the_teacher_targets_on_held_out_sentences(distilled):
    _, metrics = distilled
    assert metrics["validation_sentences"] == 40
    # Random PCA directions start near 0; 80 steps of 16 sentences reach about 0.45 here.
    assert metrics["validation_cosine_before"] < 0.1
    assert metrics["validation_cosine_after"] > metrics["validation_cosine_before"] + 0.2


def test_teacher_embeddings_are_encoded_once_and_reused_by_a_second_student(teacher, sentences, tmp_path,
                                                                             monkeypatch):
    teacher_calls = []
    encode = SentenceTransformer.encode

    def counting(self, *args, **kwargs):
        if self.get_embedding_dimension() == TEACHER_DIM and len(self) == 3 and "Dense" not in repr(self):
            teacher_calls.append(len(args[0]))
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", counting)
    few = dict(STEPS, max_steps=2)
    distillation.distill("uno-eelbert", teacher, sentences, tmp_path / "a", cache=tmp_path / "cache", **few)
    metrics = distillation.distill("bert-tiny", teacher, sentences, tmp_path / "b", cache=tmp_path / "cache",
                                   reduction="none", **few)
    assert teacher_calls == [len(sentences)]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    # The second student: a plain BERT with a Dense projection to the teacher's dimension, kept in the folder.
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model_type"] == "bert"
    reloaded = SentenceTransformer(str(tmp_path / "b"), device="cpu")
    assert reloaded.get_embedding_dimension() == TEACHER_DIM and "Dense" in repr(reloaded)
    assert metrics["validation_cosine_after"] > metrics["validation_cosine_before"]
    # Fewer sentences of the same corpus (the first ones): read from the stored rows, not encoded.
    stored = distillation.teacher_embeddings(teacher, sentences, cache=tmp_path / "cache")
    first = distillation.teacher_embeddings(teacher, sentences[:50], cache=tmp_path / "cache")
    np.testing.assert_array_equal(first, stored[:50])
    assert teacher_calls == [len(sentences)]
    # Other sentences are other embeddings: encoded, stored beside.
    other = distillation.teacher_embeddings(teacher, sentences[50:100], cache=tmp_path / "cache")
    assert teacher_calls == [len(sentences), 50]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
    np.testing.assert_allclose(other, stored[50:100], atol=1e-5)
    # Another teacher (a changed file) is another folder of embeddings.
    changed = tmp_path / "teacher"
    shutil.copytree(teacher, changed)
    (changed / "README.md").write_text("changed")
    distillation.teacher_embeddings(changed, sentences[:50], cache=tmp_path / "cache")
    assert teacher_calls == [len(sentences), 50, 50]


def test_pca_targets_keep_the_student_size_and_are_unit_vectors():
    rng = np.random.default_rng(0)
    embeddings = distillation.normalized(rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40)))
    mean, components = distillation.pca_projection(embeddings, 16)
    targets = distillation.pca_targets(embeddings, mean, components)
    assert targets.shape == (300, 16)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(components @ components.T, np.eye(16), atol=1e-5)
    with pytest.raises(ValueError, match="reduction 'none'"):
        distillation.pca_projection(embeddings, 64)


def test_the_loss_is_cosine_distance_plus_the_weighted_similarity_matrix_error():
    torch.manual_seed(0)
    student, target = torch.randn(6, 8), torch.randn(6, 8)

    class Fixed(torch.nn.Module):  # a "model" whose embeddings are `student`, unnormalised
        def forward(self, features):
            return {"sentence_embedding": student * 3}

    s, t = torch.nn.functional.normalize(student, dim=-1), torch.nn.functional.normalize(target, dim=-1)
    cosine = 1 - (s * t).sum(-1).mean()
    similarity = ((s @ s.T - t @ t.T) ** 2).mean()
    for weight in (0.0, 10.0):
        loss = distillation.EmbeddingAndSimilarityLoss(Fixed(), weight)([{}], target * 2)
        torch.testing.assert_close(loss, cosine + weight * similarity)


def test_float16_storage_halves_the_weights_and_loads_as_float32(distilled, sentences, tmp_path):
    folder, _ = distilled
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    store_weights_in_float16(half)
    assert (half / "model.safetensors").stat().st_size < 0.55 * (folder / "model.safetensors").stat().st_size
    model = SentenceTransformer(str(half), trust_remote_code=True, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    full = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(model.encode(sentences[:20]), full.encode(sentences[:20]), atol=2e-3)


def test_a_checkpoint_folder_is_a_student_with_its_weights(tmp_path, tokenizer):
    import eelbert

    checkpoint = eelbert.EelbertForMaskedLM(eelbert.preset_config("uno-eelbert", tokenizer=tokenizer))
    checkpoint.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    student = distillation.student_model(tmp_path)
    encoder = student[0].auto_model
    for name, value in checkpoint.eelbert.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[name], value, rtol=0, atol=0)


def test_the_folder_loads_and_encodes_the_same_without_eelbert(distilled, sentences):
    folder, _ = distilled
    texts = sentences[:5]
    expected = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu").encode(texts)
    out = run_python(WITHOUT_EELBERT + f"""
import json
from sentence_transformers import SentenceTransformer
model = SentenceTransformer({str(folder)!r}, trust_remote_code=True, device="cpu")
print(json.dumps(model.encode({texts!r}).tolist()))
""")
    got = np.array(json.loads(out.strip().splitlines()[-1]))
    assert got.shape == (5, 128)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def _mean_pooled(token_vectors, mask):
    pooled = (token_vectors * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_the_feature_extraction_pipeline_gives_the_same_vectors_after_mean_pooling(distilled, sentences):
    from transformers import pipeline

    folder, _ = distilled
    texts = sentences[:5]
    expected = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu").encode(texts)
    extract = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device="cpu")
    for text, vector in zip(texts, expected):
        tokens = np.array(extract(text)[0])  # one text: no padding, every position counts
        np.testing.assert_allclose(_mean_pooled(tokens[None], np.ones((1, len(tokens))))[0], vector, atol=1e-5,
                                   rtol=1e-5)


def test_eelbert_export_onnx_of_the_folder_gives_the_same_vectors(distilled, sentences, tmp_path, tokenizer):
    onnxruntime = pytest.importorskip("onnxruntime")
    folder, _ = distilled
    texts = sentences[:5]
    expected = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu").encode(texts)
    assert main(["export", "onnx", str(folder), str(tmp_path / "onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "onnx" / "model.onnx"))
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    feeds = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
    token_vectors = session.run(None, feeds)[0]
    got = _mean_pooled(token_vectors, encoded["attention_mask"].astype(np.float32))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_eelbert_distill_end_to_end(teacher, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS.read_text(encoding="utf-8").splitlines()[:600]), encoding="utf-8")
    output = tmp_path / "model"
    assert main(["distill", str(teacher), "--corpus", str(corpus), "--output", str(output), "--sentences", "300",
                 "--epochs", "0.5", "--batch-size", "16", "--cache", str(tmp_path / "cache"),
                 "--similarity-weight", "5", "--float16"]) == 0
    printed = capsys.readouterr().out
    assert "corpus: 300 sentences" in printed and f"saved to {output}" in printed
    model = SentenceTransformer(str(output), trust_remote_code=True, device="cpu")
    vectors = model.encode(["A short sentence to embed.", "Another one."])
    assert vectors.shape == (2, 128)  # default reduction pca: the student's own size
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    record = json.loads((output / "distillation.json").read_text())
    assert record["reduction"] == "pca" and record["student"] == "uno-eelbert"
    assert record["similarity_weight"] == 5 and record["float16_storage"]
    assert record["training_arguments"]["per_device_train_batch_size"] == 16
    config = json.loads((output / "config.json").read_text())
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0  # --dropout default
    from safetensors import safe_open

    with safe_open(output / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"F16"}
    card = (output / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "an EELBERT encoder (1 layer," in card


@pytest.mark.parametrize("change, message", [
    ({"teacher": "/no/such/teacher"}, "no teacher folder /no/such/teacher"),
    ({"corpus": "empty"}, "no sentences of 4-64 words"),
    ({"preset": "uno"}, "'uno' is neither a preset"),
])
def test_eelbert_distill_errors_in_one_line(teacher, tmp_path, capsys, change, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("" if change.get("corpus") == "empty" else CORPUS.read_text(encoding="utf-8")[:20000])
    args = ["distill", change.get("teacher", str(teacher)), "--corpus", str(corpus), "--output", str(tmp_path / "out"),
            "--preset", change.get("preset", "uno-eelbert")]
    assert main(args) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("eelbert distill: error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()
