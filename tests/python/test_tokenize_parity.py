#!/usr/bin/env python3
"""rho_tokenize gives exactly Python sentencepiece's ids on GSM8K (question + answer joined by "\\n"), and on Python
source and multilingual, emoji and whitespace text, with the Llama-2 BPE model, through both of rho_tokenize's
encoders. A unigram model as rho_tokenize --train-tokenizer makes it (nmt_nfkc rules, byte fallback) gives the same
ids through librho's encoder as through the SentencePiece library on those texts; the PyPI wheel breaks some
exact ties between equal-scoring paths otherwise (its build, not its source: docs/data.md), and the test prints
how many documents that touches.

Tokenises $RHO_SHARED_DATA/gsm8k/train.jsonl (default <source>/../shared/data) with the Llama-2 32k tokenizer into
several shards, splits the shards' concatenation at EOS and compares each document with [BOS] + encode(text) from
the sentencepiece package, line by line. Also checks the manifest's counts and hashes.
Exits 77 (skipped) when the shared data or the sentencepiece package is absent.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import numpy as np
    import sentencepiece as spm
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED: {e}")
    sys.exit(77)

sys.path.insert(0, str(Path(__file__).parent))
from tokenize_helpers import MULTILINGUAL, python_sources, run  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-tokenize", required=True)
    args = ap.parse_args()
    shared = Path(os.environ.get("RHO_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    data, model = shared / "gsm8k" / "train.jsonl", shared / "tokenizers" / "llama2-32k.model"
    if not data.exists() or not model.exists():
        print(f"SKIPPED: {data} or {model} is absent (set RHO_SHARED_DATA)")
        return 77
    sp = spm.SentencePieceProcessor(model_file=str(model))
    with tempfile.TemporaryDirectory(prefix="rho_tok_parity_") as tmp:
        out = Path(tmp) / "gsm8k"
        run(args.rho_tokenize, data, "--field", "question", "--field", "answer", "--tokenizer", model,
            "--shard-tokens", 250000, "--out", out, "--quiet")
        m = json.loads((out / "manifest.json").read_text())
        assert m["dtype"] == "uint16" and m["vocab_size"] == sp.get_piece_size()
        assert (m["bos_id"], m["eos_id"]) == (sp.bos_id(), sp.eos_id())
        assert m["tokenizer_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        parts = []
        for s in m["shards"]:
            raw = (out / s["file"]).read_bytes()
            assert hashlib.sha256(raw).hexdigest() == s["sha256"], s["file"]
            parts.append(np.frombuffer(raw, dtype="<u2"))
            assert len(parts[-1]) == s["num_tokens"]
            assert int((parts[-1] == sp.eos_id()).sum()) == s["num_documents"], s["file"]
        assert len(m["shards"]) > 1, "the test should cross shard boundaries"
        tokens = np.concatenate(parts).astype(np.int64)
        ends = np.flatnonzero(tokens == sp.eos_id())
        assert ends[-1] == len(tokens) - 1
        docs = np.split(tokens, ends + 1)[:-1]
        lines = data.read_text(encoding="utf-8").splitlines()
        assert len(docs) == len(lines) == m["num_documents"], (len(docs), len(lines))
        mismatches = 0
        for i, (doc, line) in enumerate(zip(docs, lines)):
            rec = json.loads(line)
            expected = [sp.bos_id()] + sp.encode(rec["question"] + "\n" + rec["answer"]) + [sp.eos_id()]
            if doc.tolist() != expected:
                mismatches += 1
                if mismatches <= 3:
                    print(f"line {i + 1}: rho {doc.tolist()[:20]}... python {expected[:20]}...")
        assert mismatches == 0, f"{mismatches} of {len(lines)} documents differ from Python sentencepiece"
        print(f"{len(lines)} documents, {len(tokens)} tokens in {len(m['shards'])} shards: identical to "
              f"sentencepiece {spm.__version__}")
        other_texts(args.rho_tokenize, model, sp, Path(tmp))
        unigram(args.rho_tokenize, data, Path(tmp))
    return 0


def other_texts(rho_tokenize, model, sp, tmp):
    """Code and many scripts, through librho's encoder and through the library's (--sp-encoder library)."""
    compare(rho_tokenize, model, sp, python_sources(Path(__file__).resolve().parents[2]) + MULTILINGUAL * 3,
            "Python source, multilingual, emoji", tmp)


def unigram(rho_tokenize, data, tmp):
    """A unigram model trained by rho_tokenize --train-tokenizer on GSM8K and the other texts, then all of them
    through librho's encoder and the library's."""
    gsm8k = [r["question"] + "\n" + r["answer"] for r in map(json.loads, data.read_text(encoding="utf-8").splitlines())]
    texts = gsm8k + python_sources(Path(__file__).resolve().parents[2]) + MULTILINGUAL * 3
    corpus = tmp / "unigram.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    run(rho_tokenize, corpus, "--train-tokenizer", "--vocab-size", 8000, "--out", tmp / "trained", "--quiet")
    model = tmp / "trained" / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    docs = {e: tokenize_docs(rho_tokenize, corpus, model, e, sp.eos_id(), tmp) for e in ("auto", "library")}
    assert len(docs["auto"]) == len(texts)
    mismatches = sum(a != b for a, b in zip(docs["auto"], docs["library"]))
    wheel = sum(d != [sp.bos_id()] + sp.encode(t) + [sp.eos_id()] for d, t in zip(docs["library"], texts))
    print(f"unigram (nmt_nfkc, byte fallback): {len(texts)} documents (GSM8K, Python source, multilingual), "
          f"{sum(map(len, docs['auto']))} tokens: {mismatches} mismatches between --sp-encoder auto and library; "
          f"the sentencepiece {spm.__version__} wheel differs from the library in {wheel} documents (tie breaks)")
    assert mismatches == 0


def tokenize_docs(rho_tokenize, corpus, model, encoder, eos, tmp):
    """rho_tokenize's ids of each document of `corpus`, [BOS] ... [EOS], through --sp-encoder `encoder`."""
    out = tmp / f"docs_{encoder}"
    shutil.rmtree(out, ignore_errors=True)
    run(rho_tokenize, corpus, "--tokenizer", model, "--sp-encoder", encoder, "--out", out, "--quiet")
    m = json.loads((out / "manifest.json").read_text())
    tokens = np.concatenate([np.fromfile(out / s["file"], dtype="<u2") for s in m["shards"]]).astype(np.int64)
    return [d.tolist() for d in np.split(tokens, np.flatnonzero(tokens == eos) + 1)[:-1]]


def compare(rho_tokenize, model, sp, texts, what, tmp):
    corpus = tmp / "compare.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    want = [[sp.bos_id()] + sp.encode(t) + [sp.eos_id()] for t in texts]
    for encoder in ("auto", "library"):
        docs = tokenize_docs(rho_tokenize, corpus, model, encoder, sp.eos_id(), tmp)
        assert len(docs) == len(texts), (len(docs), len(texts))
        mismatches = sum(d != w for d, w in zip(docs, want))
        print(f"--sp-encoder {encoder}: {len(texts)} documents ({what}), {sum(map(len, docs))} tokens: "
              f"{mismatches} mismatches")
        assert mismatches == 0


if __name__ == "__main__":
    sys.exit(main())
