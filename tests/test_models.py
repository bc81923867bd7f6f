"""The model classes: BERT's behaviour with hash embeddings."""

import copy

import pytest
import torch
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

import eelbert


@pytest.fixture
def batch(tokenizer):
    return tokenizer(["the cat sat on the mat", "hello [MASK] world, how are you?"], return_tensors="pt", padding=True)


def test_every_head_returns_transformers_outputs(small_config, batch):
    torch.manual_seed(0)
    small_config.num_labels = 3
    ids = batch["input_ids"]
    b, L = ids.shape
    cases = [
        (eelbert.EelbertModel, {}, BaseModelOutputWithPooling, "last_hidden_state", (b, L, 32)),
        (eelbert.EelbertForMaskedLM, dict(labels=ids), MaskedLMOutput, "logits", (b, L, 30522)),
        (eelbert.EelbertForSequenceClassification, dict(labels=torch.tensor([0, 2])), SequenceClassifierOutput, "logits", (b, 3)),
        (eelbert.EelbertForTokenClassification, dict(labels=torch.zeros_like(ids)), TokenClassifierOutput, "logits", (b, L, 3)),
    ]
    for model_class, labels, output_class, field, shape in cases:
        out = model_class(small_config)(**batch, **labels)
        assert isinstance(out, output_class) and getattr(out, field).shape == shape, model_class
        if labels:
            assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    qa_config = copy.deepcopy(small_config)
    qa_config.num_labels = 2
    qa = eelbert.EelbertForQuestionAnswering(qa_config)(**batch, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
    assert isinstance(qa, QuestionAnsweringModelOutput) and qa.start_logits.shape == (b, L) and torch.isfinite(qa.loss)
    choices = {k: v.unsqueeze(1).expand(-1, 4, -1) for k, v in batch.items()}
    mc = eelbert.EelbertForMultipleChoice(small_config)(**choices, labels=torch.tensor([1, 3]))
    assert isinstance(mc, MultipleChoiceModelOutput) and mc.logits.shape == (b, 4) and torch.isfinite(mc.loss)


@pytest.mark.parametrize(
    "num_labels,labels,problem_type,loss_class",
    [
        (1, torch.tensor([0.5, -1.0]), "regression", torch.nn.MSELoss),
        (3, torch.tensor([0, 2]), "single_label_classification", torch.nn.CrossEntropyLoss),
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "multi_label_classification", torch.nn.BCEWithLogitsLoss),
    ],
)
def test_sequence_classification_problem_types(small_config, batch, num_labels, labels, problem_type, loss_class):
    small_config.num_labels = num_labels
    model = eelbert.EelbertForSequenceClassification(small_config).eval()
    out = model(**batch, labels=labels)
    assert model.config.problem_type == problem_type
    logits = out.logits.squeeze(-1) if num_labels == 1 else out.logits
    assert torch.allclose(out.loss, loss_class()(logits, labels))


def test_padding_does_not_change_the_real_tokens(small_config, tokenizer):
    model = eelbert.EelbertModel(small_config).eval()
    alone = tokenizer(["hello world"], return_tensors="pt")
    padded = tokenizer(["hello world", "a much longer sentence than the first one"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = model(**alone).last_hidden_state[0]
        b = model(**padded).last_hidden_state[0, : a.shape[0]]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_output_attentions_and_hidden_states(small_config, batch, attn_implementation):
    model = eelbert.EelbertModel(small_config).eval()
    model.set_attn_implementation(attn_implementation)
    out = model(**batch, output_attentions=True, output_hidden_states=True)
    b, L = batch["input_ids"].shape
    assert len(out.hidden_states) == small_config.num_hidden_layers + 1
    assert len(out.attentions) == small_config.num_hidden_layers
    assert out.attentions[0].shape == (b, small_config.num_attention_heads, L, L)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(b, small_config.num_attention_heads, L), atol=1e-5)
    # Padding positions get no attention (the first sentence is the shorter one, so it is padded).
    padding = ~batch["attention_mask"][0].bool()
    assert padding.any() and out.attentions[0][0, :, :, padding].max() < 1e-6
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    plain = model(**batch)
    assert plain.attentions is None and plain.hidden_states is None


def test_return_dict_false_gives_tuples(small_config, batch):
    model = eelbert.EelbertForMaskedLM(small_config).eval()
    with torch.no_grad():
        as_tuple = model(**batch, labels=batch["input_ids"], return_dict=False)
        as_dict = model(**batch, labels=batch["input_ids"])
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)
    encoder_tuple = eelbert.EelbertModel(small_config)(**batch, return_dict=False)
    assert isinstance(encoder_tuple, tuple) and len(encoder_tuple) == 2


def test_masked_lm_decoder_is_the_fixed_hash_table(small_config, batch):
    model = eelbert.EelbertForMaskedLM(small_config).eval()
    vocab_sized = {k: v.shape for k, v in model.state_dict().items() if small_config.vocab_size in v.shape}
    assert vocab_sized == {"cls.predictions.bias": (small_config.vocab_size,)}  # no vocabulary x hidden matrix
    with torch.no_grad():
        h = model.eelbert(**batch).last_hidden_state
        head = model.cls.predictions
        expected = head.LayerNorm(head.transform_act_fn(head.dense(h))) @ model.get_input_embeddings().weight.T + head.bias
        assert torch.allclose(model(**batch).logits, expected, atol=1e-5)


def test_learned_decoder_and_embedding_projection_options(tokenizer, batch):
    config = eelbert.preset_config("eelbert-tiny", tokenizer=tokenizer, hidden_size=32, intermediate_size=64,
                                               embedding_size=48, mlm_decoder="learned")
    assert config.embedding_projection  # embedding_size != hidden_size needs the projection
    model = eelbert.EelbertForMaskedLM(config)
    state = model.state_dict()
    assert state["cls.predictions.decoder.weight"].shape == (30522, 48)
    assert state["eelbert.embeddings.projection.weight"].shape == (32, 48)
    assert model(**batch).logits.shape[-1] == 30522
    same_size = eelbert.preset_config("eelbert-tiny", tokenizer=tokenizer, embedding_projection=True)
    assert eelbert.EelbertModel(same_size).embeddings.projection.weight.shape == (128, 128)


def test_new_tokens_get_hash_embeddings_with_zero_new_parameters(small_config, tokenizer, batch):
    model = eelbert.EelbertForMaskedLM(small_config)
    parameters_before = sum(p.numel() for p in model.parameters())
    tokenizer.add_tokens(["covid19", "tiktoker"])
    model.set_vocab(tokenizer)
    assert model.config.vocab_size == len(tokenizer) == 30524
    assert sum(p.numel() for p in model.parameters()) == parameters_before + 2  # only the 2 masked-LM bias entries
    table = model.get_input_embeddings().weight
    assert torch.equal(table[-2:], eelbert.hash_embed(["covid19", "tiktoker"], model.config))
    ids = tokenizer(["covid19 is here"], return_tensors="pt")
    assert model(**ids).logits.shape[-1] == 30524
    # A count alone cannot say what the new tokens are.
    with pytest.raises(ValueError, match="set_vocab"):
        model.resize_token_embeddings(len(tokenizer) + 5)
    assert model.resize_token_embeddings(len(tokenizer)) is model.get_input_embeddings()


def test_ids_outside_the_vocabulary_are_a_clear_error(small_config):
    model = eelbert.EelbertModel(small_config)
    with pytest.raises(ValueError, match="outside the vocabulary of 30522 tokens"):
        model(input_ids=torch.tensor([[101, 30522, 102]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(input_ids=torch.tensor([[-1]]))


def test_wrong_shaped_inputs_are_clear_errors(small_config):
    model = eelbert.EelbertModel(small_config)
    with pytest.raises(ValueError, match="input_ids must have 2 dimensions"):
        model(input_ids=torch.tensor([101, 102]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(input_ids=torch.tensor([[101, 102]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.ones(1, 600, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


def test_inputs_embeds_are_hash_embeddings(small_config, tokenizer):
    model = eelbert.EelbertModel(small_config).eval()
    ids = tokenizer(["unbelievable"], return_tensors="pt")["input_ids"]
    embeds = eelbert.hash_embed(tokenizer.convert_ids_to_tokens(ids[0]), small_config).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).last_hidden_state, model(inputs_embeds=embeds).last_hidden_state)


def test_model_without_vocabulary_is_a_clear_error():
    config = eelbert.preset_config("uno-eelbert")
    with pytest.raises(ValueError, match="no vocabulary"):
        eelbert.EelbertModel(config)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_table_follows_dtype_and_device(small_config, batch, dtype):
    model = eelbert.EelbertModel(small_config).eval()
    table = model.get_input_embeddings().weight
    converted = copy.deepcopy(model).to(dtype)
    assert converted.get_input_embeddings().weight.dtype == dtype
    assert torch.equal(converted.get_input_embeddings().weight, table.to(dtype))
    if dtype == torch.float16:
        assert copy.deepcopy(model).half().get_input_embeddings().weight.dtype == torch.float16
    with torch.no_grad():
        out = converted(**batch).last_hidden_state
    assert out.dtype == dtype and torch.allclose(out.float(), model(**batch).last_hidden_state, atol=0.1)
    meta = copy.deepcopy(model).to("meta")
    assert meta.get_input_embeddings().weight.device.type == "meta"


def test_auto_classes_are_registered(small_config):
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForMultipleChoice

    assert type(AutoModel.from_config(small_config)) is eelbert.EelbertModel
    assert type(AutoModelForMaskedLM.from_config(small_config)) is eelbert.EelbertForMaskedLM
    assert type(AutoModelForMultipleChoice.from_config(small_config)) is eelbert.EelbertForMultipleChoice
    assert AutoConfig.for_model("eelbert", vocab=["a"]).vocab_size == 1


def test_lazy_table_builds_only_the_rows_it_sees(small_config, batch):
    model = eelbert.EelbertModel(small_config).eval()
    embedding = model.get_input_embeddings()
    assert small_config.embedding_table == "lazy" and not embedding.built.any()
    with torch.no_grad():
        lazy_out = model(**batch).last_hidden_state
    seen = torch.unique(batch["input_ids"])
    assert embedding.built.sum() == len(seen) and embedding.built[seen].all()
    full_table = eelbert.hash_embed(small_config.vocab, small_config)
    assert torch.equal(embedding.table[seen], full_table[seen])
    assert torch.equal(embedding.weight, full_table) and embedding.built.all()  # `weight` completes the table
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, lazy_out)


@pytest.mark.parametrize("mode", ["full", "per_batch"])
def test_table_modes_give_identical_outputs(small_config, batch, mode):
    torch.manual_seed(0)
    lazy = eelbert.EelbertForSequenceClassification(small_config).eval()
    other = eelbert.EelbertForSequenceClassification(eelbert.EelbertConfig.from_dict({**small_config.to_dict(), "embedding_table": mode})).eval()
    other.load_state_dict(lazy.state_dict())
    table = other.get_input_embeddings().table
    assert table.shape[0] == (30522 if mode == "full" else 0)  # per_batch keeps nothing
    if mode == "full":
        assert other.get_input_embeddings().built.all()
    with torch.no_grad():
        assert torch.equal(other(**batch).logits, lazy(**batch).logits)


def test_per_batch_mode_refuses_the_hash_masked_lm_decoder(small_config):
    small_config.embedding_table = "per_batch"
    with pytest.raises(ValueError, match="per_batch"):
        eelbert.EelbertForMaskedLM(small_config)


def test_table_mode_can_be_chosen_at_load(small_config, tmp_path, batch):
    eelbert.EelbertModel(small_config).save_pretrained(tmp_path)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tmp_path, embedding_table="full")
    assert model.get_input_embeddings().built.all()
    assert torch.equal(model.get_input_embeddings().table, eelbert.hash_embed(small_config.vocab, small_config))
    lazy = AutoModel.from_pretrained(tmp_path)
    assert not lazy.get_input_embeddings().built.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_table_follows_the_model_to_the_gpu(small_config, batch):
    model = eelbert.EelbertForMaskedLM(small_config).eval()
    with torch.no_grad():
        cpu = model(**batch).logits
        gpu_model = model.to("cuda")
        assert gpu_model.get_input_embeddings().table.device.type == "cuda"
        gpu = gpu_model(**{k: v.cuda() for k, v in batch.items()}).logits
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    fresh = eelbert.EelbertModel(small_config).to("cuda")  # lazy rows hashed on the GPU
    fresh(input_ids=batch["input_ids"].cuda())
    assert torch.equal(fresh.get_input_embeddings().weight.cpu(), eelbert.hash_embed(small_config.vocab, small_config))
    on_gpu = eelbert.hash_embed(small_config.vocab, small_config, "cuda")  # integer arithmetic: the same bits
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), eelbert.hash_embed(small_config.vocab, small_config))
    with pytest.raises(RuntimeError):  # a bad id fails on the device, without a host sync on good batches
        fresh(input_ids=torch.tensor([[small_config.vocab_size]], device="cuda"))
        torch.cuda.synchronize()
