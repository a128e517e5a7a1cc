"""TensorBoard: rho_pretrain's event files, read back with TensorBoard's own record reader (which checks every
CRC-32C) and its Event protobuf, hold exactly what log.jsonl holds: every number of each train line (train/<key>,
slm/<key>), each eval line's loss, ppl, reference loss and gap (eval/<set>/<key>), and the SLM score histograms,
whose kept share equals the step's selected fraction. A run killed with SIGKILL after a checkpoint and resumed
leaves one event file with each step once, and the same losses as the uninterrupted run. Two data-parallel
processes selecting over the global batch log histograms over every rank's tokens (the counts of one process over
the same batch) and one event file (rank 0's). train.tensorboard false writes none.

  test_tensorboard.py --bin BUILD/apps
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_helpers import run, tiny_tokens_and_model  # noqa: E402

try:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
except ImportError as e:
    print(f"SKIP: PyPI tensorboard is not installed ({e}); scripts/setup.sh installs it")
    sys.exit(0)

# STEPS for the runs check_run reads (the kill after step 10 has 29 steps of slack before the end); the one- and
# two-process comparison runs SHORT steps, as its tolerances on rounding differences that grow step by step assume.
STEPS, SHORT, CHECKPOINT, HISTOGRAM = 40, 12, 4, 3


def launch_two(cmd):
    """cmd as 2 data-parallel processes (torchrun-style variables, Gloo on loopback); waits for both."""
    from test_dist import launch, wait_all  # noqa: E402
    wait_all(launch(cmd, 2), " ".join(map(str, cmd)))


def event_files(run_dir: Path):
    return sorted(p for p in run_dir.iterdir() if "tfevents" in p.name)


def read_events(path: Path):
    """Every Event of a file; a failed CRC or a torn record raises."""
    reader = pywrap_tensorflow.PyRecordReader_New(str(path))
    out = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        out.append(event_pb2.Event.FromString(reader.record()))


def by_tag(events):
    """tag -> [(step, value or HistogramProto)] in file order."""
    tags = {}
    for e in events:
        for v in e.summary.value:
            tags.setdefault(v.tag, []).append((e.step, v.histo if v.HasField("histo") else v.simple_value))
    return tags


def f32(x):
    import struct
    return struct.unpack("f", struct.pack("f", x))[0]


def expected(log):
    """tag -> {step: value} from log.jsonl lines, as the writer maps them (floats rounded to float32)."""
    tags = {}
    slm = {"selected_fraction", "kept_score", "dropped_score"}
    for j in log:
        if j["type"] == "train":
            for k, v in j.items():
                if k in ("type", "step", "time", "skipped") or not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                tags.setdefault(f"{'slm' if k in slm else 'train'}/{k}", {})[j["step"]] = f32(v)
        elif j["type"] == "eval":
            for k in ("loss", "ppl", "reference_loss", "gap"):
                if k in j:
                    tags.setdefault(f"eval/{j['set']}/{k}", {})[j["step"]] = f32(j[k])
    return tags


class Suite:
    def __init__(self):
        self.failed = 0

    def check(self, cond, msg):
        print(("PASS " if cond else "FAIL ") + msg, flush=True)
        self.failed += 0 if cond else 1


def check_run(s: Suite, run_dir: Path, what: str):
    files = event_files(run_dir)
    s.check(len(files) == 1, f"{what}: one event file ({[f.name for f in files]})")
    events = read_events(files[0])
    s.check(events[0].file_version == "brain.Event:2", f"{what}: the file opens with its version event")
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    got, want = by_tag(events), expected(log)
    scalar_tags = {t for t, pts in got.items() if not hasattr(pts[0][1], "bucket")}
    s.check(scalar_tags == set(want), f"{what}: scalar tags are the log's numbers: {sorted(scalar_tags)}")
    dupes = {t: [p[0] for p in pts] for t, pts in got.items() if len({p[0] for p in pts}) != len(pts)}
    s.check(not dupes, f"{what}: each tag has each step once {list(dupes)[:3]}")
    mismatch = [(t, st) for t in want for st, v in want[t].items()
                if dict(got.get(t, [])).get(st) != v and not (math.isnan(v) and math.isnan(dict(got[t]).get(st, 0)))]
    s.check(not mismatch and sum(len(v) for v in want.values()) > 0,
            f"{what}: {sum(len(v) for v in want.values())} values equal the log's {mismatch[:3]}")
    # Histograms: the log's, bucket counts summing to their count; kept / all = the step's selected fraction.
    hist_lines = [j for j in log if j["type"] == "histogram"]
    steps = sorted({j["step"] for j in hist_lines})
    s.check(steps == list(range(HISTOGRAM, STEPS + 1, HISTOGRAM)),
            f"{what}: score histograms every {HISTOGRAM} steps: {steps}")
    train = {j["step"]: j for j in log if j["type"] == "train"}
    bad = []
    for j in hist_lines:
        h = dict(got.get(j["tag"], [])).get(j["step"])
        if h is None or list(h.bucket) != j["counts"] or list(h.bucket_limit) != j["limits"] or h.num != j["num"] \
                or abs(sum(h.bucket) - h.num) > 0 or h.min != j["min"] or h.max != j["max"]:
            bad.append((j["tag"], j["step"]))
    s.check(hist_lines and not bad, f"{what}: {len(hist_lines)} histograms equal the log's, counts sum to num {bad[:3]}")
    ratios = []
    for st in steps:
        h = {j["tag"]: j for j in hist_lines if j["step"] == st}
        ratios.append((st, h["slm/score_kept"]["num"] / h["slm/score"]["num"], train[st]["selected_fraction"]))
    s.check(all(abs(a - b) < 1e-9 for _, a, b in ratios),
            f"{what}: kept / all scores = the step's selected fraction: {[(st, round(a, 4)) for st, a, _ in ratios]}")
    # What TensorBoard's own loader (the one its dashboards read through) makes of the folder.
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    s.check(set(tags["scalars"]) == scalar_tags and set(tags["histograms"]) == {"slm/score", "slm/score_kept"}
            and [e.step for e in acc.Scalars("train/loss")] == list(range(1, STEPS + 1)),
            f"{what}: TensorBoard's EventAccumulator sees the scalars, both histograms and train/loss at steps 1..{STEPS}")
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    b = Path(ap.parse_args().bin)
    os.environ["OMP_NUM_THREADS"] = "1"
    s = Suite()
    with tempfile.TemporaryDirectory(prefix="rho_tensorboard_") as tmp:
        t = Path(tmp)
        tiny_tokens_and_model(b, t)

        def config(name, extra="", slm_extra="", batch=4, steps=STEPS):
            path = t / f"{name}.yaml"
            path.write_text(f"""run: {{out_dir: {t / name}, seed: 5, device: cpu, dist_timeout: 60}}
model: {{config: {t / 'm.yaml'}}}
data: {{train: {t / 'tok'}, seq_len: 32, batch_size: {batch}, eval: {{held: {t / 'tok'}}}, eval_every: 4, eval_batches: 2}}
optim: {{lr: 0.003, min_lr: 0.0003, warmup_steps: 3, max_steps: {steps}}}
train: {{stage: slm, log_every: 1, checkpoint_every: {CHECKPOINT}, histogram_every: {HISTOGRAM}{extra}}}
slm: {{ratio: 0.6, reference_model: [{t / 'ref'}]{slm_extra}}}
""")
            return path

        run(b / "rho_pretrain", config("full"))
        full = check_run(s, t / "full", "uninterrupted")

        # Killed once the log shows a step past the second checkpoint, then resumed.
        cmd = [str(b / "rho_pretrain"), str(config("killed"))]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = t / "killed" / "log.jsonl"
        target = 2 * CHECKPOINT + 2
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            if log.exists() and any(json.loads(x).get("step", 0) >= target
                                    for x in log.read_text().splitlines() if x.endswith("}")):
                break
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        before = [json.loads(x)["step"] for x in log.read_text().splitlines() if x.endswith("}")]
        s.check(p.returncode == -signal.SIGKILL and 2 * CHECKPOINT < max(before) < STEPS,
                f"killed after step {max(before)}, past checkpoint {2 * CHECKPOINT}, before the end")
        run(*cmd, "--resume")
        resumed = check_run(s, t / "killed", "killed and resumed")
        same = all(dict(resumed[tag]) == dict(full[tag]) for tag in ("train/loss", "train/grad_norm", "slm/kept_score",
                                                                   "eval/held/loss"))
        s.check(same, "killed and resumed: train/loss, train/grad_norm, slm/kept_score and eval/held/loss equal the "
                "uninterrupted run's at every step")

        # Two processes, each half the batch, selecting over the global batch: the histograms cover every rank's
        # tokens (the same counts as one process over the whole batch, up to scores on a bucket edge), and only
        # rank 0 writes an event file.
        one = config("one", slm_extra=", scope: global", steps=SHORT)
        two = config("two", slm_extra=", scope: global", batch=2, steps=SHORT)
        run(b / "rho_pretrain", one)
        launch_two([b / "rho_pretrain", two])

        def hists(d):
            return {(j["step"], j["tag"]): j for j in map(json.loads, (d / "log.jsonl").read_text().splitlines())
                    if j["type"] == "histogram"}
        h1, h2 = hists(t / "one"), hists(t / "two")
        same_num = h1.keys() == h2.keys() and all(h1[k]["num"] == h2[k]["num"] for k in h1)
        close = all(sum(abs(a - c) for a, c in zip(h1[k]["counts"], h2[k]["counts"])) <= 4 and
                    abs(h1[k]["min"] - h2[k]["min"]) < 1e-3 and abs(h1[k]["max"] - h2[k]["max"]) < 1e-3 for k in h1)
        s.check(same_num and close and len(event_files(t / "two")) == 1,
                f"2 processes, global scope: {len(h2)} histograms with the same token counts as 1 process "
                f"({[h2[k]['num'] for k in sorted(h2)][:4]}...), bucket counts and range alike, one event file")

        run(b / "rho_pretrain", config("off", ", tensorboard: false", steps=SHORT))
        s.check(not event_files(t / "off"), "train.tensorboard false: no event file")
        shutil.rmtree(t / "off")
    if s.failed:
        sys.exit(f"{s.failed} check(s) failed")
    print("all TensorBoard checks passed")


if __name__ == "__main__":
    main()
