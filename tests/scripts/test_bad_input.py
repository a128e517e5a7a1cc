#!/usr/bin/env python3
"""Bad-input suite: damaged or mismatched files given to the CLIs. Every case must end with a non-zero exit and an
error line that names the file at fault (and the field, line or key where that applies) and says what is wrong,
and must leave every good file it was near unchanged (sha256 of the folders before and after).

Cases (listed with what the program does in docs/trust.md):
  token datasets: shard truncated / bit-flipped / missing, manifest truncated / mistyped / unknown field / missing;
  loss datasets: shard truncated / bit-flipped, manifest not JSON, scored on another token dataset, from another
  tokenizer; safetensors (Hugging Face model): truncated, header damaged, config.json missing; checkpoints: a
  flipped byte in model or optimizer tensors (sha256), state.json truncated, resumed with another model shape (refused as a config change), a
  checkpoint given to rho_score with a flipped byte; YAML: unknown key, wrong type, out-of-range values, syntax
  error, unknown --set key, missing config; missing inputs; a full disk (RLIMIT_FSIZE with SIGXFSZ ignored, so
  writes fail with EFBIG) for rho_tokenize, rho_score and a checkpoint write; non-finite loss (stop and skip).
rho_tokenize's own bad-input cases (malformed JSON Lines, bad UTF-8, corrupt compression, ...) are in
tests/python/test_tokenize_errors.py."""
import argparse
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import (flip_byte, latest_checkpoint, run, tree_hashes, truncate, write_model_yaml,  # noqa: E402
                         write_word_corpus)


def file_size_limit(nbytes):
    """preexec_fn: files may not grow past nbytes; SIGXFSZ ignored so that write() fails with EFBIG instead."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


class Suite:
    def __init__(self, root: Path):
        self.root = root
        self.ok = True
        self.cases = []

    def case(self, name, cmd, needles, guard=(), expect_rc=None, preexec=None, after=None):
        """Runs cmd; it must exit non-zero (or expect_rc), its stderr must hold every needle, and every folder in
        guard must be byte-identical afterwards."""
        before = {str(g): tree_hashes(g) for g in guard}
        r = run(*cmd, expect=None, preexec_fn=preexec)
        err = r.stderr.strip()
        last = err.splitlines()[-1] if err else ""
        rc_ok = r.returncode != 0 if expect_rc is None else r.returncode == expect_rc
        missing = [n for n in needles if n not in err]
        changed = [g for g in before if tree_hashes(g) != before[g]]
        extra = after() if after else ""
        good = rc_ok and not missing and not changed and not extra
        self.cases.append(name)
        print(f"{'ok  ' if good else 'FAIL'} [{len(self.cases):2d}] {name}: exit {r.returncode}: {last[:400]}", flush=True)
        if not good:
            print(f"      missing in stderr: {missing}; changed: {changed}; {extra}\n      stderr: {err[-2000:]}")
        self.ok &= good
        return r

    def copy(self, src: Path, name: str) -> Path:
        dst = self.root / "cases" / name
        shutil.copytree(src, dst)
        return dst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="folder with the rho_* tools")
    b = Path(ap.parse_args().bin)
    # One torch thread: on a loaded machine (ctest -j, builds) more threads than free cores make each tool many
    # times slower; the uninterrupted and the interrupted runs use the same count, as bit-identity needs.
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory(prefix="rho_bad_input_") as tmp:
        t = Path(tmp)
        s = Suite(t)
        # Good inputs, made with the tools: two token datasets with one tokenizer, one with another tokenizer,
        # a model, its losses, a run with checkpoints.
        write_word_corpus(t / "a.jsonl", 600, seed=0)
        write_word_corpus(t / "b.jsonl", 300, seed=1)
        tok = t / "tok"
        run(b / "rho_tokenize", t / "a.jsonl", "--out", tok, "--train-tokenizer", "--vocab-size", "320",
            "--shard-tokens", "3000", "--quiet")
        run(b / "rho_tokenize", t / "b.jsonl", "--out", t / "tok_b", "--tokenizer", tok / "tokenizer.model",
            "--shard-tokens", "3000", "--quiet")
        run(b / "rho_tokenize", t / "a.jsonl", "--out", t / "tok_other", "--train-tokenizer", "--vocab-size", "300",
            "--shard-tokens", "3000", "--quiet")
        vocab = json.loads((tok / "manifest.json").read_text())["vocab_size"]
        write_model_yaml(t / "m.yaml", vocab)
        run(b / "rho_model", "init", t / "m.yaml", "--seed", "3", "--out", t / "hf")
        score = [b / "rho_score", "--seq-len", "32", "--batch-size", "4", "--device", "cpu"]
        run(*score, "--model", t / "hf", "--data", tok, "--out", t / "loss")
        run(*score, "--model", t / "hf", "--data", t / "tok_other", "--out", t / "loss_other")
        (t / "run.yaml").write_text(f"""run: {{out_dir: {t / 'run'}, seed: 1, device: cpu}}
model: {{config: {t / 'm.yaml'}}}
data: {{train: {tok}, seq_len: 32, batch_size: 4}}
optim: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 2, max_steps: 6}}
train: {{log_every: 1, checkpoint_every: 3, keep_checkpoints: 3}}
""")
        pretrain = [b / "rho_pretrain", t / "run.yaml"]
        run(*pretrain)
        good = [tok, t / "tok_b", t / "tok_other", t / "hf", t / "loss", t / "loss_other", t / "run"]
        shards = json.loads((tok / "manifest.json").read_text())["shards"]
        assert len(shards) >= 3, shards

        def score_into(data, out_name, model=t / "hf"):
            return [*score, "--model", model, "--data", data, "--out", t / "out" / out_name]

        def pretrain_on(data, out_name, *sets):
            extra = [a for x in sets for a in ("--set", x)]
            return [*pretrain, "--set", f"data.train={data}", "--set", f"run.out_dir={t / 'out' / out_name}", *extra]

        # --- token datasets ---------------------------------------------------------------------------------------
        d = s.copy(tok, "tok_truncated")
        truncate(d / shards[1]["file"], -7)
        s.case("token shard truncated (rho_score)", score_into(d, "x1"), [str(d / shards[1]["file"]), "truncated"], good)
        d = s.copy(tok, "tok_flipped")
        flip_byte(d / shards[2]["file"], 101)
        s.case("token shard with a flipped byte (rho_score)", score_into(d, "x2"),
               [str(d / shards[2]["file"]), "corrupt shard"], good)
        s.case("token shard with a flipped byte (rho_pretrain)", pretrain_on(d, "x3"),
               [str(d / shards[2]["file"]), "corrupt shard"], good)
        d = s.copy(tok, "tok_missing_shard")
        (d / shards[0]["file"]).unlink()
        s.case("token shard missing", score_into(d, "x4"), [str(d / shards[0]["file"]), "No such file"], good)
        d = s.copy(tok, "tok_manifest_truncated")
        truncate(d / "manifest.json", 150)
        s.case("token manifest truncated", score_into(d, "x5"), [str(d / "manifest.json"), "invalid JSON"], good)
        d = s.copy(tok, "tok_manifest_type")
        m = json.loads((d / "manifest.json").read_text())
        m["vocab_size"] = str(m["vocab_size"])
        (d / "manifest.json").write_text(json.dumps(m))
        s.case("token manifest field of the wrong type", pretrain_on(d, "x6"),
               [str(d / "manifest.json"), "field 'vocab_size'", "expected an integer"], good)
        d = s.copy(tok, "tok_manifest_unknown")
        m = json.loads((d / "manifest.json").read_text())
        m["shards"][1]["checksum"] = "x"
        (d / "manifest.json").write_text(json.dumps(m))
        s.case("token manifest with an unknown field", score_into(d, "x7"),
               [str(d / "manifest.json"), "shards[1].checksum", "unknown field"], good)
        d = s.copy(tok, "tok_manifest_range")
        m = json.loads((d / "manifest.json").read_text())
        m["shards"][0]["num_tokens"] = -5
        (d / "manifest.json").write_text(json.dumps(m))
        s.case("token manifest value out of range", score_into(d, "x8"),
               [str(d / "manifest.json"), "shards[0].num_tokens", "outside"], good)
        d = s.copy(tok, "tok_no_manifest")
        (d / "manifest.json").unlink()
        s.case("token manifest missing (an unfinished dataset)", score_into(d, "x9"), [str(d), "no manifest.json"], good)

        # --- loss datasets ----------------------------------------------------------------------------------------
        slm = ["train.stage=slm", "slm.ratio=0.5"]
        lshards = json.loads((t / "loss/manifest.json").read_text())["shards"]
        d = s.copy(t / "loss", "loss_truncated")
        truncate(d / lshards[1]["file"], -4)
        s.case("loss shard truncated (rho_pretrain slm)", pretrain_on(tok, "l1", *slm, f"slm.reference_losses={d}"),
               [str(d / lshards[1]["file"]), "truncated"], good)
        d = s.copy(t / "loss", "loss_flipped")
        flip_byte(d / lshards[0]["file"], 33)
        s.case("loss shard with a flipped byte (rho_pretrain slm)",
               pretrain_on(tok, "l2", *slm, f"slm.reference_losses={d}"),
               [str(d / lshards[0]["file"]), "corrupt loss shard"], good)
        s.case("loss shard with a flipped byte (rho_view)",
               [b / "rho_view", "--data", tok, "--losses", d, "--out", t / "out" / "view.html"],
               [str(d / lshards[0]["file"]), "corrupt loss shard"], good,
               after=lambda: "view.html written" if (t / "out" / "view.html").exists() else "")
        d = s.copy(t / "loss", "loss_manifest_bad")
        (d / "manifest.json").write_text((d / "manifest.json").read_text()[:-20])
        s.case("loss manifest truncated", pretrain_on(tok, "l3", *slm, f"slm.reference_losses={d}"),
               [str(d / "manifest.json"), "invalid JSON"], good)
        s.case("loss dataset scored on another token dataset (same tokenizer)",
               pretrain_on(t / "tok_b", "l4", *slm, f"slm.reference_losses={t / 'loss'}"),
               [str(t / "loss"), "scored on token dataset", str(t / "tok_b")], good)
        s.case("loss dataset from another tokenizer",
               pretrain_on(tok, "l5", *slm, f"slm.reference_losses={t / 'loss_other'}"),
               [str(t / "loss_other"), "tokenizer", str(tok)], good)
        s.case("loss dataset from another tokenizer (rho_view)",
               [b / "rho_view", "--data", tok, "--losses", t / "loss_other", "--out", t / "out" / "view2.html"],
               [str(t / "loss_other"), "tokenizer"], good)

        # --- safetensors: a Hugging Face model --------------------------------------------------------------------
        d = s.copy(t / "hf", "hf_truncated")
        truncate(d / "model.safetensors", -100)
        s.case("model.safetensors truncated", score_into(tok, "s1", d), [str(d / "model.safetensors"), "truncated"],
               good)
        d = s.copy(t / "hf", "hf_header")
        data = bytearray((d / "model.safetensors").read_bytes())
        data[8] = ord("[")  # the header's opening brace
        (d / "model.safetensors").write_bytes(bytes(data))
        s.case("model.safetensors header damaged", score_into(tok, "s2", d),
               [str(d / "model.safetensors"), "bad safetensors header"], good)
        d = s.copy(t / "hf", "hf_length")
        data = bytearray((d / "model.safetensors").read_bytes())
        data[0:8] = struct.pack("<Q", 1 << 40)
        (d / "model.safetensors").write_bytes(bytes(data))
        s.case("model.safetensors header length beyond the file", score_into(tok, "s3", d),
               [str(d / "model.safetensors"), "bad safetensors header length"], good)
        d = s.copy(t / "hf", "hf_no_config")
        (d / "config.json").unlink()
        s.case("Hugging Face folder without config.json", score_into(tok, "s4", d), [str(d), "config.json"], good)

        # --- checkpoints --------------------------------------------------------------------------------------------
        latest = latest_checkpoint(t / "run").name
        for name, damage, needle in [
                ("model tensors with a flipped byte", lambda c: flip_byte(c / "model.safetensors", 5000), "checksum"),
                ("optimizer tensors truncated", lambda c: truncate(c / "optimizer.safetensors", -8), "checksum"),
                ("state.json truncated", lambda c: truncate(c / "state.json", 40), "invalid JSON")]:
            d = s.copy(t / "run", "run_" + name.split()[0] + "_" + name.split()[-1])
            damage(d / "checkpoints" / latest)
            f = {"model": "model.safetensors", "optimizer": "optimizer.safetensors", "state.json": "state.json"}[
                name.split()[0]]
            guard = good + [d]
            s.case(f"checkpoint {name} (--resume)",
                   [*pretrain, "--set", f"run.out_dir={d}", "--set", "optim.max_steps=9", "--resume", "--allow-change",
                "optim.max_steps"],
                   [str(d / "checkpoints" / latest / f), needle], guard)
        d = s.copy(t / "run", "run_flip_score")
        flip_byte(d / "checkpoints" / latest / "model.safetensors", 4000)
        s.case("checkpoint with a flipped byte as rho_score's model", score_into(tok, "c1", d),
               [str(d / "checkpoints" / latest / "model.safetensors"), "checksum"], good + [d])
        d = s.copy(t / "run", "run_shape")
        wide = t / "cases" / "wide.yaml"
        wide.write_text((t / "m.yaml").read_text().replace("hidden_size: 32", "hidden_size: 48"))
        s.case("resume with another model shape",
               [*pretrain, "--set", f"run.out_dir={d}", "--set", f"model.config={wide}", "--resume"],
               [str(d / "checkpoints" / latest), "model.hidden_size: 32 -> 48"], good + [d])
        d = s.copy(t / "run", "run_again")
        s.case("a second run into a folder with checkpoints (no --resume)",
               [*pretrain, "--set", f"run.out_dir={d}"], [str(d), "already holds checkpoints"], good + [d])

        # --- YAML -------------------------------------------------------------------------------------------------
        base = (t / "run.yaml").read_text()
        yaml_cases = [  # (case, text replaced in the good config, its replacement, what the error must say)
            ("unknown key", "keep_checkpoints: 3", "keep_checkpoints: 3, checkpoint_evry: 3",
             [":5:", "train.checkpoint_evry", "unknown key"]),
            ("unknown section", "train: {", "trian: {", [":5:", "trian"]),
            ("wrong type", "log_every: 1", "log_every: often", [":5:", "train.log_every", "wrong type", "often"]),
            ("out-of-range value (optim.lr)", "lr: 0.003", "lr: -0.1", [":4:", "optim.lr", "-0.1"]),
            ("out-of-range value (data.seq_len)", "seq_len: 32", "seq_len: 0", ["data.seq_len"]),
            ("out-of-range value (slm.ratio)", "keep_checkpoints: 3}", "keep_checkpoints: 3}\nslm: {ratio: 1.5}",
             ["slm.ratio", "1.5"]),
            ("invalid choice", "log_every: 1", "log_every: 1, nan_policy: ignore", ["train.nan_policy", "ignore"]),
            ("YAML syntax error", "log_every: 1", "log_every: [1, 2", [":5:", "invalid YAML"]),
            ("duplicate key", "log_every: 1", "log_every: 1, log_every: 2", [":5:", "duplicate key", "log_every"]),
            ("a section that is not a mapping", "optim: {lr: 0.003, min_lr: 0.0003, warmup_steps: 2, max_steps: 6}",
             "optim: [0.003]", [":4:", "optim", "mapping"]),
        ]
        for name, old, new, needles in yaml_cases:
            y = t / "cases" / f"cfg_{len(s.cases)}.yaml"
            assert old in base, old
            y.write_text(base.replace(old, new, 1))
            s.case(f"config: {name}", [b / "rho_pretrain", y, "--set", f"run.out_dir={t / 'out' / 'y'}"],
                   [str(y)] + needles, good, after=lambda: "out_dir created" if (t / "out" / "y").exists() else "")
        s.case("config: --set of an unknown key", [*pretrain, "--set", "optim.learning_rate=0.1"],
               ["(--set)", "optim.learning_rate"], good)
        mbad = t / "cases" / "model_bad.yaml"
        mbad.write_text((t / "m.yaml").read_text() + "num_experts: 8\n")
        s.case("model YAML with an unknown key", [*pretrain, "--set", f"model.config={mbad}", "--set",
                                                  f"run.out_dir={t / 'out' / 'm'}"], [str(mbad), "num_experts"], good)
        s.case("config file missing", [b / "rho_pretrain", t / "nowhere.yaml"], [str(t / "nowhere.yaml")], good)

        # --- missing inputs -----------------------------------------------------------------------------------------
        s.case("rho_score: model folder missing", score_into(tok, "m1", t / "no_model"), [str(t / "no_model")], good)
        s.case("rho_score: token dataset missing", score_into(t / "no_data", "m2"), [str(t / "no_data")], good)
        s.case("rho_pretrain: data.train missing", pretrain_on(t / "no_data", "m3"), [str(t / "no_data")], good)
        s.case("rho_pretrain: slm.reference_losses missing",
               pretrain_on(tok, "m4", *slm, f"slm.reference_losses={t / 'no_losses'}"), [str(t / "no_losses")], good)
        s.case("rho_pretrain: model.init_from missing",
               pretrain_on(tok, "m5", f"model.init_from={t / 'no_init'}"), [str(t / "no_init")], good)

        # --- Parquet and Arrow inputs (more in tests/python/test_tokenize_columnar.py) ---------------------------------
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            pa = None
            print("skip: the Parquet/Arrow cases (pyarrow is not installed)")
        if pa is not None:
            texts = [json.loads(x)["text"] for x in (t / "a.jsonl").read_text().splitlines()]
            pq.write_table(pa.table({"text": texts[:300] + [None] + texts[301:]}), t / "null.parquet",
                           row_group_size=128)
            pq.write_table(pa.table({"body": texts}), t / "nocol.parquet")
            raw = (t / "null.parquet").read_bytes()
            (t / "cut.parquet").write_bytes(raw[: len(raw) // 3])
            with pa.OSFile(str(t / "n.arrow"), "wb") as f, pa.ipc.new_stream(f, pa.schema([("text", pa.int32())])) as w:
                w.write_table(pa.table({"text": pa.array([1, 2], type=pa.int32())}))
            for name, needles in (("null.parquet", ["row 300", "row group 2", "column 'text'", "null"]),
                                  ("nocol.parquet", ["no column 'text'", "'body'"]),
                                  ("cut.parquet", ["not a readable Parquet file"]),
                                  ("n.arrow", ["column 'text' holds int32, not strings"])):
                out = t / "out" / f"tok_{name}"
                s.case(f"rho_tokenize: {name}", [b / "rho_tokenize", t / name, "--out", out, "--tokenizer",
                                                 tok / "tokenizer.model", "--quiet"], [str(t / name), *needles], good,
                       after=lambda out=out: "manifest.json written" if (out / "manifest.json").exists() else "")

        # --- a full disk: files may not grow past a limit -----------------------------------------------------------
        out = t / "out" / "full_tok"
        limit = (tok / "tokenizer.model").stat().st_size + 16  # the tokenizer copy fits, a shard does not
        write_word_corpus(t / "big.jsonl", 12000, seed=2)
        s.case("disk full while rho_tokenize writes a shard", [b / "rho_tokenize", t / "big.jsonl", "--out", out,
                                                                "--tokenizer", tok / "tokenizer.model",
                                                                "--shard-tokens", str(limit), "--quiet"],
               [str(out / "shard_0000"), "File too large"], good, preexec=file_size_limit(limit),
               after=lambda: "manifest.json written" if (out / "manifest.json").exists() else "")
        out = t / "out" / "full_score"
        s.case("disk full while rho_score writes a loss shard", score_into(tok, "full_score"),
               [str(out / "losses-0000"), "File too large"], good, preexec=file_size_limit(6000),
               after=lambda: "manifest.json written" if (out / "manifest.json").exists() else "")
        d = s.copy(t / "run", "run_full")
        keep = {c.name: tree_hashes(c) for c in (d / "checkpoints").iterdir()}
        s.case("disk full while rho_pretrain writes a checkpoint",
               [*pretrain, "--set", f"run.out_dir={d}", "--set", "optim.max_steps=9", "--resume", "--allow-change",
                "optim.max_steps"],
               [str(d / "checkpoints" / "step-00000009"), "File too large"], good, preexec=file_size_limit(20000),
               after=lambda: "" if all(tree_hashes(d / "checkpoints" / n) == h for n, h in keep.items()) and
               latest_checkpoint(d).name == latest else "earlier checkpoints changed or a partial one is visible")

        # --- non-finite loss --------------------------------------------------------------------------------------
        nan_hf = s.copy(t / "hf", "hf_nan")
        data = bytearray((nan_hf / "model.safetensors").read_bytes())
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        name = next(k for k in header if k.endswith("mlp.up_proj.weight"))
        begin = 8 + n + header[name]["data_offsets"][0]
        data[begin:begin + 4] = struct.pack("<f", float("nan"))
        (nan_hf / "model.safetensors").write_bytes(bytes(data))
        s.case("non-finite loss, nan_policy stop", pretrain_on(tok, "n1", f"model.init_from={nan_hf}"),
               ["step 1: non-finite loss", "last good checkpoint is none"], good)
        s.case("non-finite loss, nan_policy skip (exit 0, every step skipped and logged)",
               pretrain_on(tok, "n2", f"model.init_from={nan_hf}", "train.nan_policy=skip"), ["6 skipped"], good,
               expect_rc=0)
        log = [json.loads(x) for x in (t / "out" / "n2" / "log.jsonl").read_text().splitlines()]
        skipped = [x["step"] for x in log if x.get("skipped")]
        if skipped != list(range(1, 7)):
            print(f"FAIL skip policy: log marks steps {skipped} as skipped")
            s.ok = False

        print(f"{len(s.cases)} bad-input cases")
    print("PASS" if s.ok else "FAIL")
    return 0 if s.ok else 1


if __name__ == "__main__":
    sys.exit(main())
