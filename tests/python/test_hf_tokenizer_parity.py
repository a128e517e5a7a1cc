#!/usr/bin/env python3
"""rho_tokenize with a Hugging Face tokenizer.json (byte-level BPE) against the Python `tokenizers` library.

Four tokenizers are trained here with `tokenizers` in the styles of the families people use (GPT-2: ByteLevel
with its regex; SmolLM2: Digits then ByteLevel; Llama 3: a Split regex, ByteLevel without regex, ignore_merges,
a BOS template; Qwen2: NFC, a Split regex, ByteLevel), with special tokens. Each tokenises the same documents with
rho_tokenize and in Python (add_special_tokens=False, then BOS where the template has one, and EOS after every
document); the token streams must be equal, 0 mismatches. Documents: all of GSM8K's training set when
$RHO_SHARED_DATA (default ../shared/data) has it, Python source (this repository's and the standard library's),
and multilingual, emoji, whitespace and digit text. Prints the counts. Exits 77 (skipped) without `tokenizers`.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED: {e}")
    sys.exit(77)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from tokenize_helpers import MULTILINGUAL, python_sources  # noqa: E402
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
         r"\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>"]



def documents(shared):
    docs = []
    gsm = shared / "gsm8k" / "train.jsonl"
    if gsm.exists():
        for line in gsm.read_text().splitlines():
            r = json.loads(line)
            docs.append(r["question"] + "\n" + r["answer"])
    else:
        print(f"(GSM8K not found under {shared}: its part is left out)")
    n_gsm = len(docs)
    docs += python_sources(ROOT)
    n_py = len(docs) - n_gsm
    docs += MULTILINGUAL * 3
    return docs, n_gsm, n_py


def train(style, texts, out):
    tok = Tokenizer(models.BPE(ignore_merges=(style == "llama3")))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=style in ("gpt2", "smollm2"))
    if style == "gpt2":
        tok.pre_tokenizer = byte_level
    elif style == "smollm2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        pattern = LLAMA3 if style == "llama3" else QWEN2
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                                     byte_level])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    if style == "llama3":
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
                ("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    eos = "<|end_of_text|>" if style == "llama3" else "<|endoftext|>"
    if style == "llama3":  # Llama 3's own end-of-text token, added after training
        tok.add_special_tokens([eos])
        tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos, "bos_token": None}))
    return tok, tok.token_to_id(eos), tok.token_to_id("<|begin_of_text|>") if style == "llama3" else None


def read_stream(d):
    m = json.loads((d / "manifest.json").read_text())
    fmt = "<H" if m["dtype"] == "uint16" else "<I"
    out = []
    for s in m["shards"]:
        data = (d / s["file"]).read_bytes()
        out += [v[0] for v in struct.iter_unpack(fmt, data)]
    return m, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-tokenize", required=True)
    a = ap.parse_args()
    shared = Path(os.environ.get("RHO_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()
    docs, n_gsm, n_py = documents(shared)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        corpus = t / "docs.jsonl"
        with open(corpus, "w") as f:
            for d in docs:
                f.write(json.dumps({"text": d}) + "\n")
        train_texts = docs[:2000] + MULTILINGUAL
        for style in ("gpt2", "smollm2", "llama3", "qwen2"):
            tok, eos, bos = train(style, train_texts, t / style)
            out = t / f"tok-{style}"
            r = subprocess.run([a.rho_tokenize, corpus, "--out", out, "--tokenizer", t / style / "tokenizer.json",
                                "--quiet"], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL {style}: rho_tokenize exited {r.returncode}\n{r.stderr[-3000:]}")
                ok = False
                continue
            m, got = read_stream(out)
            want = []
            for d in docs:  # an empty text is a document too: BOS (if any) and EOS
                want += ([bos] if bos is not None else []) + tok.encode(d, add_special_tokens=False).ids + [eos]
            mismatches = sum(x != y for x, y in zip(got, want)) + abs(len(got) - len(want))
            first = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), None)
            same_ids = m["eos_id"] == eos and m["bos_id"] == (bos if bos is not None else -1)
            print(f"{style:8s} {len(docs)} documents ({n_gsm} GSM8K, {n_py} Python files, the rest "
                  f"multilingual/emoji/whitespace), {len(want)} tokens: {mismatches} mismatches; manifest bos "
                  f"{m['bos_id']} eos {m['eos_id']} vocab {m['vocab_size']}")
            if first is not None:
                print(f"   first difference at token {first}: librho {got[first:first + 8]} tokenizers "
                      f"{want[first:first + 8]}")
            ok &= mismatches == 0 and same_ids and m["vocab_size"] == tok.get_vocab_size()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
