#!/usr/bin/env python3
"""rho_tokenize reads Parquet and Arrow as it reads JSON Lines.

The same documents (ASCII, multilingual, emoji, long, near-empty) written as JSON Lines and, with pyarrow, as
Parquet (snappy, zstd, gzip and uncompressed; several row groups; string and large_string columns), as Arrow IPC
files and streams (string, large_string and string_view), as a `datasets.save_to_disk`-style folder of
data-*.arrow streams (with `datasets` itself when it is installed), and the folder `datasets` 5.2.0 wrote under
tests/data/ must tokenise to the same token ids; with two
columns (--field title --field text) as two JSON fields. Bad input names the file, row group and column, leaves no
manifest, and --on-error skip counts it: a null, a missing column, a non-string column, a truncated file, a file
that is not Parquet. A run killed after a shard resumes to byte-identical output. Without the Arrow plugin a
Parquet input is refused, naming it and the plugin, before any input is read.

  test_tokenize_columnar.py --rho-tokenize BUILD/apps/rho_tokenize
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenize_helpers import run  # noqa: E402

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:
    print(f"SKIP: pyarrow is not installed ({e}); scripts/setup.sh installs it")
    sys.exit(0)

failures = []


def check(cond, msg):
    print(("PASS " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def documents(n=1500, seed=0):
    rng = random.Random(seed)
    words = ("the cat sat on a mat 12 + 30 = 42 def f(x): return x ** 2 Größe über naïve 東京 数学 уравнение "
             "λ → ∞ 🙂 🚀 👩‍💻 \\frac{1}{2}").split()
    docs = []
    for i in range(n):
        k = rng.choice([1, 5, 40, 400]) if i % 97 else 3000
        docs.append(" ".join(rng.choice(words) for _ in range(k)) + ("\n" if i % 7 == 0 else ""))
    return docs


def token_ids(out: Path) -> bytes:
    m = json.loads((out / "manifest.json").read_text())
    return b"".join((out / s["file"]).read_bytes() for s in m["shards"])


def tokenize(tool, inputs, out, *extra, expect=0):
    args = [*map(str, inputs), "--out", out, "--quiet", *extra]
    return run(tool, *args, expect=expect)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-tokenize", required=True)
    tool = ap.parse_args().rho_tokenize
    with tempfile.TemporaryDirectory(prefix="rho_tok_columnar_") as tmp:
        t = Path(tmp)
        docs = documents()
        titles = [f"Problem {i}" for i in range(len(docs))]
        (t / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        tokenize(tool, [t / "c.jsonl"], t / "ref", "--train-tokenizer", "--vocab-size", "340")
        model = t / "ref" / "tokenizer.model"
        want = token_ids(t / "ref")
        common = ["--tokenizer", model]

        def same(name, inputs, *extra):
            out = t / f"out-{name}"
            tokenize(tool, inputs, out, *common, *extra)
            got = token_ids(out)
            check(got == want, f"{name}: {len(got) // 2} token ids equal the JSON Lines input's")
            return out

        # Parquet: codecs, row groups, string and large_string.
        table = pa.table({"id": list(range(len(docs))), "text": docs})
        for codec in ("snappy", "zstd", "gzip", "none"):
            pq.write_table(table, t / f"c-{codec}.parquet", compression=codec, row_group_size=256)
        for codec in ("snappy", "zstd", "gzip", "none"):
            same(f"parquet {codec}, {pq.ParquetFile(t / f'c-{codec}.parquet').num_row_groups} row groups",
                 [t / f"c-{codec}.parquet"])
        large = table.cast(pa.schema([("id", pa.int64()), ("text", pa.large_string())]))
        pq.write_table(large, t / "c-large.parquet", row_group_size=1000)
        same("parquet large_string", [t / "c-large.parquet"])
        # Shards of one dataset, in name order, as published datasets are.
        (t / "shards").mkdir()
        for i in range(3):
            pq.write_table(table.slice(i * 500, 500), t / "shards" / f"train-{i:05d}-of-00003.parquet")
        same("three Parquet shards by glob", [str(t / "shards" / "train-*.parquet")])

        # Arrow IPC: file and stream formats, string / large_string / string_view.
        for kind, typ in (("string", pa.string()), ("large_string", pa.large_string()), ("string_view", pa.string_view())):
            tb = pa.table({"text": pa.array(docs, type=typ)})
            with pa.OSFile(str(t / f"c-{kind}.arrow"), "wb") as f, pa.ipc.new_file(f, tb.schema) as w:
                for batch in tb.to_batches(max_chunksize=300):
                    w.write_batch(batch)
            with pa.OSFile(str(t / f"s-{kind}.arrow"), "wb") as f, pa.ipc.new_stream(f, tb.schema) as w:
                for batch in tb.to_batches(max_chunksize=300):
                    w.write_batch(batch)
            same(f"Arrow IPC file, {kind}", [t / f"c-{kind}.arrow"])
            same(f"Arrow IPC stream, {kind}", [t / f"s-{kind}.arrow"])

        # The save_to_disk layout: data-0000k-of-0000n.arrow streams beside dataset_info.json and state.json.
        disk = t / "saved"
        try:
            import datasets
            datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(disk), max_shard_size="100KB")
            how = f"datasets {datasets.__version__} save_to_disk"
        except ImportError:
            disk.mkdir()
            tb = pa.table({"text": docs})
            for i in range(2):
                part = tb.slice(i * 750, 750)
                with pa.OSFile(str(disk / f"data-{i:05d}-of-00002.arrow"), "wb") as f, \
                        pa.ipc.new_stream(f, part.schema) as w:
                    w.write_table(part, max_chunksize=1000)
            (disk / "state.json").write_text("{}")
            how = "a save_to_disk-style folder (datasets is not installed)"
        same(f"{how}, data-*.arrow", [str(disk / "data-*.arrow")])

        # A folder written by `datasets` itself (committed: the library's own files, tests/data/).
        fixture = Path(__file__).resolve().parents[1] / "data" / "datasets_save_to_disk"
        tokenize(tool, [fixture / "texts.jsonl"], t / "fixture-ref", *common)
        out = t / "fixture"
        tokenize(tool, [str(fixture / "saved" / "data-*.arrow")], out, *common)
        check(token_ids(out) == token_ids(t / "fixture-ref"),
              f"tests/data/datasets_save_to_disk ({(fixture / 'README.md').read_text().split('(')[0].strip()}): "
              "data-*.arrow tokenises as its texts in JSON Lines")

        # Two columns, as two JSON fields.
        (t / "two.jsonl").write_text("".join(json.dumps({"title": a, "text": b}) + "\n" for a, b in zip(titles, docs)))
        pq.write_table(pa.table({"title": titles, "text": docs}), t / "two.parquet", row_group_size=500)
        tokenize(tool, [t / "two.jsonl"], t / "two-ref", *common, "--field", "title", "--field", "text")
        out = t / "two-pq"
        tokenize(tool, [t / "two.parquet"], out, *common, "--field", "title", "--field", "text")
        check(token_ids(out) == token_ids(t / "two-ref"), "--field title --field text: Parquet columns equal JSON fields")

        # Resume: killed after its first shard (2000-token shards), then rerun.
        out = t / "resume"
        args = [t / "c-snappy.parquet", "--out", out, "--quiet", *common, "--shard-tokens", "20000"]
        rc, _, _ = run(tool, *args, "--test-kill-after-shards", "2", expect=None)
        check(rc != 0 and not (out / "manifest.json").exists(), "killed after 2 shards: no manifest yet")
        run(tool, *args)
        full = t / "full"
        run(tool, *[a if a != out else full for a in args])
        check(all((out / f).read_bytes() == (full / f).read_bytes() for f in
                  [s["file"] for s in json.loads((full / "manifest.json").read_text())["shards"]] + ["manifest.json"]),
              "Parquet, killed after 2 shards and resumed: shards and manifest byte-identical to an uninterrupted run")

        # Bad input: the message names the file, row group and column; nothing is written; skip counts it.
        with_null = pa.table({"text": pa.array(docs[:600] + [None] + docs[601:], type=pa.string())})
        pq.write_table(with_null, t / "null.parquet", row_group_size=256)
        pq.write_table(pa.table({"content": docs}), t / "nocol.parquet")
        pq.write_table(pa.table({"text": list(range(len(docs)))}), t / "int.parquet")
        data = (t / "c-none.parquet").read_bytes()
        (t / "cut.parquet").write_bytes(data[: len(data) // 2])
        (t / "notpq.parquet").write_text('{"text": "this is JSON"}\n')
        # A damaged row group: bytes of row group 1's compressed column chunk flipped.
        pq.write_table(table, t / "damaged.parquet", compression="zstd", row_group_size=500)
        chunk = pq.ParquetFile(t / "damaged.parquet").metadata.row_group(1).column(1)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        raw = bytearray((t / "damaged.parquet").read_bytes())
        for k in range(20):
            raw[start + 40 + k * 7 % (chunk.total_compressed_size - 48)] ^= 0xFF
        (t / "damaged.parquet").write_bytes(bytes(raw))
        bad = {
            "damaged.parquet": ("row 500", "row group 1", "column 'text'"),
            "null.parquet": ("row 600", "row group 2", "column 'text'", "null"),
            "nocol.parquet": ("no column 'text'", "'content'"),
            "int.parquet": ("column 'text'", "int64", "not strings"),
            "cut.parquet": ("not a readable Parquet file",),
            "notpq.parquet": ("not a readable Parquet file",),
        }
        for name, words in bad.items():
            out = t / f"bad-{name}"
            rc, _, err = tokenize(tool, [t / name], out, *common, expect=None)
            check(rc != 0 and str(t / name) in err and all(w in err for w in words) and
                  not (out / "manifest.json").exists(),
                  f"{name}: exit {rc}, the message names the file and {words}: {err.strip().splitlines()[-1][:160]}")
        out = t / "skip-null"
        _, stdout, _ = tokenize(tool, [t / "null.parquet"], out, *common, "--on-error", "skip")
        m = json.loads((out / "manifest.json").read_text())
        check(m["skipped_documents"] == 1 and m["num_documents"] == len(docs) - 1,
              f"null.parquet with --on-error skip: 1 record skipped, {m['num_documents']} documents")
        out = t / "skip-damaged"
        tokenize(tool, [t / "damaged.parquet"], out, *common, "--on-error", "skip")
        m = json.loads((out / "manifest.json").read_text())
        check(m["skipped_documents"] == 1 and m["num_documents"] == len(docs) - 500,
              f"damaged.parquet with --on-error skip: row group 1 skipped as 1 bad record, {m['num_documents']} "
              "documents from the others")
        out = t / "skip-files"
        tokenize(tool, [t / "nocol.parquet", t / "c-snappy.parquet", t / "cut.parquet"], out, *common,
                 "--on-error", "skip")
        m = json.loads((out / "manifest.json").read_text())
        check(token_ids(out) == want and m["skipped_documents"] == 2,
              f"a file without the column and a truncated file skipped ({m['skipped_documents']} counted), "
              "the good file's ids as before")

        # Without the Arrow plugin (librho's libraries copied alone; the tools' RUNPATH yields to
        # LD_LIBRARY_PATH), a Parquet input fails before any file is read, even after a JSON Lines one.
        libs = Path(tool).resolve().parent.parent / "librho"
        bare = t / "no-plugin"
        bare.mkdir()
        for lib in ("librho.so", "librho_data.so"):
            shutil.copy(libs / lib, bare / lib)
        out = t / "no-plugin-out"
        r = subprocess.run([tool, t / "c.jsonl", t / "c-snappy.parquet", "--out", out, "--quiet",
                            "--shard-tokens", "1000", *common],
                           capture_output=True, text=True, env={**os.environ, "LD_LIBRARY_PATH": str(bare)})
        check(r.returncode != 0 and str(t / "c-snappy.parquet") in r.stderr and "librho_columnar.so" in r.stderr
              and not list(out.glob("shard_*")) and not (out / "manifest.json").exists(),
              f"no Arrow plugin: exit {r.returncode}, the Parquet file and the plugin named, no shard written: "
              f"{r.stderr.strip()[:160]}")
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    print("all columnar checks passed")


if __name__ == "__main__":
    main()
