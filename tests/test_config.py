"""EelbertConfig: presets, vocabulary binding and clear errors for bad values."""

import pytest

import eelbert

TOKENS = ["[PAD]", "[CLS]", "hello", "##ing"]


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(max_ngram_order=0), "max_ngram_order"),
        (dict(embedding_size=5, embedding_projection=True), "embedding_size"),  # 3 orders need >= 6 dims
        (dict(hash_function="sha1"), "hash_function"),
        (dict(hash_version=2), "hash_version"),
        (dict(hash_seed=-1), "hash_seed"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size"),
        (dict(num_hidden_layers=-1), "num_hidden_layers"),
        (dict(intermediate_size=1.5), "intermediate_size"),
        (dict(vocab_size=3), "vocab_size"),
        (dict(mlm_decoder="tied"), "mlm_decoder"),
        (dict(embedding_size=64, embedding_projection=False), "embedding_projection"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(pad_token_id=10), "pad_token_id"),
        (dict(embedding_table="eager"), "embedding_table"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(overrides, field):
    fields = dict(vocab=TOKENS, hidden_size=32, num_attention_heads=2, embedding_size=32)
    with pytest.raises(ValueError, match=field):
        eelbert.EelbertConfig(**{**fields, **overrides})


def test_presets_have_the_papers_shapes(tokenizer):
    shapes = {
        "eelbert-base": (12, 768, 12, 3072),
        "eelbert-mini": (4, 256, 4, 1024),
        "eelbert-tiny": (2, 128, 2, 512),
        "uno-eelbert": (1, 128, 2, 512),
    }
    for name, shape in shapes.items():
        config = eelbert.preset_config(name, tokenizer=tokenizer)
        assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == shape
        assert config.preset == name and config.vocab_size == len(tokenizer) == 30522
        baseline = eelbert.baseline_config(eelbert.BASELINE_OF[name])
        # UNO-EELBERT is compared with BERT-tiny, whose encoder has one layer more.
        baseline_layers = 2 if name == "uno-eelbert" else shape[0]
        assert (baseline.num_hidden_layers, baseline.hidden_size, baseline.intermediate_size) == (baseline_layers, *shape[1::2])


def test_preset_config_binds_the_tokenizer(tokenizer):
    config = eelbert.preset_config("uno-eelbert", tokenizer=tokenizer)
    assert list(config.vocab) == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert config.continuing_subword_prefix == "##"
    assert config.pad_token_id == tokenizer.pad_token_id
    assert "[MASK]" in config.special_tokens and "hello" not in config.special_tokens


def test_preset_config_takes_a_list_of_strings_and_overrides():
    config = eelbert.preset_config("uno-eelbert", vocab=TOKENS, special_tokens=["[PAD]", "[CLS]"],
                                               hash_function="rolling")
    assert config.vocab_size == 4 and config.hash_function == "rolling" and config.num_hidden_layers == 1


def test_unknown_preset_and_baseline_presets_are_clear_errors():
    with pytest.raises(ValueError, match="unknown preset 'eelbert-huge'.*uno-eelbert"):
        eelbert.preset_config("eelbert-huge")
    with pytest.raises(ValueError, match="plain-BERT baseline"):
        eelbert.preset_config("bert-tiny")
    with pytest.raises(ValueError, match="unknown BERT baseline"):
        eelbert.baseline_config("uno-eelbert")


def test_repr_does_not_dump_the_vocabulary(uno_config):
    text = repr(uno_config)
    assert "<30522 tokens>" in text and "##ing" not in text and len(text) < 5000


def test_auto_map_is_complete_on_every_config():
    config = eelbert.EelbertConfig(vocab=TOKENS, hidden_size=32, num_attention_heads=2, auto_map={"AutoModel": "x.Y"})
    assert set(config.auto_map) == {
        "AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice",
    }
    assert config.auto_map["AutoModel"] == "modeling_eelbert.EelbertModel"


def test_vocabulary_round_trips_through_config_json(tmp_path):
    tokens = ["[PAD]", "hello", "##ing", "", "a b", "\n", '"quoted"', "日本", "😀"]
    config = eelbert.EelbertConfig(vocab=tokens, special_tokens=["[PAD]"], hidden_size=32, num_attention_heads=2)
    config.save_pretrained(tmp_path)
    assert '"vocab": "[PAD]\\u0000hello' in (tmp_path / "config.json").read_text()  # one string, NUL-separated
    loaded = eelbert.EelbertConfig.from_pretrained(tmp_path)
    assert list(loaded.vocab) == tokens and list(loaded.special_tokens) == ["[PAD]"] and loaded.vocab_size == 9
    with pytest.raises(ValueError, match="NUL"):
        eelbert.EelbertConfig(vocab=["a\x00b"], hidden_size=32, num_attention_heads=2)


def test_presets_live_in_the_library_not_in_the_bundle_every_checkpoint_carries(tmp_path, tokenizer):
    # A remote-code copy of modeling/ has no configs/ beside it: a preset lookup there could only fail.
    eelbert.EelbertModel(eelbert.preset_config("uno-eelbert", tokenizer=tokenizer)).save_pretrained(tmp_path)
    bundle = "".join(p.read_text() for p in tmp_path.glob("*.py"))
    assert bundle and "PRESETS_DIR" not in bundle and "from_preset" not in bundle and "configs/" not in bundle
    assert (eelbert.presets.PRESETS_DIR / "uno-eelbert.json").is_file()


def test_embedding_fields_assigned_as_plain_lists_save_and_reload(tmp_path):
    """The fingerprint of a vocabulary does not depend on whether it is held as a list or a tuple."""
    config = eelbert.EelbertConfig(vocab=TOKENS, hidden_size=32, num_attention_heads=2)
    config.vocab, config.special_tokens = ["[PAD]", "[CLS]", "bye", "##ing"], ["[PAD]", "[CLS]"]
    config.save_pretrained(tmp_path)
    loaded = eelbert.EelbertConfig.from_pretrained(tmp_path)
    assert list(loaded.vocab) == ["[PAD]", "[CLS]", "bye", "##ing"] and list(loaded.special_tokens) == ["[PAD]", "[CLS]"]
