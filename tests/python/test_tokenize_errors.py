#!/usr/bin/env python3
"""rho_tokenize on bad input: each fault is named with its file and line.

--on-error stop (the default): malformed JSON, a missing field, invalid UTF-8 (JSON Lines and text), an empty file
and corrupt compressed data each end the run with exit 1 and "rho_tokenize: error: FILE:LINE: ...", without a
manifest and without touching a complete dataset. --on-error skip: the same corpus tokenises, the skips are
counted in the summary and the manifest, and the shards equal those of the corpus without the bad records.
A run stopped by bad input resumes under --on-error skip to the same result as a fresh skip run.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenize_helpers import dataset_files, make_corpus, run, write  # noqa: E402


def good_line(i):
    return json.dumps({"question": f"How many apples does person {i} have?", "answer": f"#### {i}"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-tokenize", required=True)
    tool = ap.parse_args().rho_tokenize
    with tempfile.TemporaryDirectory(prefix="rho_tok_errors_") as tmp:
        tmp = Path(tmp)
        # A small tokenizer for every case, trained on a generated corpus.
        make_corpus(tmp / "train", megabytes=0.5)
        run(tool, tmp / "train", "--train-tokenizer", "--vocab-size", 300, "--out", tmp / "tok", "--quiet")
        tok = ["--tokenizer", tmp / "tok" / "tokenizer.model", "--quiet", "--field", "question", "--field", "answer"]

        def expect_error(name, lines_or_bytes, where, what, extra=()):
            d = tmp / name
            data = lines_or_bytes if isinstance(lines_or_bytes, bytes) else "\n".join(lines_or_bytes).encode()
            write(d / where.split(":")[0], data)
            _, _, err = run(tool, d, *tok, *extra, "--out", tmp / (name + "_out"), expect=1)
            file_and_line = str(d / where)
            assert err.startswith("rho_tokenize: error: "), err
            assert file_and_line in err and what in err, f"expected '{file_and_line}' and '{what}' in: {err}"
            assert not (tmp / (name + "_out") / "manifest.json").exists()
            print(f"{name}: {err.strip()}")

        lines = [good_line(i) for i in range(6)]
        expect_error("malformed", lines[:2] + ['{"question": "a", "answer": }'] + lines[2:], "bad.jsonl:3",
                     "malformed JSON")
        expect_error("missing", lines[:1] + ['{"question": "where is the answer?"}'] + lines[1:], "bad.jsonl:2",
                     "missing field 'answer'")
        expect_error("not_string", lines[:4] + ['{"question": "q", "answer": 4}'], "bad.jsonl:5",
                     "field 'answer' is a number, not a string")
        bad_utf8 = ("\n".join(lines[:3]) + "\n").encode() + b'{"question": "caf\xe9", "answer": "x"}\n'
        expect_error("utf8_jsonl", bad_utf8, "bad.jsonl:4", "invalid UTF-8")
        expect_error("utf8_text", b"first line\nsecond line\nthird \xc3\x28 line\n", "doc.txt:3", "invalid UTF-8")
        expect_error("empty", b"", "empty.jsonl:1", "empty file")
        expect_error("empty_zst", b"", "empty.jsonl.zst:1", "empty file")
        expect_error("blank_text", b"\n  \n", "blank.txt:1", "empty file")
        d = tmp / "truncated"
        write(d / "cut.jsonl.gz", "\n".join(lines * 200).encode())
        (d / "cut.jsonl.gz").write_bytes((d / "cut.jsonl.gz").read_bytes()[:-30])
        _, _, err = run(tool, d, *tok, "--out", tmp / "truncated_out", expect=1)
        assert "cut.jsonl.gz" in err and "truncated" in err, err
        print(f"truncated gzip: {err.strip()}")

        # Skip mode: one corpus with every fault; the result equals the corpus without them.
        many = [good_line(i) for i in range(3000)]
        faulty = list(many)
        faulty.insert(1000, '{"question": "a", "answer": }')
        faulty.insert(2000, '{"question": "no answer"}')
        good_dir, bad_dir = tmp / "clean", tmp / "faulty"
        write(good_dir / "a.jsonl", "\n".join(many).encode())
        write(bad_dir / "a.jsonl", "\n".join(faulty).encode() + b'\n{"question": "\xff", "answer": "b"}\n')
        write(bad_dir / "b.jsonl.gz", b"")
        common = [*tok, "--shard-tokens", 5000]
        run(tool, good_dir, *common, "--out", tmp / "clean_out")
        _, summary, err = run(tool, bad_dir, *common, "--on-error", "skip", "--out", tmp / "skip_out")
        assert "skipped: 3 bad record(s), 1 empty file(s)" in summary, summary
        assert "a.jsonl:1001: malformed JSON" in err and "b.jsonl.gz:1: empty file" in err, err
        m = json.loads((tmp / "skip_out" / "manifest.json").read_text())
        assert m["skipped_documents"] == 3 and m["skipped_files"] == 1 and m["num_documents"] == 3000, m
        clean = json.loads((tmp / "clean_out" / "manifest.json").read_text())
        assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in clean["shards"]]
        print(f"skip mode: {summary.strip().splitlines()[2].strip()}; shards equal the clean corpus's")

        # Stop mode keeps the shards made before the fault; resuming with skip equals a fresh skip run.
        stopped = tmp / "stopped"
        _, _, err = run(tool, bad_dir, *common, "--out", stopped, expect=1)
        assert "a.jsonl:1001: malformed JSON" in err, err
        progress = json.loads((stopped / "progress.json").read_text())
        assert progress["shards"] and not (stopped / "manifest.json").exists()
        _, summary, _ = run(tool, bad_dir, *common, "--on-error", "skip", "--out", stopped)
        assert "kept from an interrupted run" in summary, summary
        assert dataset_files(stopped) == dataset_files(tmp / "skip_out")
        print(f"stop after {len(progress['shards'])} shards, resume with skip: identical to a fresh skip run")

        # Bad input never damages a complete dataset.
        before = dataset_files(tmp / "clean_out")
        _, _, err = run(tool, bad_dir, *common, "--out", tmp / "clean_out", expect=1)
        assert "already holds a complete dataset" in err, err
        assert dataset_files(tmp / "clean_out") == before
        _, _, err = run(tool, tmp / "nowhere", *common, "--out", tmp / "x", expect=1)
        assert "nowhere: no such file or folder" in err, err
    return 0


if __name__ == "__main__":
    sys.exit(main())
