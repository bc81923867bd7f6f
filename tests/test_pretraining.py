"""eelbert.training.pretraining and `eelbert pretrain`: sparse masked-LM scoring, the built-in corpus, tokenizer training,
and the main job end to end."""

import json

import pytest
import torch
from helpers import run_python
from transformers import BertForMaskedLM

import eelbert
from eelbert.training import pretraining
from eelbert.cli import main as eelbert_main


def _masked_batch(vocab_size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (3, 16), generator=generator)
    labels = torch.full_like(input_ids, -100)
    masked = torch.rand(3, 16, generator=generator) < 0.3
    labels[masked] = input_ids[masked]
    return input_ids, labels, masked


def test_sparse_prediction_gives_the_dense_loss_from_the_masked_positions_only(small_config):
    dense = eelbert.EelbertForMaskedLM(small_config).eval()
    sparse = eelbert.EelbertForMaskedLM(eelbert.EelbertConfig(**{**small_config.to_dict(), "sparse_prediction": True})).eval()
    sparse.load_state_dict(dense.state_dict())
    input_ids, labels, masked = _masked_batch(small_config.vocab_size)
    full, scored = dense(input_ids, labels=labels), sparse(input_ids, labels=labels)
    assert scored.logits.shape == (int(masked.sum()), small_config.vocab_size)
    torch.testing.assert_close(scored.logits, full.logits[masked])
    torch.testing.assert_close(scored.loss, full.loss)
    assert sparse(input_ids).logits.shape == full.logits.shape  # without labels: every position


def test_bert_baseline_with_sparse_prediction_matches_bert_for_masked_lm():
    config = eelbert.baseline_config("bert-tiny", vocab_size=500)
    bert = BertForMaskedLM(config).eval()
    sparse = pretraining.BertForSparseMaskedLM(config).eval()
    sparse.load_state_dict(bert.state_dict())
    input_ids, labels, masked = _masked_batch(500)
    full, scored = bert(input_ids, labels=labels), sparse(input_ids, labels=labels)
    torch.testing.assert_close(scored.logits, full.logits[masked])
    torch.testing.assert_close(scored.loss, full.loss)


def _loss_and_gradients(model, input_ids, labels):
    model.zero_grad()
    output = model(input_ids, labels=labels)
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mlm_decoder", ["hash", "learned"])
def test_training_with_sparse_prediction_gives_the_dense_loss_and_gradients_without_logits(small_config, mlm_decoder):
    config = eelbert.EelbertConfig(**{**small_config.to_dict(), "mlm_decoder": mlm_decoder})
    dense = eelbert.EelbertForMaskedLM(config).train()  # dropout is 0 in small_config: train mode is deterministic
    sparse = eelbert.EelbertForMaskedLM(eelbert.EelbertConfig(**{**config.to_dict(), "sparse_prediction": True})).train()
    sparse.load_state_dict(dense.state_dict())
    input_ids, labels, _ = _masked_batch(config.vocab_size)
    (full, full_grads), (chunked, chunked_grads) = (_loss_and_gradients(m, input_ids, labels) for m in (dense, sparse))
    assert chunked.logits is None  # the [n, vocab_size] logits are never made in training
    torch.testing.assert_close(chunked.loss, full.loss)
    assert full_grads.keys() == chunked_grads.keys() and len(full_grads) > 4
    for name, grad in full_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bert_baseline_trains_with_the_same_chunked_loss():
    config = eelbert.baseline_config("bert-tiny", vocab_size=500)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    bert, sparse = BertForMaskedLM(config).train(), pretraining.BertForSparseMaskedLM(config).train()
    sparse.load_state_dict(bert.state_dict())
    input_ids, labels, _ = _masked_batch(500)
    (full, full_grads), (chunked, chunked_grads) = (_loss_and_gradients(m, input_ids, labels) for m in (bert, sparse))
    torch.testing.assert_close(chunked.loss, full.loss)
    for name, grad in full_grads.items():  # the tied word embeddings get the decoder's gradient too
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("logit_scale", [1, 40])  # 40: logits past 88, where exp overflows in fp32 without the max
@pytest.mark.parametrize("rows", [0, 1, 5, 7])
def test_chunked_cross_entropy_matches_torch_across_chunk_boundaries(rows, logit_scale):
    from eelbert.modeling.modeling_eelbert import ChunkedLinearCrossEntropy

    generator = torch.Generator().manual_seed(rows)
    hidden = torch.randn(rows, 8, generator=generator).mul_(logit_scale).requires_grad_()
    weight = torch.randn(50, 8, generator=generator, requires_grad=True)
    bias = torch.randn(50, generator=generator, requires_grad=True)
    labels = torch.randint(0, 50, (rows,), generator=generator)
    labels[1::3] = labels[0] if rows else labels[1::3]  # a target repeated within a chunk and across chunks
    loss = ChunkedLinearCrossEntropy.apply(hidden, weight, bias, labels, 3, None)  # chunks of 3 rows: 5 and 7 end mid-chunk
    (2 * loss).backward()
    chunked = (loss.detach(), hidden.grad.clone(), weight.grad.clone(), bias.grad.clone())
    hidden.grad = weight.grad = bias.grad = None
    if rows == 0:  # nothing labelled: zero loss and zero gradients, not 0 / 0
        assert chunked[0] == 0 and not chunked[2].any() and not chunked[3].any()
        return
    reference = torch.nn.functional.cross_entropy(hidden @ weight.T + bias, labels)
    (2 * reference).backward()
    for got, expected in zip(chunked, (reference.detach(), hidden.grad, weight.grad, bias.grad)):
        # fp32 gradients of near-certain predictions lose digits whichever way they are summed: scale the tolerance
        torch.testing.assert_close(got, expected, rtol=1e-5 * logit_scale, atol=1e-5 * logit_scale)


def test_chunked_cross_entropy_runs_in_fp32_under_bf16_autocast():
    from eelbert.modeling.modeling_eelbert import ChunkedLinearCrossEntropy

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(9, 8, generator=generator)
    transform = torch.nn.Linear(8, 8)
    weight = torch.randn(50, 8, generator=generator, requires_grad=True)
    bias = torch.randn(50, generator=generator, requires_grad=True)
    labels = torch.randint(0, 50, (9,), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = transform(inputs)  # bf16, as a head's transform gives under autocast
        loss = ChunkedLinearCrossEntropy.apply(hidden, weight, bias, labels, 4, None)
    loss.backward()
    assert hidden.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert weight.grad.dtype == torch.float32 and transform.weight.grad.dtype == torch.float32
    reference = torch.nn.functional.cross_entropy(hidden.detach().float() @ weight.detach().T + bias.detach(), labels)
    torch.testing.assert_close(loss.detach(), reference)


def test_masks_depend_on_the_seed_and_the_block_not_on_the_batch(tokenizer):
    a = {"input_ids": [tokenizer.cls_token_id, *range(2000, 2040), tokenizer.sep_token_id], "block": 7}
    b = {"input_ids": [tokenizer.cls_token_id, *range(3000, 3040), tokenizer.sep_token_id], "block": 9}
    collator = pretraining.BlockMasking(tokenizer, seed=3, mlm_probability=0.5)
    together, alone = collator([a, b]), collator([b])
    assert "block" not in together and together["input_ids"].shape == (2, 42)
    assert torch.equal(together["labels"][1], alone["labels"][0]) and torch.equal(together["input_ids"][1], alone["input_ids"][0])
    assert torch.equal(collator([b])["labels"], alone["labels"])  # again: the same masks
    assert not torch.equal(pretraining.BlockMasking(tokenizer, seed=4, mlm_probability=0.5)([b])["labels"], alone["labels"])
    assert not torch.equal(together["labels"][0] != -100, together["labels"][1] != -100)


@pytest.mark.parametrize("whole_word_mask", [False, True])
def test_block_masking_masks_as_the_stock_collator_does_with_the_blocks_generator(tokenizer, whole_word_mask):
    from transformers import DataCollatorForLanguageModeling

    ids = [tokenizer.cls_token_id, *range(2000, 2060), tokenizer.mask_token_id, *range(5000, 5060), tokenizer.sep_token_id]
    example = {"input_ids": ids, "block": 11}
    if whole_word_mask:
        example["offset_mapping"] = pretraining.word_offsets(torch.tensor(ids).numpy(), torch.tensor(
            [t.startswith("##") for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]).numpy())
    ours = pretraining.BlockMasking(tokenizer, seed=5, mlm_probability=0.4, whole_word_mask=whole_word_mask)([example])
    stock = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.4, whole_word_mask=whole_word_mask)
    stock.generator = torch.Generator().manual_seed((5 * 0x9E3779B1 + 11) % 2**63)
    expected = stock.torch_call([{k: v for k, v in example.items() if k != "block"}])
    assert torch.equal(ours["input_ids"], expected["input_ids"]) and torch.equal(ours["labels"], expected["labels"])
    assert (ours["labels"] != -100).any() and not (ours["labels"][0, [0, 61, -1]] != -100).any()  # specials never


@pytest.mark.parametrize("train", [True, False])
def test_num_items_in_batch_divides_the_summed_loss(small_config, train):
    model = eelbert.EelbertForMaskedLM(eelbert.EelbertConfig(**{**small_config.to_dict(), "sparse_prediction": True}))
    model.train(train)
    input_ids, labels, masked = _masked_batch(small_config.vocab_size)
    mean = model(input_ids, labels=labels).loss
    over_all_processes = model(input_ids, labels=labels, num_items_in_batch=torch.tensor(4 * int(masked.sum()))).loss
    torch.testing.assert_close(over_all_processes, mean / 4)
    assert type(model).accepts_loss_kwargs and pretraining.BertForSparseMaskedLM.accepts_loss_kwargs


def test_sparse_prediction_must_be_a_boolean(tokenizer):
    with pytest.raises(ValueError, match="sparse_prediction"):
        eelbert.preset_config("uno-eelbert", tokenizer=tokenizer, sparse_prediction="yes")


def test_masked_predictions_put_the_argmax_back_at_the_masked_positions():
    labels = torch.tensor([[-100, 7, -100], [3, -100, -100]])
    logits = torch.zeros(2, 10)
    logits[0, 7], logits[1, 4] = 1, 1
    predictions = pretraining.masked_predictions(logits, labels)
    assert predictions.tolist() == [[-100, 7, -100], [4, -100, -100]]
    assert pretraining.masked_accuracy((predictions.numpy(), labels.numpy())) == {"masked_accuracy": 0.5}


def test_package_documentation_is_english_prose_from_installed_packages():
    paragraphs = pretraining.package_documentation(max_bytes=300_000)
    assert 250_000 <= sum(len(p) + 1 for p in paragraphs) < 320_000
    assert len(set(paragraphs)) == len(paragraphs)
    for paragraph in paragraphs:
        assert len(paragraph.split()) >= 8 and "\n" not in paragraph and ">>>" not in paragraph
    text = " ".join(paragraphs).lower().split()
    assert text.count("the") > 0.03 * len(text)  # English: "the" is ~5% of words


def test_trained_wordpiece_tokenizer_splits_unseen_words_into_pieces():
    paragraphs = pretraining.package_documentation(max_bytes=300_000)
    tokenizer = pretraining.train_wordpiece(paragraphs, vocab_size=2000)
    assert len(tokenizer) == 2000
    assert tokenizer.mask_token == "[MASK]" and tokenizer.convert_tokens_to_ids("[MASK]") != tokenizer.unk_token_id
    pieces = tokenizer.tokenize("Tensorizationally")
    assert len(pieces) > 1 and pieces[0] == pieces[0].lower() and all(p.startswith("##") for p in pieces[1:])
    assert tokenizer.unk_token not in pieces


@pytest.mark.slow
def test_eelbert_pretrain_trains_saves_reloads_and_fills_masks(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(pretraining.package_documentation(max_bytes=200_000)))
    output = tmp_path / "model"
    assert eelbert_main(["pretrain", "--corpus", str(corpus), "--output", str(output), "--steps", "4",
                         "--batch-size", "4", "--vocab-size", "1000", "--examples", "a [MASK] of tensors"]) == 0
    out = capsys.readouterr().out
    assert "tokenizer: WordPiece, 1,000 tokens" in out
    assert "in a fresh process (trust_remote_code=True, no eelbert package)" in out
    assert "a [MASK] of tensors  ->  " in out and "| uno-eelbert | masked-lm |" in out
    config = json.loads((output / "config.json").read_text())
    assert config["vocab_size"] == 1000 and config["sparse_prediction"] is False
    # The folder alone loads and predicts for every position.
    printed = run_python(f"""
import sys
sys.modules['eelbert'] = None
from transformers import AutoModelForMaskedLM, AutoTokenizer
model = AutoModelForMaskedLM.from_pretrained({str(output)!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({str(output)!r}, trust_remote_code=True)
batch = tokenizer(["returns a tensor"], return_tensors="pt")
print(tuple(model(**batch, labels=batch["input_ids"]).logits.shape))
""")
    assert printed.strip() == f"(1, {batch_length(output)}, 1000)"


def batch_length(folder):
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder, trust_remote_code=True)("returns a tensor")["input_ids"])


def test_pretrain_takes_a_model_object_and_training_argument_overrides(small_config, tokenizer, tmp_path):
    from eelbert.training import token_store

    lines = [f"tiny model number {i} runs on a phone" for i in range(300)]
    store = token_store.prepare_token_store(lines, tokenizer, {"test": 1}, folder=tmp_path / "store")
    model = eelbert.EelbertForMaskedLM(small_config)
    metrics = pretraining.pretrain(model, tokenizer, store, tmp_path / "out", block_size=16, progress=False,
                                   max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                   eval_steps=None, save_steps=None)
    assert metrics["perplexity"] > 1 and metrics["processes"] == 1
    args = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert args.gradient_accumulation_steps == 2 and args.ddp_broadcast_buffers is False
    assert model.get_input_embeddings().built.all()  # the whole hash table was built before training
    with pytest.raises(ValueError, match="made with another tokenizer"):
        pretraining.pretrain(model, pretraining.train_wordpiece(lines, 200), store, tmp_path / "other", max_steps=1)


def test_eelbert_pretrain_names_a_missing_corpus(tmp_path, capsys):
    assert eelbert_main(["pretrain", "--corpus", str(tmp_path / "missing"), "--output", str(tmp_path / "m")]) == 1
    assert "missing: no such file or folder" in capsys.readouterr().err
