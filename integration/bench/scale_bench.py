"""make bench-scale: what a change costs in a big store.

A store of N one-chunk files (default 1,000,000, of 200 random bytes each,
1,000 a folder, one checkpoint), built offline by `ckptfs import`, then
mounted:

1. `ckptfs mount` until the mount is live;
2. the daemon's CPU for the first change after the mount, which starts the
   store's one full reclaim pass (in the background: the mount serves
   meanwhile);
3. one create (200 bytes, closed) and one rm per second for 60 s through
   the mount: the daemon's CPU over that time, in % of one core, from
   /proc/PID/stat (user + system);
4. `ckptfs ls`, `ckptfs gc` and `ckptfs stat big` against the live mount,
   each the median of 3;
5. the daemon's RssAnon, and `ckptfs ls` of the store unmounted.

CKPTFS_SCALE_FILES=N sets the size; CKPTFS_SCALE_KEEP=DIR keeps the store
there and reuses it (building it takes about 25 minutes here).
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "out"
BIN = os.environ.get("CKPTFS_BIN", str(ROOT / "bin" / "ckptfs"))
FILES = int(os.environ.get("CKPTFS_SCALE_FILES", "1000000"))
PER_FOLDER = 1000
TICK = os.sysconf("SC_CLK_TCK")


def cli(store: Path, *args) -> str:
    return subprocess.run([BIN, "--store", str(store), *args], check=True, capture_output=True, text=True).stdout


def timed(fn, *a) -> float:
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


def median_of(n, fn, *a) -> float:
    return statistics.median(timed(fn, *a) for _ in range(n))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def build(work: Path) -> Path:
    store, src = work / "store", work / "src"
    if (work / "complete").exists():
        return store
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    print(f"writing {FILES:,} files of 200 bytes", flush=True)
    for d in range((FILES + PER_FOLDER - 1) // PER_FOLDER):
        folder = src / f"d{d:04d}"
        folder.mkdir(parents=True)
        for i in range(min(PER_FOLDER, FILES - d * PER_FOLDER)):
            (folder / f"f{i:04d}").write_bytes(os.urandom(200))
    print("importing them", flush=True)
    t = timed(cli, store, "import", str(src), "big")
    print(f"imported in {t:.0f} s", flush=True)
    shutil.rmtree(src)
    (work / "complete").write_text(f"{FILES}\n")
    return store


def wait_idle(pid: int, quiet=3, timeout=600) -> float:
    """CPU seconds the daemon spends until it has used under 2% of a core
    for quiet seconds running."""
    start = last = cpu_seconds(pid)
    deadline, still = time.time() + timeout, 0
    while time.time() < deadline and still < quiet:
        time.sleep(1)
        now = cpu_seconds(pid)
        still = still + 1 if now - last < 0.02 else 0
        last = now
    return last - start


def churn(mnt: Path, seconds=60):
    d = mnt / "churn"
    d.mkdir(exist_ok=True)
    prev = None
    t0 = time.monotonic()
    for i in range(seconds):
        p = d / f"f{i}"
        p.write_bytes(os.urandom(200))
        if prev:
            prev.unlink()
        prev = p
        time.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
    prev.unlink()


def main():
    keep = os.environ.get("CKPTFS_SCALE_KEEP")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="ckptfs-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    store = build(work)
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    rows = []
    try:
        rows.append(("mount until live", timed(cli, store, "mount", str(mnt)), "s", "< 1"))
        pid = int((store / "mount.pid").read_text().split()[0])
        # The first change that lets a chunk go (an rm of an imported file;
        # a file removed before it settled names none) starts the store's
        # one full reclaim pass (it counts every chunk's references), in
        # the background, --reclaim-after (5 s) later.
        before = cpu_seconds(pid)
        next(p for p in sorted((mnt / "big" / "d0000").iterdir())).unlink()
        wait_idle(pid, quiet=10)  # longer than --reclaim-after: the pass has run
        rows.append(("daemon CPU, the first rm after the mount (its full reclaim pass, in the background)",
                     cpu_seconds(pid) - before, "s", ""))
        before, t = cpu_seconds(pid), time.monotonic()
        churn(mnt)
        cpu = (cpu_seconds(pid) - before) / (time.monotonic() - t) * 100
        rows.append(("daemon CPU, 1 create + 1 rm a second for 60 s", cpu, "% of a core", "< 1"))
        rows.append(("ckptfs ls, live", median_of(3, cli, store, "ls"), "s", "< 1"))
        rows.append(("ckptfs gc, live", median_of(3, cli, store, "gc"), "s", "< 1"))
        rows.append((f"ckptfs stat big, live (reads its {FILES:,} records)", median_of(3, cli, store, "stat", "big"), "s", ""))
        anon = next(int(l.split()[1]) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("RssAnon"))
        rows.append(("daemon RssAnon after that", anon / 1024, "MiB", ""))
    finally:
        subprocess.run([BIN, "--store", str(store), "umount", str(mnt)], check=False)
    rows.append(("ckptfs ls, unmounted (opens the store)", timed(cli, store, "ls"), "s", ""))
    table = [f"| {FILES:,} one-chunk files | value | unit | target |", "|---|---|---|---|"]
    table += [f"| {name} | {v:.3g} | {unit} | {target} |" for name, v, unit, target in rows]
    text = "\n".join(table) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "scale.md").write_text(text)
    if not keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
