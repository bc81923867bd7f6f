"""The dynamic embedding: bit-exact with mmh3 and the per-string reference, stable, pinned."""

import hashlib

import mmh3
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import eelbert
from eelbert.modeling import hashing_eelbert as H
from eelbert.reference import reference_embedding
from helpers import run_python

SAMPLES = [
    "", "a", "ab", "abc", "abcd", "abcde", "hello", "##ing", "naïve", "café", "日本語", "中文字符", "😀", "👩‍💻x",
    "e\u0301", "a\u0308\u0304", "Ω≈ç√", "x" * 200, "é" * 200, "😀" * 200, "[CLS]", "\x7f", "\u0800", "\uffff", "\U0010ffff",
]
# Any Unicode string except lone surrogates (which have no UTF-8 encoding).
unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def _utf8_rows(strings):
    return H._utf8(H._code_point_rows(strings))


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1, 2**32 - 1])
def test_murmur3_matches_mmh3_on_edge_cases(seed):
    data, lengths = _utf8_rows(SAMPLES)
    assert H.murmur3_32(data, lengths, seed).tolist() == [mmh3.hash(s, seed, signed=False) for s in SAMPLES]


@settings(max_examples=200, deadline=None)
@given(st.lists(unicode_text, min_size=1, max_size=30), st.integers(0, 2**32 - 1))
def test_murmur3_matches_mmh3_on_random_unicode(strings, seed):
    data, lengths = _utf8_rows(strings)
    assert H.murmur3_32(data, lengths, seed).tolist() == [mmh3.hash(s, seed, signed=False) for s in strings]


def test_utf8_encoding_matches_python():
    data, lengths = _utf8_rows(SAMPLES)
    for s, row, length in zip(SAMPLES, data, lengths):
        assert bytes(row[:length].tolist()) == s.encode("utf-8")


def _config(**overrides):
    # hash_embed takes its strings as an argument; the config only carries the hash settings.
    fields = dict(special_tokens=["[CLS]", "[SEP]"], hidden_size=48, num_attention_heads=2)
    return eelbert.EelbertConfig(**{**fields, **overrides})


@pytest.mark.parametrize("hash_function", ["murmur3", "rolling"])
@pytest.mark.parametrize("embedding_size,max_ngram_order", [(48, 3), (6, 3), (17, 1), (40, 4)])
def test_vectorised_table_equals_reference(hash_function, embedding_size, max_ngram_order):
    tokens = SAMPLES + ["[SEP]", "##a", "##", "##ab"]
    config = _config(embedding_size=embedding_size, max_ngram_order=max_ngram_order,
                     hash_function=hash_function, hash_seed=7, embedding_projection=True)
    table = eelbert.hash_embed(tokens, config)
    assert table.shape == (len(tokens), embedding_size) and table.dtype == torch.float32
    for token, row in zip(tokens, table):
        expected = reference_embedding(token, embedding_size, max_ngram_order, hash_function, 7, config.special_tokens)
        assert torch.equal(row, expected), token


@settings(max_examples=60, deadline=None)
@given(st.lists(unicode_text, min_size=1, max_size=12), st.sampled_from(["murmur3", "rolling"]))
def test_vectorised_table_equals_reference_on_random_unicode(tokens, hash_function):
    config = _config(hash_function=hash_function)
    table = eelbert.hash_embed(tokens, config)
    for token, row in zip(tokens, table):
        assert torch.equal(row, reference_embedding(token, 48, 3, hash_function, 0, config.special_tokens)), token


# Exact float32 values of dimensions (0, 20, 21, 62, 63, 127) at d = 128, N = 3, seed 0 (hash_version 1).
# Order 1 owns dims 0-20, order 2 dims 21-62, order 3 dims 63-127. If these change, every checkpoint breaks.
GOLDEN = {
    "murmur3": {
        "hello": [-0.40733593702316284, 0.3236423432826996, -0.07587859779596329, -0.07728759199380875, 0.02401827462017536, 0.536033034324646],
        "##ing": [-0.14314872026443481, -0.1402890980243683, 0.3142108619213104, 0.5474054217338562, 0.4356062710285187, 0.4585280120372772],
        "[CLS]": [-0.059236329048871994, 0.1521402895450592, -0.5059366226196289, -0.5603115558624268, 0.6250839829444885, 0.5027497410774231],
        "naïve": [0.16996777057647705, 0.30760231614112854, -0.09625232219696045, 0.37604278326034546, 0.14681991934776306, 0.5581176280975342],
        "日本": [0.010961621068418026, -0.03319287672638893, 0.6284748911857605, -0.3191571533679962, -0.783462643623352, -0.04662157595157623],
        "😀": [-0.23660410940647125, 0.6997349262237549, 0.8156282305717468, -0.1919139325618744, 0.0, 0.0],
    },
    "rolling": {
        "hello": [-0.02223195880651474, -0.17582593858242035, -0.326748251914978, 0.11836715787649155, -0.38271862268447876, 0.031137656420469284],
        "[CLS]": [0.40419328212738037, -0.5278497934341431, -0.8484779000282288, -0.47014832496643066, 0.013407482765614986, 0.4637933671474457],
    },
}


@pytest.mark.parametrize("hash_function", GOLDEN)
def test_golden_vectors(hash_function):
    tokens = list(GOLDEN[hash_function])
    config = _config(hidden_size=128, embedding_size=128, hash_function=hash_function)
    table = eelbert.hash_embed(tokens, config)
    for token, row in zip(tokens, table):
        assert [float(row[k]) for k in (0, 20, 21, 62, 63, 127)] == GOLDEN[hash_function][token], token


def test_marking_separates_word_start_and_continuation_pieces():
    tokens = ["ing", "##ing", "[CLS]"]
    table = eelbert.hash_embed(tokens, _config())
    assert not torch.equal(table[0], table[1])
    # They share the n-grams of "ing", so they are closer to each other than to an unrelated token.
    other = eelbert.hash_embed(["zzq"], _config())[0]
    cos = torch.nn.functional.cosine_similarity
    assert cos(table[0], table[1], dim=0) > cos(table[0], other, dim=0)


def test_special_tokens_are_whole_string_hashes_and_distinct(tokenizer):
    vocab, special, _ = eelbert.vocabulary_of(tokenizer)
    assert {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[unused0]", "[unused993]"} <= set(special)
    config = eelbert.EelbertConfig(vocab=vocab, special_tokens=special, hidden_size=128, num_attention_heads=2)
    table = eelbert.hash_embed(special, config)
    assert torch.unique(table, dim=0).shape[0] == len(special)  # every special token has its own vector
    pooled = eelbert.hash_embed(special, eelbert.EelbertConfig(vocab=vocab, hidden_size=128, num_attention_heads=2))
    assert not torch.equal(table[0], pooled[0])  # and it is not the n-gram pooling of its characters


def test_no_trainable_parameters_in_the_word_embedding(small_config):
    model = eelbert.EelbertModel(small_config)
    embedding = model.get_input_embeddings()
    assert list(embedding.parameters()) == []
    assert not any("word_embeddings" in key for key in model.state_dict())
    assert torch.equal(embedding.weight, eelbert.hash_embed(small_config.vocab, small_config))


def test_hash_embed_gives_unseen_strings_the_models_values(small_config):
    strings = ["covid", "##vid", "tiktok", "[CLS]", "hello"]
    vectors = eelbert.hash_embed(strings, small_config)
    assert vectors.shape == (5, small_config.embedding_size)
    table = eelbert.EelbertModel(small_config).get_input_embeddings().weight
    for s, v in zip(strings, vectors):
        if s in small_config.vocab:
            assert torch.equal(v, table[small_config.vocab.index(s)])


@pytest.mark.parametrize("hash_function", ["murmur3", "rolling"])
def test_the_table_is_computed_on_the_device_asked_for(hash_function):
    """Every tensor the hashing makes is on the device asked for (the model asks for its table's, so a CUDA model
    hashes on the GPU): under a meta default device, any tensor made without naming its device would be meta and
    the computation would fail or come out meta."""
    config = _config(hash_function=hash_function)
    tokens = SAMPLES + ["[CLS]", "##ing", "running"]
    expected = eelbert.hash_embed(tokens, config)
    with torch.device("meta"):
        table = eelbert.hash_embed(tokens, config, "cpu")
        H.projection_weights.cache_clear()  # the cached weights are made again under the meta default
        assert torch.equal(eelbert.hash_embed(tokens, config, "cpu"), expected)
    assert table.device.type == "cpu" and torch.equal(table, expected)


@pytest.mark.parametrize("embedding_table", ["lazy", "full", "per_batch"])
def test_the_model_hashes_on_its_tables_device(small_config, embedding_table, monkeypatch):
    from eelbert.modeling import modeling_eelbert

    asked = []

    def recording(tokens, device=None, **settings):
        asked.append(torch.device(device) if device is not None else None)
        return H.hash_embedding_table(tokens, device=device, **settings)

    monkeypatch.setattr(modeling_eelbert, "hash_embedding_table", recording)
    small_config.embedding_table = embedding_table
    model = eelbert.EelbertModel(small_config)
    model(input_ids=torch.tensor([[101, 7592, 2088, 102]]))
    model.get_input_embeddings().weight  # noqa: B018 (a lazy table completes itself)
    assert asked and set(asked) == {torch.device("cpu")}


def test_rolling_hash_differs_from_murmur3():
    tokens = ["hello", "world"]
    murmur = eelbert.hash_embed(tokens, _config())
    rolling = eelbert.hash_embed(tokens, _config(hash_function="rolling"))
    assert not torch.equal(murmur, rolling)


def test_lone_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match="surrogate"):
        eelbert.hash_embed(["ok", "bad\ud800"], _config())


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(hash_version=99), "hash_version=99 is not known"),
        (dict(hash_function="sha1"), "hash_function must be one of"),
        (dict(hash_seed=-1), "hash_seed must be an integer in"),
        (dict(hash_seed=2**32), "hash_seed must be an integer in"),
        (dict(hash_seed=True), "hash_seed must be an integer in"),
        (dict(max_ngram_order=0), "max_ngram_order must be a positive integer"),
        (dict(embedding_size=5), r"embedding_size \(5\) cannot be partitioned"),
    ],
)
def test_bad_hash_settings_are_the_same_clear_error_everywhere(bad, message):
    """One check of the hash settings: the config, the vectorised table and the reference all refuse alike."""
    settings = {**dict(embedding_size=6, max_ngram_order=3, hash_function="murmur3", hash_seed=0), **bad}
    with pytest.raises(ValueError, match=message):
        H.hash_embedding_table(["a"], **settings)
    with pytest.raises(ValueError, match=message):
        reference_embedding("a", **settings)
    with pytest.raises(ValueError, match=message):
        eelbert.EelbertConfig(vocab=["a"], hidden_size=6, num_attention_heads=1, **settings)


@pytest.mark.slow
def test_identical_across_processes_and_hash_seeds(tokenizer_path):
    code = f"""
        import hashlib, eelbert
        from transformers import AutoTokenizer
        config = eelbert.preset_config("uno-eelbert", tokenizer=AutoTokenizer.from_pretrained({str(tokenizer_path)!r}))
        print(hashlib.sha256(eelbert.hash_embed(config.vocab, config).numpy().tobytes()).hexdigest())
    """
    digests = {run_python(code, {"PYTHONHASHSEED": seed}).strip() for seed in ("0", "1", "12345")}
    assert len(digests) == 1
    from transformers import AutoTokenizer

    config = eelbert.preset_config("uno-eelbert", tokenizer=AutoTokenizer.from_pretrained(tokenizer_path))
    here = hashlib.sha256(eelbert.hash_embed(config.vocab, config).numpy().tobytes()).hexdigest()
    assert digests == {here}
