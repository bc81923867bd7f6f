"""ONNX with the hash embedding inside the graph: bit-exact embeddings in onnxruntime, every head's outputs."""

import numpy as np
import pytest
import torch

import eelbert
from eelbert.cli import main
from eelbert.onnx_export import PackedVocabularyEmbedding, export_graph, export_onnx

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
    assert path.stat().st_size <= 1_600_000  # UNO-EELBERT, vocabulary included
    # The masked-LM graph scores against the whole table, a constant expression that onnxruntime folds at load by
    # default (tens of seconds for 30,522 tokens); unfolded it is computed by the same kernels on each run.
    options = {"disabled_optimizers": ["ConstantFolding"]} if model_class is eelbert.EelbertForMaskedLM else {}
    session = _session(str(path), **options)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == output_names
    for texts in (["hello world"], ["the cat sat on the [MASK].", "東京 😀 naïve façade", "a much longer third one"]):
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        if model_class is eelbert.EelbertForMultipleChoice:  # one question, len(texts) choices
            batch = {name: ids.unsqueeze(0) for name, ids in batch.items()}
        got = session.run(None, {name: ids.numpy() for name, ids in batch.items()})
        with torch.no_grad():
            expected = model(**batch, return_dict=True)
        for name, value in zip(output_names, got):
            assert value.shape == tuple(expected[name].shape), name
            assert np.abs(value - expected[name].numpy()).max() <= 1e-4, name


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
    session = _session(str(tmp_path / "embeds" / "model.onnx"))
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
