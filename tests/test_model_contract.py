"""transformers' model contract (what its common model tests check), for the six EELBERT classes: attention
switching, export and compilation, gradient checkpointing, buffers built on the meta device, save/load across
heads, output capture, bad input, and the clear refusals where EELBERT has no learned word table."""

import copy
import re
import sys
import warnings

import pytest
import torch
import transformers
from torch import nn

import eelbert

MODELING = sys.modules[eelbert.EelbertModel.__module__]  # the module the classes live in
ALL_CLASSES = [
    eelbert.EelbertModel,
    eelbert.EelbertForMaskedLM,
    eelbert.EelbertForSequenceClassification,
    eelbert.EelbertForTokenClassification,
    eelbert.EelbertForQuestionAnswering,
    eelbert.EelbertForMultipleChoice,
]


@pytest.fixture
def inputs(tokenizer):
    return dict(tokenizer(["the cat sat on the mat", "hello [MASK] world, how are you?"], return_tensors="pt", padding=True))


def for_class(model_class, inputs):
    """The inputs as `model_class` takes them: multiple choice gets [batch, 3 choices, seq]."""
    if model_class is eelbert.EelbertForMultipleChoice:
        return {k: v.unsqueeze(1).expand(-1, 3, -1).contiguous() for k, v in inputs.items()}
    return inputs


def with_config(config, **changes):
    return eelbert.EelbertConfig.from_dict({**config.to_dict(), **changes})


@pytest.fixture
def count_eager_attention(monkeypatch):
    """calls[0] counts the calls of the eager attention function (the modeling file's own)."""
    calls = [0]
    eager = MODELING.eager_attention_forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return eager(*args, **kwargs)

    monkeypatch.setattr(MODELING, "eager_attention_forward", counted)
    return calls


# ---- Attention: set_attn_implementation really switches ----


def test_set_attn_implementation_switches_between_sdpa_and_eager(small_config, inputs, count_eager_attention):
    torch.manual_seed(0)
    model = eelbert.EelbertForMaskedLM(small_config).eval()
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        sdpa = model(**inputs).logits
        assert count_eager_attention[0] == 0
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        eager = model(**inputs).logits
        assert count_eager_attention[0] == small_config.num_hidden_layers  # one call per layer
        model.set_attn_implementation("sdpa")
        assert torch.allclose(model(**inputs).logits, sdpa, atol=1e-5)
        assert count_eager_attention[0] == small_config.num_hidden_layers
    real = inputs["attention_mask"].bool()  # padded positions attend to nothing, so they may differ
    assert torch.allclose(eager[real], sdpa[real], atol=1e-5)
    chosen = eelbert.EelbertModel._from_config(copy.deepcopy(small_config), attn_implementation="eager")
    assert chosen.config._attn_implementation == "eager"


def test_output_attentions_uses_eager_attention_for_that_call(small_config, inputs, count_eager_attention):
    model = eelbert.EelbertModel(small_config).eval()
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    assert model.config._attn_implementation == "sdpa"  # the model keeps sdpa for later calls
    assert count_eager_attention[0] == small_config.num_hidden_layers
    assert all(a is not None for a in out.attentions)


# ---- Export, compilation, tracing of the default lazy table ----


def lazy_model(model_class, config, tmp_path=None):
    """A model with nothing of its lazy table built: freshly made, or (with tmp_path) saved and loaded."""
    model = model_class(config).eval()
    if tmp_path is not None:
        model.save_pretrained(tmp_path)
        model = model_class.from_pretrained(tmp_path).eval()
    assert model.config.embedding_table == "lazy" and not model.get_input_embeddings().built.any()
    return model


@pytest.mark.parametrize("model_class,loaded", [(eelbert.EelbertModel, False), (eelbert.EelbertForMaskedLM, True)])
def test_torch_export_of_a_lazy_model_gives_its_outputs(small_config, inputs, tmp_path, model_class, loaded):
    torch.manual_seed(0)
    model = lazy_model(model_class, small_config, tmp_path if loaded else None)
    exported = torch.export.export(model, args=(), kwargs=inputs)
    with torch.no_grad():
        expected = model(**inputs)[0]
        assert torch.allclose(exported.module()(**inputs)[0], expected, atol=1e-5)


def test_torch_export_with_dynamic_shapes_checks_ids(small_config, inputs, tokenizer):
    model = lazy_model(eelbert.EelbertModel, small_config)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=small_config.max_position_embeddings)
    exported = torch.export.export(model, args=(), kwargs=inputs, dynamic_shapes={k: {0: batch, 1: sequence} for k in inputs})
    other = dict(tokenizer(["one two three four five six seven", "x", "y z"], return_tensors="pt", padding=True))
    with torch.no_grad():
        assert torch.allclose(exported.module()(**other)[0], model(**other)[0], atol=1e-5)
        other["input_ids"][1, 1] = small_config.vocab_size
        with pytest.raises(RuntimeError, match="outside the vocabulary of 30522 tokens"):
            exported.module()(**other)


def test_torch_jit_trace_of_a_function_calling_a_lazy_model(small_config, inputs):
    model = lazy_model(eelbert.EelbertModel, small_config).requires_grad_(False)
    ids = inputs["input_ids"]

    def encode(x):
        return model(input_ids=x, return_dict=False)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.compile / torch.export
        traced = torch.jit.trace(encode, ids, check_trace=False)
    assert model.get_input_embeddings().built.all()  # completed outside the trace...
    assert "aten::unique" not in str(traced.graph)  # ...so the graph holds no hashing
    assert torch.allclose(traced(ids), encode(ids), atol=1e-5)


@pytest.mark.parametrize("model_class", [eelbert.EelbertModel, eelbert.EelbertForMaskedLM])
def test_a_full_table_compiles_as_one_graph_and_exports_strictly(small_config, inputs, model_class):
    model = model_class(with_config(small_config, embedding_table="full")).eval()
    with torch.no_grad():
        expected = model(**inputs)[0]
        one_graph = torch.compile(model, fullgraph=True, backend="eager")  # dynamo's graph capture, no codegen
        assert torch.allclose(one_graph(**inputs)[0], expected, atol=1e-5)
        strict = torch.export.export(model, args=(), kwargs=inputs, strict=True)
        assert torch.allclose(strict.module()(**inputs)[0], expected, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_of_a_lazy_model_and_a_bad_id(small_config, inputs):
    model = lazy_model(eelbert.EelbertModel, small_config)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert torch.allclose(compiled(**inputs).last_hidden_state, model(**inputs).last_hidden_state, atol=1e-5)
        assert model.get_input_embeddings().complete  # the first compiled call completed the table
        bad = {**inputs, "input_ids": inputs["input_ids"].clone()}
        bad["input_ids"][0, 1] = small_config.vocab_size
        # Inside the compiled graph: our message, not a raw kernel's index error.
        with pytest.raises(RuntimeError, match="input_ids contain an id outside the vocabulary of 30522 tokens"):
            compiled(**bad)


# ---- Gradient checkpointing (transformers' GradientCheckpointingLayer) ----


@pytest.fixture
def four_layers(small_config):
    return with_config(small_config, num_hidden_layers=4)


def checkpointed_layers(model):
    return [layer.gradient_checkpointing for layer in model.base_model.encoder.layer]


def test_gradient_checkpointing_enable_and_disable(four_layers):
    model = eelbert.EelbertForSequenceClassification(four_layers).train()
    assert model.supports_gradient_checkpointing and not model.is_activation_checkpointing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers >= 5.23 renames these activation_checkpointing_*
        model.gradient_checkpointing_enable()
        assert model.is_activation_checkpointing and checkpointed_layers(model) == [True] * 4
        model.gradient_checkpointing_disable()
    assert not model.is_activation_checkpointing and checkpointed_layers(model) == [False] * 4
    model.activation_checkpointing_enable(every_n_layers=2)
    assert checkpointed_layers(model) == [True, False, True, False]
    model.activation_checkpointing_disable()
    assert checkpointed_layers(model) == [False] * 4


@pytest.mark.parametrize("every_n_layers", [1, 2, 3])
@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients_on_the_intended_layers(
    four_layers, inputs, monkeypatch, every_n_layers, use_reentrant
):
    # transformers binds torch's checkpoint when checkpointing is enabled: count which layers it runs.
    ran = []
    checkpoint = transformers.modeling_utils.checkpoint

    def counted(function, *args, **kwargs):
        ran.append(function.args[0])  # GradientCheckpointingLayer passes partial(forward, layer)
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counted)
    torch.manual_seed(0)
    model = eelbert.EelbertForMaskedLM(four_layers).train()
    reference = copy.deepcopy(model)
    model.activation_checkpointing_enable({"use_reentrant": use_reentrant}, every_n_layers=every_n_layers)
    for m in (model, reference):
        m(**inputs, labels=inputs["input_ids"]).loss.backward()
    layers = list(model.eelbert.encoder.layer)
    assert ran == layers[::every_n_layers]
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    ran.clear()
    with torch.no_grad():
        model.eval()(**inputs)
    assert ran == []  # nothing to recompute in evaluation


# ---- Buffers: a lazy table starts as zeros, whether built normally or on the meta device ----


@pytest.fixture
def small_vocabulary(small_config):
    """small_config over 205 tokens: small tables come from reused memory, where torch.empty is not zeros."""
    config = copy.deepcopy(small_config)
    tokens = list(config.vocab[:105]) + list(config.vocab[2000:2100])
    config.set_vocab(tokens, special_tokens=[t for t in config.special_tokens if t in set(tokens)])
    return config


def leave_garbage_behind(config):
    """Free a table-sized block of nonzero memory, as a long-running process would have."""
    garbage = torch.full((config.vocab_size, config.embedding_size), 7.0)
    del garbage


@pytest.mark.parametrize("embedding_table", ["lazy", "full"])
def test_buffers_built_on_the_meta_device_equal_a_normal_build(small_vocabulary, embedding_table):
    config = with_config(small_vocabulary, embedding_table=embedding_table, num_labels=2)
    for model_class in ALL_CLASSES:
        leave_garbage_behind(config)
        normal = model_class(copy.deepcopy(config))
        with torch.device("meta"):
            from_meta = model_class(copy.deepcopy(config))
        leave_garbage_behind(config)
        from_meta.to_empty(device="cpu")
        from_meta.init_weights()
        buffers, meta_buffers = dict(normal.named_buffers()), dict(from_meta.named_buffers())
        assert buffers.keys() == meta_buffers.keys()
        for name, buffer in buffers.items():
            assert torch.equal(buffer, meta_buffers[name]), (model_class.__name__, name)
        embedding = normal.get_input_embeddings()
        if embedding_table == "lazy":  # not uninitialised memory
            assert not embedding.table.any() and not embedding.built.any()
        else:
            assert torch.equal(embedding.table, eelbert.hash_embed(config.vocab, config))


def test_lazy_rows_not_yet_looked_up_stay_zero(small_vocabulary):
    leave_garbage_behind(small_vocabulary)
    model = eelbert.EelbertModel(small_vocabulary).eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[101, 150, 102]]))
    embedding = model.get_input_embeddings()
    seen = embedding.built
    assert seen.sum() == 3
    assert torch.equal(embedding.table[seen], eelbert.hash_embed(small_vocabulary.vocab, small_vocabulary)[seen])
    assert not embedding.table[~seen].any()


# ---- Bad input ----


def test_float_input_ids_are_a_clear_error(small_config):
    model = eelbert.EelbertModel(small_config)
    with pytest.raises(ValueError, match="input_ids must be integer token ids .* got dtype torch.float32"):
        model(input_ids=torch.tensor([[101.0, 102.0]]))


@pytest.mark.parametrize("model_class,shape", [
    (eelbert.EelbertModel, (0, 5)),
    (eelbert.EelbertModel, (2, 0)),
    (eelbert.EelbertForSequenceClassification, (0, 5)),
    (eelbert.EelbertForMultipleChoice, (2, 3, 0)),
])
def test_an_empty_batch_is_a_clear_error(small_config, model_class, shape):
    model = model_class(small_config)
    with pytest.raises(ValueError, match=re.escape(f"the input is empty (shape {shape})")):
        model(input_ids=torch.zeros(shape, dtype=torch.long))


# ---- Save and load across heads ----


def test_a_masked_lm_checkpoint_loads_into_every_task_head(small_config, tmp_path):
    torch.manual_seed(0)
    masked_lm = eelbert.EelbertForMaskedLM(small_config)
    masked_lm.save_pretrained(tmp_path)
    encoder = masked_lm.eelbert.state_dict()
    for model_class in ALL_CLASSES[2:]:
        num_labels = 2 if model_class is eelbert.EelbertForQuestionAnswering else 5
        model = model_class.from_pretrained(tmp_path, num_labels=num_labels)
        assert model.config.num_labels == num_labels
        for name, value in model.eelbert.state_dict().items():
            if name in encoder:  # the pooler is new: the masked-LM has none
                assert torch.equal(value, encoder[name]), (model_class.__name__, name)


def test_mismatched_head_sizes_need_ignore_mismatched_sizes(small_config, inputs, tmp_path):
    torch.manual_seed(0)
    for model_class in (eelbert.EelbertForSequenceClassification, eelbert.EelbertForTokenClassification):
        folder = tmp_path / model_class.__name__
        model_class(with_config(small_config, num_labels=3)).save_pretrained(folder)
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            model_class.from_pretrained(folder, num_labels=7)
        loaded = model_class.from_pretrained(folder, num_labels=7, ignore_mismatched_sizes=True).eval()
        assert loaded.classifier.weight.shape == (7, small_config.hidden_size)
        with torch.no_grad():
            assert loaded(**inputs).logits.shape[-1] == 7


# ---- Output capture for every head ----


@pytest.mark.parametrize("model_class", ALL_CLASSES)
@pytest.mark.parametrize("from_config", [False, True])
def test_hidden_states_and_attentions_for_every_head(small_config, inputs, model_class, from_config):
    config = with_config(small_config, num_labels=2)
    if from_config:
        config.output_hidden_states = config.output_attentions = True
    model = model_class(config).eval()
    model_inputs = for_class(model_class, inputs)
    flags = {} if from_config else dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        out = model(**model_inputs, **flags)
        as_tuple = model(**model_inputs, **flags, return_dict=False)
    rows, length = model_inputs["input_ids"].reshape(-1, inputs["input_ids"].shape[-1]).shape
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
    assert all(h.shape == (rows, length, config.hidden_size) for h in out.hidden_states)
    assert all(a.shape == (rows, heads, length, length) for a in out.attentions)
    assert as_tuple[-2] is not None and len(as_tuple[-2]) == layers + 1 and len(as_tuple[-1]) == layers
    if not from_config:
        plain = model(**model_inputs)
        assert plain.hidden_states is None and plain.attentions is None


# ---- No learned word table: the clear refusals stay ----


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_input_embeddings_cannot_be_replaced_or_resized_by_a_number(small_config, model_class):
    model = model_class(with_config(small_config, num_labels=2))
    embeddings = model.get_input_embeddings()
    assert embeddings.weight.shape == (small_config.vocab_size, small_config.embedding_size)
    with pytest.raises(ValueError, match="set_vocab"):
        model.set_input_embeddings(nn.Embedding(small_config.vocab_size, small_config.embedding_size))
    with pytest.raises(ValueError, match="set_vocab"):
        model.resize_token_embeddings(small_config.vocab_size + 8)
    assert model.resize_token_embeddings(small_config.vocab_size) is embeddings
    assert model.get_input_embeddings() is embeddings
