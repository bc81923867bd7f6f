"""`eelbert demo`: what a pretrained masked-LM EELBERT is good for, offline in a few minutes on 2 CPU cores.

1. Fine-tuned with the Trainer on a task built from text every machine has (which package's documentation a
   paragraph comes from), against the same architecture trained from scratch with the same settings.
2. Its size against its preset's BERT (BERT-tiny for the shipped models) with the same vocabulary, in the same dtype.
3. Fill-mask in a fresh process without eelbert (the checkpoint's own remote code), on sentences where the
   context decides the word.
4. A typo: the sentence embedding with and without it, and the typo'd word's n-gram embedding against the
   original's, where BERT's word table would look up unrelated pieces.
"""

import contextlib
import io
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# The shipped masked LM whose pretraining shows in fine-tuning (the README's main job has the margins over seeds;
# UNO-EELBERT, still on the masked-LM unigram plateau, gains about nothing).
DEFAULT_MODEL = "eelbert-tiny-pretrained"
PER_PACKAGE = 400
# The same settings for the pretrained model and the one from scratch (the grid's largest learning rate: a tiny
# model from ~150 steps).
FINE_TUNING = dict(num_train_epochs=3, learning_rate=1e-3, per_device_train_batch_size=32, max_length=128)

# Run in a fresh process where `import eelbert` fails: the saved folder alone must load (remote code).
RELOAD_AND_FILL_MASK = """
import sys
sys.modules["eelbert"] = None
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
from transformers.utils import logging
logging.set_verbosity_error()
logging.disable_progress_bar()
folder, sentences = sys.argv[1], sys.argv[2:]
model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
fill_mask = pipeline("fill-mask", model=model, tokenizer=tokenizer)
print(f"reloaded {type(model).__name__} from {folder} in a fresh process (trust_remote_code=True, no eelbert package)")
for sentence in sentences:
    sentence = sentence.replace("[MASK]", tokenizer.mask_token)
    guesses = ", ".join(f"{p['token_str']} ({p['score']:.2f})" for p in fill_mask(sentence, top_k=3))
    print(f"  {sentence}  ->  {guesses}")
"""
# The first two: a pair in which only the context tells the words apart (run() checks them).
CONTEXT_SENTENCES = [
    "The sun rises in the [MASK] and sets in the west.",
    "The sun rises in the east and sets in the [MASK].",
    "He drank a cup of hot [MASK] with milk and sugar.",
    "The king and the [MASK] sat on their thrones.",
]
# A one-character typo (a swap) in a word the tokenizer knows; an unrelated word and sentence as the yardstick.
TYPO = dict(sentence="the function returns a list of tensors", word="returns", typo="retruns",
            other_word="harvest", other_sentence="we walked along the river in the cold rain")


def checkpoint_folder(name_or_path) -> Path:
    """The folder of a masked-LM EELBERT checkpoint: a folder, or the name of a model installed with eelbert."""
    from .artifacts import checkpoint_config
    from .presets import local_or_installed, pretrained_models

    folder = Path(local_or_installed(str(name_or_path)))
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no checkpoint {name_or_path}: not a folder, nor a model installed with eelbert (installed: "
            f"{', '.join(pretrained_models()) or 'none'}); pass --model FOLDER, a masked-LM EELBERT checkpoint such as "
            "`eelbert pretrain --output FOLDER` writes")
    architectures = checkpoint_config(folder).architectures or []
    if "EelbertForMaskedLM" not in architectures:
        raise ValueError(f"--model {name_or_path} is {', '.join(architectures) or 'no model'}: the demo needs a "
                         "masked-LM EELBERT checkpoint (EelbertForMaskedLM)")
    return folder


def documentation_task(per_package=PER_PACKAGE, dev_fraction=0.2, seed=0):
    """(train, dev) lists of finetuning.Example: paragraphs of package documentation (pretraining.
    documentation_paragraphs) labelled with their package, `per_package` of each drawn with `seed`, of which
    `dev_fraction` are held out. Balanced classes; no paragraph is in both lists."""
    from .training.finetuning import Example
    from .training.pretraining import documentation_paragraphs

    held_out = round(dev_fraction * per_package)
    if not 0 < held_out < per_package:
        raise ValueError(f"{per_package} paragraphs per package, {dev_fraction:g} of them held out, leave no dev or no "
                         "training paragraphs: take more (the default is 400)")
    by_package = defaultdict(list)
    for paragraph, package in documentation_paragraphs():
        by_package[package].append(paragraph)
    rng = random.Random(seed)
    train, dev = [], []
    for package, paragraphs in sorted(by_package.items()):
        if len(paragraphs) < per_package:
            raise ValueError(f"{package}'s documentation has {len(paragraphs)} paragraphs, fewer than {per_package}")
        drawn = [Example((text,), package, i) for i, text in enumerate(rng.sample(paragraphs, per_package))]
        dev += drawn[:held_out]
        train += drawn[held_out:]
    rng.shuffle(train)
    return train, dev


def fine_tune_against_scratch(folder, train, dev, output, seed=0, **settings) -> dict:
    """Dev accuracy (%) of the checkpoint fine-tuned on (train, dev) and of the same architecture from scratch,
    with the same settings (FINE_TUNING, overridden by `settings`)."""
    from transformers import AutoTokenizer

    from .training.finetuning import fine_tune_examples

    tokenizer = AutoTokenizer.from_pretrained(folder)
    labels = sorted({e.label for e in train})
    accuracy = {}
    for name, pretrained in (("pretrained", True), ("from scratch", False)):
        with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its log dicts; we print the summary
            results = fine_tune_examples(str(folder), tokenizer, train, dev, Path(output) / name, labels=labels,
                                         pretrained=pretrained, seed=seed, task="documentation",
                                         **{**FINE_TUNING, **settings})
        accuracy[name] = results["metrics"]["accuracy"]
    return accuracy


def size_against_bert(folder) -> dict:
    """Parameters and model.safetensors bytes of the checkpoint and of its preset's BERT baseline (BERT-tiny for
    the shipped models) with the same vocabulary, stored in the checkpoint's dtype (the shipped models keep float16 on
    disk), so that the bytes compare."""
    from transformers import AutoModelForMaskedLM

    from .artifacts import checkpoint_config
    from .size import DTYPE_LABELS, bert_counterpart, stored_dtype, weights_bytes

    config, dtype = checkpoint_config(folder), stored_dtype(folder)
    bert_name, _, bert_parameters, bert_bytes = bert_counterpart(config, "EelbertForMaskedLM", dtype)
    parameters = sum(p.numel() for p in AutoModelForMaskedLM.from_pretrained(folder).parameters())
    return {"parameters": parameters, "bytes": weights_bytes(folder), "dtype": DTYPE_LABELS[dtype],
            "bert": bert_name, "bert_parameters": bert_parameters, "bert_bytes": bert_bytes}


def fill_mask_without_eelbert(folder, sentences) -> str:
    """What RELOAD_AND_FILL_MASK prints for `sentences` (with [MASK]) in a fresh process where eelbert is missing."""
    reload = subprocess.run([sys.executable, "-c", RELOAD_AND_FILL_MASK, str(folder), *sentences],
                            capture_output=True, text=True)
    if reload.returncode:
        raise RuntimeError(f"reloading {folder} in a fresh process failed: {reload.stderr.strip()[-2000:]}")
    return reload.stdout


def typo_report(folder, sentence, word, typo, other_word, other_sentence) -> dict:
    """Cosines of the model's mean-pooled embeddings of `sentence` with `word` and with `typo` (and with
    `other_sentence`); of the hash embeddings (n-grams of the whole word) of `word` and `typo` (and `other_word`),
    and of `word`'s and the mean of `typo`'s WordPiece pieces' (what the tokenizer feeds the model); the pieces."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from .modeling.modeling_eelbert import hash_embed

    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModelForMaskedLM.from_pretrained(folder).base_model.eval()
    batch = tokenizer([sentence, sentence.replace(word, typo), other_sentence], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    sentences = (hidden * mask).sum(1) / mask.sum(1)
    words = hash_embed([word, typo, other_word], encoder.config)
    pieces = hash_embed(tokenizer.tokenize(typo), encoder.config).mean(0, keepdim=True)

    def cosine(vectors, i, j):
        return torch.nn.functional.cosine_similarity(vectors[i], vectors[j], dim=0).item()

    return {"sentence_typo": cosine(sentences, 0, 1), "sentence_other": cosine(sentences, 0, 2),
            "word_typo": cosine(words, 0, 1), "word_other": cosine(words, 0, 2),
            "pieces_typo": cosine(torch.cat([words, pieces]), 0, 3),
            "pieces": {w: tokenizer.tokenize(w) for w in (word, typo)}}


def run(model=DEFAULT_MODEL, per_package=PER_PACKAGE, seed=0, **fine_tuning) -> dict:
    """The demo, printed section by section; returns what it measured (accuracy, size, first_guesses, typo)."""
    started = time.time()
    folder = checkpoint_folder(model)

    def elapsed():
        return f"{time.time() - started:.0f} s"

    train, dev = documentation_task(per_package, seed=seed)
    packages = sorted({e.label for e in train})
    print(f"1. Which package's documentation is a paragraph from? {len(packages)} classes ({', '.join(packages)}), "
          f"{len(train):,} training and {len(dev):,} dev paragraphs from the docstrings installed here.", flush=True)
    settings = {**FINE_TUNING, **fine_tuning}
    print(f"   Fine-tuning {folder} and the same architecture from scratch with the Trainer ({settings['num_train_epochs']:g} "
          f"epochs, learning rate {settings['learning_rate']:g}, batch {settings['per_device_train_batch_size']}) ...",
          flush=True)
    with tempfile.TemporaryDirectory() as output:
        accuracy = fine_tune_against_scratch(folder, train, dev, output, seed, **fine_tuning)
    print(f"   dev accuracy: pretrained {accuracy['pretrained']:.1f}%, from scratch {accuracy['from scratch']:.1f}% "
          f"(chance {100 / len(packages):.0f}%); {elapsed()}", flush=True)

    size = size_against_bert(folder)
    print(f"2. Size: model.safetensors {size['bytes']:,} bytes ({size['parameters']:,} parameters in {size['dtype']}); "
          f"{size['bert']}'s masked LM with the same vocabulary in {size['dtype']}: {size['bert_bytes']:,} bytes "
          f"({size['bert_parameters']:,} parameters), {size['bert_bytes'] / size['bytes']:.1f}x larger.", flush=True)

    print("3. Fill-mask, where the context decides the word:", flush=True)
    filled = fill_mask_without_eelbert(folder, CONTEXT_SENTENCES)
    print("   " + filled.rstrip().replace("\n", "\n   "), flush=True)
    first_guesses = [line.split("  ->  ")[1].split(" (")[0] for line in filled.splitlines() if "  ->  " in line]
    if first_guesses[:1] * 2 == first_guesses[:2]:  # the east/west pair: say so rather than leave the reader to look
        print(f"   The same first guess where the context asks for east and for west ({first_guesses[0]}): this model "
              "predicts frequent words and has not yet learned to use the context (see the README's Quality section).",
              flush=True)

    typo = typo_report(folder, **TYPO)
    pieces = typo["pieces"]
    print(f"4. A typo ({TYPO['word']} -> {TYPO['typo']}): the mean-pooled embedding of \"{TYPO['sentence']}\" has cosine "
          f"{typo['sentence_typo']:.3f} with the typo'd sentence ({typo['sentence_other']:.3f} with \"{TYPO['other_sentence']}\").\n"
          f"   The hash embedding of the word {TYPO['typo']} (from its character n-grams) has cosine {typo['word_typo']:.3f} "
          f"with that of {TYPO['word']} ({typo['word_other']:.3f} with {TYPO['other_word']}).\n"
          f"   WordPiece splits {TYPO['typo']} into {pieces[TYPO['typo']]} ({TYPO['word']}: {pieces[TYPO['word']]}). A "
          "BERT looks these pieces up in its word table, rows unrelated to the original word's; EELBERT computes each "
          f"piece's vector from its n-grams, and their mean has cosine {typo['pieces_typo']:.3f} with {TYPO['word']}'s.",
          flush=True)
    print(f"done in {elapsed()}. Pretrain on your own text: eelbert pretrain --corpus FILES_OR_FOLDERS --output FOLDER")
    return {"accuracy": accuracy, "size": size, "first_guesses": first_guesses, "typo": typo}
