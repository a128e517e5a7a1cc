#!/usr/bin/env python3
"""rho_tokenize resumes after kill -9 and produces byte-identical output, whatever the thread count.

A generated multi-shard corpus (JSON Lines plain, .gz and two-frame .zst, a folder of text files, some documents
spanning several shards) is tokenised once without interruption (training the tokenizer). Then:
  - the same command is killed (SIGKILL, via the hidden --test-kill-after-shards) after 3 shards and rerun;
  - with the trained tokenizer and 1 thread, killed after 5 shards, rerun with 2 threads and killed from outside
    part-way, a shard damaged, then rerun with 3 threads;
each final dataset (shards, manifest.json, tokenizer) must equal the uninterrupted one byte for byte. Also: a
rerun with different settings is refused, --overwrite starts over, a complete dataset is not overwritten, and a
run killed between writing manifest.json and removing progress.json is finished by the rerun.
"""
import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenize_helpers import dataset_files, make_corpus, run  # noqa: E402

SHARD = 40000


def check_interrupted(out: Path, min_shards: int):
    assert not (out / "manifest.json").exists(), "an interrupted run must not leave manifest.json"
    progress = json.loads((out / "progress.json").read_text())
    assert len(progress["shards"]) >= min_shards, progress["shards"]
    for s in progress["shards"]:
        assert (out / s["file"]).stat().st_size == 2 * s["num_tokens"], s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-tokenize", required=True)
    args = ap.parse_args()
    tool = args.rho_tokenize
    with tempfile.TemporaryDirectory(prefix="rho_tok_resume_") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        make_corpus(corpus)
        common = [corpus, "--shard-tokens", SHARD, "--quiet"]
        train = ["--train-tokenizer", "--vocab-size", 512]

        ref = tmp / "ref"
        _, summary, _ = run(tool, *common, *train, "--out", ref, "--threads", 2)
        print(summary.strip())
        manifest = json.loads((ref / "manifest.json").read_text())
        assert len(manifest["shards"]) >= 10, "the corpus should make many shards"
        assert manifest["dtype"] == "uint16" and manifest["vocab_size"] == 512
        assert not (ref / "progress.json").exists()
        expected = dataset_files(ref)

        # 1. Killed after 3 durable shards, training included; the rerun reuses the trained tokenizer.
        a = tmp / "a"
        rc, _, _ = run(tool, *common, *train, "--out", a, "--test-kill-after-shards", 3, expect=None)
        assert rc == -signal.SIGKILL, rc
        check_interrupted(a, 3)
        _, summary, _ = run(tool, *common, *train, "--out", a)
        assert "after 3 shard(s) kept from an interrupted run" in summary, summary
        assert dataset_files(a) == expected, "resumed output differs from the uninterrupted run"
        print("kill after 3 shards + resume: identical")

        # 2. Existing tokenizer, different thread counts, an outside kill at an arbitrary point, a damaged shard.
        b = tmp / "b"
        tok = ["--tokenizer", ref / "tokenizer.model"]
        rc, _, _ = run(tool, *common, *tok, "--out", b, "--threads", 1, "--test-kill-after-shards", 5, expect=None)
        assert rc == -signal.SIGKILL, rc
        check_interrupted(b, 5)
        p = subprocess.Popen([tool, *map(str, common), *map(str, tok), "--out", str(b), "--threads", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not (b / "shard_00007.bin").exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if not (b / "manifest.json").exists():
            check_interrupted(b, 5)
        (b / "manifest.json").unlink(missing_ok=True)  # the kill may come too late; then redo the end
        progress = json.loads((b / "progress.json").read_text()) if (b / "progress.json").exists() else None
        print(f"outside kill: {len(progress['shards']) if progress else 'all'} shards done when killed")
        if progress:
            damaged = b / progress["shards"][1]["file"]
            data = bytearray(damaged.read_bytes())
            data[100] ^= 0xFF
            damaged.write_bytes(bytes(data))
        _, _, err = run(tool, *common, *tok, "--out", b, "--threads", 3)
        if progress:
            assert "does not match its progress record" in err, err
        assert dataset_files(b) == expected, "output after kills at 1/2/3 threads differs"
        print("kills with 1, 2, 3 threads, a damaged shard + resume: identical")

        # 3. Settings must match to resume; --overwrite starts over; a complete dataset is kept.
        c = tmp / "c"
        run(tool, *common, *tok, "--out", c, "--test-kill-after-shards", 2, expect=None)
        rc, _, err = run(tool, corpus, "--shard-tokens", SHARD + 1, "--quiet", *tok, "--out", c, expect=1)
        assert "rho_tokenize: error:" in err and "'shard_tokens' differs" in err, err
        rc, _, err = run(tool, corpus, "--field", "id", "--quiet", "--shard-tokens", SHARD, *tok, "--out", c,
                         expect=1)
        assert "'fields' differs" in err, err
        run(tool, *common, *tok, "--out", c, "--overwrite")
        assert dataset_files(c) == expected
        rc, _, err = run(tool, *common, *tok, "--out", c, expect=1)
        assert "already holds a complete dataset" in err, err
        assert dataset_files(c) == expected
        print("settings checks, --overwrite, complete dataset kept: ok")

        # 4. Killed between the manifest's rename and progress.json's removal (the last two steps): the folder holds
        # both. A rerun with other settings is refused and keeps the manifest; the same command finishes the run
        # instead of calling the folder complete; then it is complete.
        d = tmp / "d"
        rc, _, _ = run(tool, *common, *tok, "--out", d, "--test-kill-after-shards", len(manifest["shards"]),
                       expect=None)
        assert rc == -signal.SIGKILL, rc
        check_interrupted(d, len(manifest["shards"]))
        (d / "manifest.json").write_bytes((ref / "manifest.json").read_bytes())
        rc, _, err = run(tool, corpus, "--shard-tokens", SHARD + 1, "--quiet", *tok, "--out", d, expect=1)
        assert "'shard_tokens' differs" in err, err
        assert (d / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes(), \
            "a refused rerun must leave the complete dataset as it was"
        _, summary, _ = run(tool, *common, *tok, "--out", d)
        assert f"after {len(manifest['shards'])} shard(s) kept from an interrupted run" in summary, summary
        assert dataset_files(d) == expected and not (d / "progress.json").exists()
        rc, _, err = run(tool, *common, *tok, "--out", d, expect=1)
        assert "already holds a complete dataset" in err, err
        print("killed between manifest.json and progress.json's removal + rerun: identical, then complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
