"""The opt-in learned n-gram buckets (config.ngram_buckets): off by default, zero at initialization, saved and
loaded, bit-exact bucket ids, trained by masked-LM, counted in the size, refused by the ONNX export."""

import json

import mmh3
import pytest
import torch
from transformers import BertForMaskedLM

import eelbert
from eelbert.cli import main
from eelbert.convert import convert_bert
from eelbert.onnx_export import export_onnx
from eelbert.modeling.hashing_eelbert import mark_token, ngram_bucket_ids
from eelbert.size import saved_size
from helpers import REPO

BUCKETS = "ngram_buckets"  # the module's name in the state dict


def _reference_buckets(token, num_buckets, hash_seed=0, special=(), max_order=3):
    """The bucket of every n-gram of `token`, with the mmh3 package: a special token's whole string, or each
    n-gram (orders 1..N, in order of appearance) of the marked token."""
    grams = [token] if token in special else [
        m[i : i + n] for m in [mark_token(token)] for n in range(1, max_order + 1) for i in range(len(m) - n + 1)
    ]
    return [mmh3.hash(g.encode("utf-8"), hash_seed + 1, signed=False) % num_buckets for g in grams]


def _pair(config, **buckets):
    """The same model (same seed) without and with buckets."""
    torch.manual_seed(0)
    plain = eelbert.EelbertForMaskedLM(config).eval()
    torch.manual_seed(0)
    with_buckets = eelbert.EelbertForMaskedLM(eelbert.EelbertConfig(**{**config.to_dict(), **buckets})).eval()
    return plain, with_buckets


def _randomize(model):
    with torch.no_grad():
        model.eelbert.embeddings.ngram_buckets.weight.normal_(0, 0.5)


def test_off_by_default_no_new_parameter_and_the_same_outputs(uno_config, tokenizer):
    assert eelbert.EelbertConfig().ngram_buckets == 0 and uno_config.ngram_buckets == 0
    plain, with_buckets = _pair(uno_config, ngram_buckets=64)
    assert plain.eelbert.embeddings.ngram_buckets is None
    assert not any(BUCKETS in key for key in plain.state_dict())
    assert set(with_buckets.state_dict()) - set(plain.state_dict()) == {f"eelbert.embeddings.{BUCKETS}.weight"}
    batch = tokenizer(["the embeding of naïve words", "東京 [MASK]"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, with_buckets(**batch).logits, atol=1e-6, rtol=0)


def test_a_fresh_table_is_zero_and_saved_values_survive_from_pretrained(small_config, tokenizer, tmp_path):
    plain, model = _pair(small_config, ngram_buckets=128)
    table = model.eelbert.embeddings.ngram_buckets.weight
    assert torch.equal(table, torch.zeros(128, small_config.embedding_size))
    ids = tokenizer(["embedding embeding ##ing [CLS]"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(plain.eelbert.embeddings(ids), model.eelbert.embeddings(ids))
    model.save_pretrained(tmp_path / "fresh")
    assert torch.equal(eelbert.EelbertForMaskedLM.from_pretrained(tmp_path / "fresh").eelbert.embeddings.ngram_buckets.weight,
                       table)

    _randomize(model)
    model.save_pretrained(tmp_path / "trained")
    assert json.loads((tmp_path / "trained" / "config.json").read_text())["ngram_buckets"] == 128
    loaded = eelbert.EelbertForMaskedLM.from_pretrained(tmp_path / "trained").eval()
    assert torch.equal(loaded.eelbert.embeddings.ngram_buckets.weight, table)  # not re-initialized by _init_weights
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(loaded(ids).logits, plain(ids).logits, atol=1e-3)


@pytest.mark.parametrize("embedding_table", ["lazy", "full", "per_batch"])
def test_each_token_adds_the_mean_of_its_ngram_buckets_before_the_projection(tokenizer, embedding_table):
    config = eelbert.preset_config("eelbert-tiny", tokenizer=tokenizer, hidden_size=32, intermediate_size=64,
                                   embedding_size=16, embedding_projection=True, ngram_buckets=97,
                                   embedding_table=embedding_table, hash_seed=5)
    embeddings = eelbert.EelbertModel(config).embeddings.eval()
    with torch.no_grad():
        embeddings.ngram_buckets.weight.normal_()
    table = embeddings.ngram_buckets.weight
    captured = []
    embeddings.projection.register_forward_hook(lambda module, args, output: captured.append(args[0]))
    tokens = ["[CLS]", "word", "##ing", "東", "##京", "ß", "[unused3]", "word", "[SEP]"]
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)] * 2)
    assert tokenizer.unk_token_id not in ids
    with torch.no_grad():
        embeddings(ids)
    expected = eelbert.hash_embed(tokens, config) + torch.stack(
        [table[_reference_buckets(t, 97, hash_seed=5, special=config.special_tokens)].mean(0) for t in tokens])
    assert torch.allclose(captured[0], expected.expand(2, -1, -1), atol=1e-6, rtol=1e-5)


def test_bucket_ids_are_mmh3_of_each_ngram_with_seed_hash_seed_plus_one():
    tokens = ["embedding", "##ing", "[CLS]", "naïve", "東京", "😀", "a", "##", "[unused3]"]
    special = ["[CLS]", "[unused3]"]
    for seed, num_buckets in ((0, 2048), (41, 1000)):
        flat, offsets = ngram_bucket_ids(tokens, num_buckets=num_buckets, hash_seed=seed, special_tokens=special)
        bags = torch.tensor_split(flat, offsets[1:])
        assert [bag.tolist() for bag in bags] == [_reference_buckets(t, num_buckets, seed, special) for t in tokens]
    assert len(bags[2]) == 1  # a special token: one bucket, its whole string


def test_masked_lm_trains_the_buckets_and_a_typo_shares_most_of_its_buckets(small_config, tokenizer):
    _, model = _pair(small_config, ngram_buckets=256)
    model.train()
    batch = tokenizer(["the embedding of a word", "a typo: embeding"], return_tensors="pt", padding=True)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    model(**batch, labels=labels).loss.backward()
    grad = model.eelbert.embeddings.ngram_buckets.weight.grad
    assert grad is not None and grad.abs().sum(1).gt(0).sum() > 10

    flat, offsets = ngram_bucket_ids(["embedding", "embeding"], num_buckets=256)
    word, typo = flat[: offsets[1]].tolist(), flat[offsets[1] :].tolist()
    shared = sum(min(word.count(b), typo.count(b)) for b in set(word))
    assert shared / max(len(word), len(typo)) > 0.7  # 21 of the word's 27 n-grams are the typo's too


def test_set_vocab_keeps_the_learned_buckets_and_embeds_new_tokens_with_them(small_config, tokenizer):
    _, model = _pair(small_config, ngram_buckets=64)
    _randomize(model)
    buckets = model.eelbert.embeddings.ngram_buckets
    ids = torch.tensor([[tokenizer.convert_tokens_to_ids("embedding")]])
    buckets(ids)  # builds the bucket lists of the old vocabulary
    tokens = list(small_config.vocab) + ["embeddingz"]
    model.set_vocab(tokens, special_tokens=small_config.special_tokens)
    assert model.eelbert.embeddings.ngram_buckets is buckets
    got = buckets(torch.tensor([[len(tokens) - 1]]))[0, 0]
    assert torch.allclose(got, buckets.weight[_reference_buckets("embeddingz", 64)].mean(0), atol=1e-6)


def test_inputs_embeds_are_used_as_given_without_the_buckets(small_config, tokenizer):
    plain, model = _pair(small_config, ngram_buckets=64)
    _randomize(model)
    ids = tokenizer(["hello world"], return_tensors="pt")["input_ids"]
    embeds = eelbert.hash_embed(tokenizer.convert_ids_to_tokens(ids[0]), small_config).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(model(inputs_embeds=embeds).logits, plain(ids).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(ids).logits, plain(ids).logits, atol=1e-3)


@pytest.mark.parametrize("value", [-1, True, 1.5, "8"])
def test_config_refuses_a_bad_ngram_buckets_naming_the_field(value):
    with pytest.raises(ValueError, match="ngram_buckets must be a non-negative integer"):
        eelbert.EelbertConfig(ngram_buckets=value)


def test_onnx_export_refuses_buckets_and_writes_nothing(small_config, tokenizer, tmp_path, capsys):
    _, model = _pair(small_config, ngram_buckets=64)
    with pytest.raises(ValueError, match="ngram_buckets=64"):
        export_onnx(model, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    capsys.readouterr()
    assert main(["export", "onnx", str(tmp_path / "model"), str(tmp_path / "cli")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "ngram_buckets" in error
    assert not (tmp_path / "cli").exists()


def test_size_counts_the_bucket_table_and_the_benchmark_preset_is_uno_eelbert_plus_buckets(uno_config, tokenizer,
                                                                                          tmp_path, capsys):
    plain, model = _pair(uno_config, ngram_buckets=2048)
    (plain_parameters, plain_bytes), (parameters, file_bytes) = saved_size(plain), saved_size(model)
    assert parameters - plain_parameters == 2048 * uno_config.embedding_size
    assert file_bytes - plain_bytes >= 4 * 2048 * uno_config.embedding_size

    preset = json.loads((REPO / "benchmarks" / "uno-eelbert-buckets.json").read_text())
    assert preset == {**json.loads((REPO / "configs" / "uno-eelbert.json").read_text()), "ngram_buckets": 2048}
    config = eelbert.preset_config(REPO / "benchmarks" / "uno-eelbert-buckets.json", tokenizer=tokenizer)
    model = eelbert.EelbertForMaskedLM(config).half()
    model.save_pretrained(tmp_path / "fp16")
    tokenizer.save_pretrained(tmp_path / "fp16")
    assert sum(f.stat().st_size for f in (tmp_path / "fp16").rglob("*") if f.is_file()) < 2_500_000
    capsys.readouterr()
    assert main(["info", str(tmp_path / "fp16")]) == 0
    assert "2,048 learned n-gram buckets" in json.loads(capsys.readouterr().out)["hash"]


def test_convert_bert_starts_the_buckets_at_zero(tokenizer, tmp_path):
    torch.manual_seed(0)
    BertForMaskedLM(eelbert.baseline_config("bert-tiny", vocab_size=len(tokenizer))).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    model, _, _ = convert_bert(tmp_path / "bert", ngram_buckets=32)
    assert torch.equal(model.eelbert.embeddings.ngram_buckets.weight, torch.zeros(32, 128))


def test_torch_compile_gives_the_outputs_and_export_refuses_naming_ngram_buckets(small_config, tokenizer):
    _, model = _pair(small_config, ngram_buckets=64)
    _randomize(model)
    batch = dict(tokenizer(["hello world", "a b c d"], return_tensors="pt", padding=True))
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        assert torch.allclose(compiled(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match=r"ngram_buckets > 0\) cannot be traced or exported"):
            torch.export.export(model, args=(), kwargs=batch)
