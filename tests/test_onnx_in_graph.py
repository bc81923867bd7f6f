"""ONNX with the hash embedding inside the graph: bit-exact embeddings in onnxruntime, every head's outputs."""

import json

import numpy as np
import pytest
import torch

import eelbert
from eelbert.artifacts import checkpoint_config
from eelbert.cli import main
from eelbert.onnx_export import PackedVocabularyEmbedding, export_graph, export_onnx
from helpers import run_python

onnxruntime = pytest.importorskip("onnxruntime")

# Tokens that exercise every UTF-8 length, combining marks, `##` pieces (and "##" itself, which is not one),
# special tokens, and tokens longer than 255 bytes (lengths stored as int32 instead of uint8).
AWKWARD_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "a", "#", "##", "###", "##a", "##ing", "ing",
    "東京", "##京", "日本語", "😀", "##😀", "👩\u200d💻", "e\u0301", "##\u0301", "naïve", "Ωμέγα", "\U0001F1EF\U0001F1F5",
    "x" * 300, "##" + "東" * 100, "a😀b東c", "\u200b", "ß", "İ",
]
AWKWARD_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]


def _session(path_or_bytes, **options):
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(path_or_bytes, settings, **options)


def _in_graph_embedding(config) -> np.ndarray:
    """Every id's embedding computed by onnxruntime from the exported PackedVocabularyEmbedding graph."""
    ids = torch.arange(config.vocab_size).reshape(1, -1)
    graph = export_graph(PackedVocabularyEmbedding(config).eval(), (ids[:, :8],), input_names=["input_ids"],
                         output_names=["embeddings"],
                         dynamic_shapes={"input_ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}})
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}  # standard operators only
    (got,) = _session(graph.SerializeToString()).run(None, {"input_ids": ids.numpy()})
    return got[0]


@pytest.mark.parametrize("hash_function", ["murmur3", "rolling"])
def test_in_graph_embedding_of_the_bert_uncased_vocabulary_is_bit_exact(tokenizer, hash_function):
    config = eelbert.preset_config("uno-eelbert", tokenizer=tokenizer, hash_function=hash_function)
    got = _in_graph_embedding(config)
    expected = eelbert.hash_embed(config.vocab, config).numpy()
    assert got.dtype == np.float32 and got.shape == expected.shape == (30522, 128)
    assert np.array_equal(got, expected), f"{(got != expected).any(1).sum()} rows differ"


@pytest.mark.parametrize("hash_function", ["murmur3", "rolling"])
def test_in_graph_embedding_of_unicode_long_and_continuation_tokens_is_bit_exact(hash_function):
    config = eelbert.EelbertConfig(embedding_size=30, max_ngram_order=4, hash_function=hash_function, hash_seed=7)
    config.set_vocab(AWKWARD_VOCAB, special_tokens=AWKWARD_SPECIAL)
    got = _in_graph_embedding(config)
    expected = eelbert.hash_embed(config.vocab, config).numpy()
    for token, row, expected_row in zip(AWKWARD_VOCAB, got, expected):
        assert np.array_equal(row, expected_row), token
    assert len({row.tobytes() for row in got}) == len(AWKWARD_VOCAB)  # "ing" vs "##ing", "##" vs "#", ...


HEADS = [
    (eelbert.EelbertModel, ["last_hidden_state", "pooler_output"]),
    (eelbert.EelbertForMaskedLM, ["logits"]),
    (eelbert.EelbertForSequenceClassification, ["logits"]),
    (eelbert.EelbertForTokenClassification, ["logits"]),
    (eelbert.EelbertForQuestionAnswering, ["start_logits", "end_logits"]),
    (eelbert.EelbertForMultipleChoice, ["logits"]),
]


@pytest.mark.parametrize("model_class,output_names", HEADS, ids=[c.__name__ for c, _ in HEADS])
def test_every_head_exports_on_input_ids_and_matches_pytorch_in_onnxruntime(
    uno_config, tokenizer, tmp_path, model_class, output_names
):
    torch.manual_seed(0)
    model = model_class(uno_config).eval()
    path = export_onnx(model, tmp_path)
    assert path == tmp_path / "onnx" / "model.onnx"
    assert path.stat().st_size <= 1_600_000  # UNO-EELBERT, vocabulary included
    quantized = tmp_path / "onnx" / "model_quantized.onnx"
    masked_lm = model_class is eelbert.EelbertForMaskedLM
    # int8 weights: <= 0.6 MB, but the masked-LM head's output bias (30,522 floats, 122 KB) stays fp32.
    assert quantized.stat().st_size <= (720_000 if masked_lm else 600_000)
    # The masked-LM graph scores against the whole table, a constant expression that onnxruntime folds at load by
    # default (tens of seconds for 30,522 tokens); unfolded it is computed by the same kernels on each run.
    options = {"disabled_optimizers": ["ConstantFolding"]} if masked_lm else {}
    session, int8_session = _session(str(path), **options), _session(str(quantized), **options)
    for graph in (session, int8_session):
        assert [i.name for i in graph.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
        assert [o.name for o in graph.get_outputs()] == output_names
    for texts in (["hello world"], ["the cat sat on the [MASK].", "東京 😀 naïve façade", "a much longer third one"]):
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        if model_class is eelbert.EelbertForMultipleChoice:  # one question, len(texts) choices
            batch = {name: ids.unsqueeze(0) for name, ids in batch.items()}
        feeds = {name: ids.numpy() for name, ids in batch.items()}
        got, got_int8 = session.run(None, feeds), int8_session.run(None, feeds)
        with torch.no_grad():
            expected = model(**batch, return_dict=True)
        for name, value, value_int8 in zip(output_names, got, got_int8):
            assert value.shape == value_int8.shape == tuple(expected[name].shape), name
            assert np.abs(value - expected[name].numpy()).max() <= 1e-4, name
            # int8 weights: close, not equal (relative error ~1e-2 measured; accuracy: bench_artifacts.py).
            assert np.linalg.norm(value_int8 - value) <= 0.05 * np.linalg.norm(value), name


def test_the_export_is_a_bert_onnx_folder_with_8bit_weights_the_standard_way(uno_config, tokenizer, tmp_path, capsys):
    import onnx
    from onnx.reference import ReferenceEvaluator
    from transformers import AutoConfig, BertConfig

    torch.manual_seed(0)
    model = eelbert.EelbertForSequenceClassification(uno_config).eval()
    export_onnx(model, tmp_path)
    # config.json: what a BERT ONNX folder has (transformers.js and other runtimes that know BERT read it), with
    # the EELBERT fields beside it and neither the vocabulary nor remote code.
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is BertConfig and config.architectures == ["BertForSequenceClassification"]
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size, config.id2label) == (
        uno_config.hidden_size, uno_config.num_hidden_layers, uno_config.vocab_size, uno_config.id2label)
    fields = json.loads((tmp_path / "config.json").read_text())
    assert "vocab" not in fields and "auto_map" not in fields and not list(tmp_path.glob("*.py"))
    # The EELBERT config of the folder (model card, `eelbert info`) comes back from those fields.
    exported = checkpoint_config(tmp_path)
    assert type(exported) is eelbert.EelbertConfig and exported.architectures == ["EelbertForSequenceClassification"]
    assert all(getattr(exported, name) == getattr(uno_config, name) for name in
               ("embedding_size", "max_ngram_order", "hash_function", "hash_seed", "hash_version", "continuing_subword_prefix"))
    assert fields["embedding_fingerprint"] == uno_config.embedding_fingerprint()  # says which vocabulary the graph holds
    capsys.readouterr()
    assert main(["info", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "EelbertForSequenceClassification" and "onnx/model_quantized.onnx" in info["files"]
    # 8-bit by onnxruntime's own dynamic quantization: standard operators, uint8 weight matrices.
    quantized = onnx.load(tmp_path / "onnx" / "model_quantized.onnx")
    assert {node.domain for node in quantized.graph.node} <= {"", "ai.onnx"}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {node.op_type for node in quantized.graph.node}
    weights = {node.input[1] for node in quantized.graph.node if node.op_type == "MatMulInteger"}
    uint8_weights = [i for i in quantized.graph.initializer if i.name in weights and i.data_type == onnx.TensorProto.UINT8]
    assert sum(int(np.prod(i.dims)) for i in uint8_weights) >= 0.5 * sum(p.numel() for p in model.parameters())
    # So onnxruntime gives the operators' exact integer products, as onnx's reference implementation and
    # onnxruntime-web do (with int8 weights, AVX2 CPUs without VNNI saturate 16-bit sums: logits off by ~7e-4).
    feeds = dict(tokenizer(["Hello world, this is EELBERT.", "Naïve café in Zürich: 東京 🙂"], padding=True,
                           return_tensors="np"))
    np.testing.assert_allclose(_session(str(tmp_path / "onnx" / "model_quantized.onnx")).run(None, feeds)[0],
                               ReferenceEvaluator(quantized).run(None, feeds)[0], rtol=0, atol=1e-5)


def test_export_refuses_bad_arguments_and_unencodable_vocabularies_and_writes_nothing(uno_config, tmp_path):
    with pytest.raises(ValueError, match="inputs must be one of"):
        export_onnx(eelbert.EelbertModel(uno_config), tmp_path / "a", inputs="token_ids")
    bad = eelbert.EelbertConfig(embedding_size=12, num_hidden_layers=1, hidden_size=12, num_attention_heads=1,
                                intermediate_size=12)
    bad.set_vocab(["[PAD]", "ok", "bad\ud800"], special_tokens=["[PAD]"])
    with pytest.raises(ValueError, match="'bad.ud800' is not valid Unicode"):
        export_onnx(eelbert.EelbertModel(bad), tmp_path / "b")  # the lazy table never hashed that token
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_command_line_onnx_input_option(tokenizer_path, tmp_path, capsys):
    assert main(["new", "uno-eelbert", str(tmp_path / "uno"), "--tokenizer", str(tokenizer_path),
                 "--head", "question-answering"]) == 0
    capsys.readouterr()
    assert main(["export", "fp16", str(tmp_path / "uno"), str(tmp_path / "fp16"), "--onnx-input", "input_ids"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--onnx-input is for the onnx format, not fp16" in error
    assert not (tmp_path / "fp16").exists()
    assert main(["export", "onnx", str(tmp_path / "uno"), str(tmp_path / "embeds"), "--onnx-input", "inputs_embeds"]) == 0
    session = _session(str(tmp_path / "embeds" / "onnx" / "model.onnx"))
    assert [i.name for i in session.get_inputs()][0] == "inputs_embeds"
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]


def test_packed_embedding_without_a_continuation_prefix_marks_every_token_as_word_start():
    # The traced code run eagerly (the ONNX tests above export this same module): without a prefix "##a" is a word.
    embedded = {}
    for prefix in (None, "##"):
        config = eelbert.EelbertConfig(embedding_size=12, continuing_subword_prefix=prefix)
        config.set_vocab(["[PAD]", "a", "##a", "東京", "##"], special_tokens=["[PAD]"])
        embedded[prefix] = PackedVocabularyEmbedding(config)(torch.arange(5))
        assert torch.equal(embedded[prefix], eelbert.hash_embed(config.vocab, config))
    assert not torch.equal(embedded[None][2], embedded["##"][2]) and torch.equal(embedded[None][1], embedded["##"][1])


NO_ML_STACK = """
import json, sys
for name in ("torch", "transformers", "eelbert", "mmh3"):
    sys.modules[name] = None  # importing any of them fails from here on
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch imported")
import numpy as np
import onnxruntime
from tokenizers import Tokenizer

folder = sys.argv[1]
tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
encodings = tokenizer.encode_batch(["EELBERT runs on a watch.", "東京 😀 naïve"])
feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
         "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
         "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
outputs = {}
for graph in ("model", "model_quantized"):
    session = onnxruntime.InferenceSession(f"{folder}/onnx/{graph}.onnx")
    outputs[graph] = dict(zip([o.name for o in session.get_outputs()], (v.tolist() for v in session.run(None, feeds))))
print(json.dumps({"input_ids": feeds["input_ids"].tolist(), "outputs": outputs}))
"""


@pytest.mark.parametrize("model_class", [eelbert.EelbertModel, eelbert.EelbertForSequenceClassification],
                         ids=["encoder", "classifier"])
def test_the_exported_folder_runs_with_only_onnxruntime_tokenizers_and_numpy(uno_config, tokenizer, tmp_path, model_class):
    torch.manual_seed(0)
    model = model_class(uno_config).eval()
    export_onnx(model, tmp_path)
    tokenizer.save_pretrained(tmp_path)
    result = json.loads(run_python(NO_ML_STACK.replace("sys.argv[1]", repr(str(tmp_path)))).splitlines()[-1])
    batch = tokenizer(["EELBERT runs on a watch.", "東京 😀 naïve"], return_tensors="pt", padding=True)
    assert result["input_ids"] == batch["input_ids"].tolist()  # the tokenizers library alone tokenizes the same
    with torch.no_grad():
        expected = model(**batch, return_dict=True)
    for name, value in result["outputs"]["model"].items():
        assert np.abs(np.array(value) - expected[name].numpy()).max() <= 1e-4, name
    for name, value in result["outputs"]["model_quantized"].items():
        assert np.linalg.norm(np.array(value) - expected[name].numpy()) <= 0.05 * np.linalg.norm(expected[name].numpy())


def test_ids_outside_the_vocabulary_are_an_onnxruntime_error_not_another_tokens_embedding(uno_config, tmp_path):
    model = eelbert.EelbertModel(uno_config).eval()
    session = _session(str(export_onnx(model, tmp_path)))
    ones = np.ones((1, 3), dtype=np.int64)
    session.run(None, {"input_ids": np.array([[101, 2000, 102]]), "attention_mask": ones, "token_type_ids": 0 * ones})
    for bad in (-1, uno_config.vocab_size):  # Gather alone would wrap -1 to the last token
        with pytest.raises(Exception, match="out of (data )?bounds|out of range|invalid"):
            session.run(None, {"input_ids": np.array([[101, bad, 102]]), "attention_mask": ones,
                               "token_type_ids": 0 * ones})
