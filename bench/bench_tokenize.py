#!/usr/bin/env python3
"""Tokenising throughput: rho_tokenize vs the Python libraries, same file, same cores, for both tokenizer kinds.

SentencePiece: rho_tokenize (librho's BPE encoder, and with --sp-encoder library the SentencePiece library it links)
vs Python sentencepiece (multiprocessing). Hugging Face tokenizer.json: a byte-level BPE
in Llama 3's style (Split regex, ByteLevel, ignore_merges), trained here with `tokenizers` on the corpus (16k
vocabulary), rho_tokenize vs `tokenizers` encode_batch (Rust threads: TOKENIZERS_PARALLELISM, one worker per core)
on the same texts, ids checked equal. One JSON object per kind.

Corpus: GSM8K train (question + answer joined by "\\n") repeated to about --megabytes MB with the Llama-2 32k
tokenizer when $RHO_SHARED_DATA (default <source>/../shared/data) has them; otherwise a generated corpus and a
tokenizer trained on it. rho_tokenize runs with --threads W; Python runs a multiprocessing.Pool of W workers, each
parsing JSON and encoding batches of lines with one sentencepiece thread, the parent gathering the ids in order and
writing them as uint16 (what rho_tokenize's shards hold). Both also run with one thread / worker, to separate the
per-core speed of the SentencePiece library each uses from the scaling of the pipeline. Best of --repeats
wall-clock runs each. Prints JSON.

  .venv/bin/python bench/bench_tokenize.py --rho-tokenize build/apps/rho_tokenize
  .venv/bin/python bench/bench_tokenize.py --train-unigram 32000 --no-hf   # a unigram model (nmt_nfkc, byte
      fallback: what rho_tokenize --train-tokenizer makes) trained on the corpus, instead of Llama 2's BPE
"""
import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from tokenize_helpers import make_corpus  # noqa: E402

_sp = None
_fields = None


def _init(model, fields):
    global _sp, _fields
    _sp = spm.SentencePieceProcessor(model_file=model)
    _fields = fields


def _encode(lines):
    texts = ["\n".join(json.loads(line)[f] for f in _fields) for line in lines]
    ids = _sp.encode(texts, num_threads=1)
    bos, eos = _sp.bos_id(), _sp.eos_id()
    return np.concatenate([np.array(([bos] if bos >= 0 else []) + x + [eos], dtype=np.uint16) for x in ids])


def python_tokenize(path, model, fields, workers, out):
    with open(path, encoding="utf-8") as f, mp.Pool(workers, _init, (str(model), fields)) as pool:
        batches = iter(lambda: [line for line in (f.readline() for _ in range(2000)) if line.strip()], [])
        with open(out, "wb") as o:
            n = 0
            for arr in pool.imap(_encode, batches, chunksize=1):
                o.write(arr.tobytes())
                n += len(arr)
    return n


def best_of(repeats, fn):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-tokenize", default=str(ROOT / "build" / "apps" / "rho_tokenize"))
    ap.add_argument("--megabytes", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-unigram", type=int, metavar="VOCAB",
                    help="measure a unigram model of VOCAB pieces that rho_tokenize --train-tokenizer trains on the corpus")
    ap.add_argument("--no-hf", action="store_true", help="leave out the tokenizer.json measurement")
    args = ap.parse_args()
    shared = Path(os.environ.get("RHO_SHARED_DATA", ROOT / ".." / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="rho_bench_tok_") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        gsm8k, llama = shared / "gsm8k" / "train.jsonl", shared / "tokenizers" / "llama2-32k.model"
        if gsm8k.exists() and llama.exists():
            source, model, fields = "gsm8k train repeated", llama, ["question", "answer"]
            text = gsm8k.read_bytes()
            reps = max(1, round(args.megabytes * 1e6 / len(text)))
            corpus.write_bytes(text * reps)
        else:
            source, fields = "generated", ["text"]
            gen = tmp / "gen"
            make_corpus(gen, megabytes=args.megabytes)
            corpus.write_bytes((gen / "part0.jsonl").read_bytes() * 3)
            subprocess.run([args.rho_tokenize, corpus, "--train-tokenizer", "--vocab-size", "8000",
                            "--train-sentences", "200000", "--out", tmp / "tok", "--quiet"], check=True,
                           capture_output=True)
            model = tmp / "tok" / "tokenizer.model"
        size = corpus.stat().st_size
        field_args = [a for f in fields for a in ("--field", f)]
        if args.train_unigram:
            subprocess.run([args.rho_tokenize, corpus, *field_args, "--train-tokenizer", "--vocab-size",
                            str(args.train_unigram), "--out", tmp / "unigram", "--quiet"], check=True,
                           capture_output=True)
            model = tmp / "unigram" / "tokenizer.model"
            source += f", unigram {args.train_unigram} trained on it"

        def rho(threads, encoder="auto"):
            out = tmp / f"rho_out_{encoder}"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run([args.rho_tokenize, corpus, *field_args, "--tokenizer", model, "--out", out,
                            "--threads", str(threads), "--sp-encoder", encoder, "--quiet"], check=True,
                           capture_output=True)
            return json.loads((out / "manifest.json").read_text())["num_tokens"]

        def python(workers):
            return python_tokenize(corpus, model, fields, workers, tmp / "py.bin")

        lib1_s, _ = best_of(args.repeats, lambda: rho(1, "library"))
        lib_s, _ = best_of(args.repeats, lambda: rho(args.workers, "library"))
        rho1_s, _ = best_of(args.repeats, lambda: rho(1))
        py1_s, _ = best_of(args.repeats, lambda: python(1))
        rho_s, rho_tokens = best_of(args.repeats, lambda: rho(args.workers))
        py_s, py_tokens = best_of(args.repeats, lambda: python(args.workers))
        def ids(out):
            manifest = json.loads((out / "manifest.json").read_text())
            return np.concatenate([np.fromfile(out / s["file"], dtype="<u2") for s in manifest["shards"]])

        rho_ids = ids(tmp / "rho_out_auto")
        identical = bool(np.array_equal(rho_ids, np.fromfile(tmp / "py.bin", dtype=np.uint16)))
        identical_library = bool(np.array_equal(rho_ids, ids(tmp / "rho_out_library")))
        hf = None if args.no_hf else hf_figures(args, corpus, fields, size)

    def figures(seconds, tokens):
        return {"seconds": round(seconds, 3), "mb_per_s": round(size / 1e6 / seconds, 2),
                "tokens_per_s": round(tokens / seconds)}

    print(json.dumps({
        "kind": "sentencepiece", "corpus": source, "megabytes": round(size / 1e6, 1), "tokenizer": Path(model).name,
        "cpu_cores": os.cpu_count(), "workers": args.workers, "tokens": rho_tokens,
        "rho_tokenize": figures(rho_s, rho_tokens),
        "rho_tokenize_library_encoder": figures(lib_s, rho_tokens),
        f"python_sentencepiece_{spm.__version__}_pool": figures(py_s, py_tokens),
        "speedup": round(py_s / rho_s, 2),
        "speedup_library_encoder": round(py_s / lib_s, 2),
        "one_thread": {"rho_tokenize": figures(rho1_s, rho_tokens), "rho_tokenize_library_encoder":
                       figures(lib1_s, rho_tokens), "python": figures(py1_s, py_tokens)},
        "scaling": {"rho_tokenize": round(rho1_s / rho_s, 2), "python": round(py1_s / py_s, 2)},
        "identical_ids": identical,  # to Python's
        "identical_ids_library_encoder": identical_library,
    }, indent=2))
    if hf:
        print(json.dumps(hf, indent=2))


LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")


def hf_figures(args, corpus, fields, size):
    """rho_tokenize with a tokenizer.json against the tokenizers library, with W threads and with one."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    with open(corpus, encoding="utf-8") as f:
        texts = ["\n".join(json.loads(line)[k] for k in fields) for line in f if line.strip()]
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.train_from_iterator(texts[:20000], trainers.BpeTrainer(vocab_size=16000, special_tokens=["<|endoftext|>"],
                                                               show_progress=False,
                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    eos = tok.token_to_id("<|endoftext|>")
    field_args = [a for k in fields for a in ("--field", k)]
    with tempfile.TemporaryDirectory(prefix="rho_bench_hf_") as tmp:
        tmp = Path(tmp)
        tok.save(str(tmp / "tokenizer.json"))

        def rho(threads):
            out = tmp / f"out{threads}"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run([args.rho_tokenize, corpus, *field_args, "--tokenizer", tmp / "tokenizer.json", "--out",
                            out, "--threads", str(threads), "--quiet"], check=True, capture_output=True)
            m = json.loads((out / "manifest.json").read_text())
            return np.concatenate([np.fromfile(out / s["file"], dtype="<u2") for s in m["shards"]])

        def python():  # tokenizers' own thread pool: every core (RAYON_NUM_THREADS caps it)
            return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

        rho1_s, _ = best_of(args.repeats, lambda: rho(1))
        rho_s, rho_ids = best_of(args.repeats, lambda: rho(args.workers))
        py_s, py_ids = best_of(args.repeats, python)
    want = np.concatenate([np.array(x + [eos], dtype=np.uint16) for x in py_ids])
    n = len(want)

    def figures(seconds):
        return {"seconds": round(seconds, 3), "mb_per_s": round(size / 1e6 / seconds, 2),
                "tokens_per_s": round(n / seconds)}

    import tokenizers
    return {"kind": "tokenizer.json (byte-level BPE, Llama 3 style, 16k)", "megabytes": round(size / 1e6, 1),
            "cpu_cores": os.cpu_count(), "workers": args.workers, "tokens": n,
            "rho_tokenize": figures(rho_s), f"python_tokenizers_{tokenizers.__version__}_encode_batch": figures(py_s),
            "speedup": round(py_s / rho_s, 2), "one_thread": {"rho_tokenize": figures(rho1_s)},
            "identical_ids": bool(np.array_equal(rho_ids, want))}


if __name__ == "__main__":
    main()
