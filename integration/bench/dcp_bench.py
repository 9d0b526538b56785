"""make bench-dcp: a ~1 GiB checkpoint saved by torch.distributed.checkpoint from
4 gloo ranks, made loadable as an HF folder two ways, side by side in one run:
the consolidation job users run today (dcp_to_torch_save, then the state dict
written as model.safetensors) on local disk, against DIR@single through the
mount. Then the same state dict saved by torch's distributed safetensors writer
(HuggingFaceStorageWriter(save_distributed=True)): torch's own
consolidate_safetensors_files on local disk against DIR@single. Prints one
table and writes it to integration/bench/out/dcp.md."""

import gc
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mount_bench import OUT, Mount, drop_caches, in_scratch, read_all, row, rows, timed

MIB = 1 << 20
HIDDEN, FFN, LAYERS, VOCAB = 2048, 5504, 8, 32000

CONSOLIDATE = """
import resource, sys, torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
dcp_dir, pt, out = sys.argv[1:]
dcp_to_torch_save(dcp_dir, pt)
sd = torch.load(pt, weights_only=True)
save_file({k: v.contiguous() for k, v in sd.items()}, out, metadata={"format": "pt"})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

# torch's job for its distributed safetensors: every tensor into one file,
# as HuggingFaceStorageWriter(enable_consolidation=True) runs it.
CONSOLIDATE_HF = """
import glob, resource, sys
from safetensors import safe_open
from torch.distributed.checkpoint._consolidate_hf_safetensors import consolidate_safetensors_files
pieces, out = sys.argv[1:]
names = set()
for f in glob.glob(pieces + "/*.safetensors"):
    with safe_open(f, framework="pt") as st:
        names.update(st.keys())
consolidate_safetensors_files(pieces, out, fqn_to_index_mapping=dict.fromkeys(names, 1))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def model_tensors(layers=LAYERS):
    """A Llama-shaped bf16 state dict of about 1 GiB, the same on every rank."""
    g = torch.Generator().manual_seed(0)
    sd = {"embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=g).bfloat16()}
    for i in range(layers):
        p = f"layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{n}.weight"] = torch.randn(HIDDEN, HIDDEN, generator=g).bfloat16()
        for n, shape in (("gate_proj", (FFN, HIDDEN)), ("up_proj", (FFN, HIDDEN)), ("down_proj", (HIDDEN, FFN))):
            sd[p + f"mlp.{n}.weight"] = torch.randn(*shape, generator=g).bfloat16()
        sd[p + "input_layernorm.weight"] = torch.ones(HIDDEN).bfloat16()
    return sd


def save_ranks(rank, world, port, dirs, hf_dirs):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    # Tensor-parallel style: column-parallel on dim 0, row-parallel on dim 1.
    sd = {}
    for k, v in model_tensors().items():
        place = Replicate() if v.dim() == 1 else Shard(1) if ("o_proj" in k or "down_proj" in k) else Shard(0)
        sd[k] = distribute_tensor(v, mesh, [place])
    for d in dirs:
        dcp.save(sd, checkpoint_id=d)
    for d in hf_dirs:
        dcp.save(sd, storage_writer=HuggingFaceStorageWriter(d, save_distributed=True))
    dist.destroy_process_group()


TILE_RANKS, TILE_LAYERS = 8, 4


def save_tile_ranks(rank, world, port, out):
    """Every 2-D tensor split on dim 1 across world ranks (a row of a bf16
    tensor 2048 wide is 8 parts of 512 bytes), each rank holding only its
    parts, as tensor parallelism leaves them."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    sd = {}
    for k, v in model_tensors(TILE_LAYERS).items():
        if v.dim() == 1:
            sd[k] = DTensor.from_local(v, mesh, [Replicate()])
        else:
            sd[k] = DTensor.from_local(v.chunk(world, dim=1)[rank].contiguous(), mesh, [Shard(1)])
    dcp.save(sd, checkpoint_id=out)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def du(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def load_all(path):
    from safetensors.torch import load_file

    return load_file(path)


def main():
    in_scratch("ckptfs-bench-dcp-", bench)
    lines = ["| metric | ckptfs | consolidation job | unit | ckptfs/job | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "" if r["met"] is None else "yes" if r["met"] else "no"
        lines.append(f"| {r['metric']} | {r['ckptfs']:.2f} | {r['local']:.2f} | {r['unit']} | {r['ratio']:.2f} | "
                     f"{r['target'] or ''} | {met} |")
    md = "\n".join(lines)
    print(md)
    (OUT / "dcp.md").write_text(md + "\n")


def bench(tmp: Path):
    local, local_hf = tmp / "local" / "ck", tmp / "local" / "hf-pieces"
    local.parent.mkdir()
    m = Mount(tmp / "store", tmp / "mnt")
    try:
        print("saving a ~1 GiB checkpoint from 4 ranks, to local disk and into the mount, as DCP and as torch's "
              "distributed safetensors", flush=True)
        mp.spawn(save_ranks, args=(4, free_port(), [str(local), str(m.mnt / "ck")], [str(local_hf), str(m.mnt / "hf")]),
                 nprocs=4)
        size = du(local)
        print(f"DCP checkpoint: {size / MIB:.0f} MiB in {len(list(local.glob('*.distcp')))} files", flush=True)

        # The consolidation job, on local disk.
        job = tmp / "local" / "hf"
        job.mkdir()
        drop_caches()
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CONSOLIDATE, str(local), str(job / "ck.pt"), str(job / "model.safetensors")],
                             check=True, capture_output=True, text=True).stdout
        t_job = time.perf_counter() - t
        job_rss = int(out.split()[-1]) / 1024
        job_disk = du(job)
        (job / "ck.pt").unlink()
        drop_caches()
        t_load_local = timed(load_all, job / "model.safetensors")

        # The view: nothing to run; the first look plans it.
        m.close()
        m = Mount(tmp / "store", tmp / "mnt")
        drop_caches()
        before = du(tmp / "store")
        print("store before:", {p.name: du(p) for p in (tmp / "store").iterdir() if p.is_dir()}, flush=True)
        t_plan = timed(lambda: (m.mnt / "ck@single" / "model.safetensors").stat())
        t_load_view = timed(load_all, m.mnt / "ck@single" / "model.safetensors")
        rss = m.rss()["VmHWM"] / 1024
        extra = du(tmp / "store") - before
        print("store growth while the view was read:", {p.name: du(p) for p in (tmp / "store").iterdir() if p.is_dir()}, flush=True)

        got, want = load_all(m.mnt / "ck@single" / "model.safetensors"), load_all(job / "model.safetensors")
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), "view differs from the job's output"
        del got, want  # their storage maps the view file: the mount is busy until they go
        gc.collect()
    finally:
        m.close()
    hf = bench_hf(tmp, local_hf)
    tile = bench_tile(tmp)
    row("time to a loadable HF folder (s)", t_plan, t_job, "s", higher_is_better=False)
    row("time to the full state dict in memory, cold (s)", t_plan + t_load_view, t_job + t_load_local, "s", higher_is_better=False)
    row("load_file of the HF folder alone, cold (s)", t_load_view, t_load_local, "s", higher_is_better=False)
    row("extra disk (MiB; ckptfs: the hot copy of a view read twice, optional)", extra / MIB, job_disk / MIB, "MiB", higher_is_better=False)
    row("peak memory: ckptfs daemon vs the job (MiB)", rss, job_rss, "MiB", higher_is_better=False)
    what = "distributed safetensors:"
    row(f"{what} time to a loadable HF folder (s)", hf["plan"], hf["job"], "s", higher_is_better=False)
    row(f"{what} time to the full state dict in memory, cold (s)", hf["plan"] + hf["load_view"], hf["job"] + hf["load_job"], "s",
        higher_is_better=False)
    row(f"{what} load_file of the HF folder alone, cold (s)", hf["load_view"], hf["load_job"], "s", higher_is_better=False)
    row(f"{what} extra disk (MiB)", hf["extra"] / MIB, hf["job_disk"] / MIB, "MiB", higher_is_better=False)
    row(f"{what} peak memory, daemon vs the job (MiB)", hf["rss"], hf["job_rss"], "MiB", higher_is_better=False)
    row(f"DCP split {TILE_RANKS} ways on dim 1: @single read cold (MB/s; job column: the same tensors as one "
        "safetensors file, its @single)", tile["tiles"], tile["one"], "MB/s", target=0.8)


def bench_hf(tmp: Path, pieces: Path):
    """torch's consolidation job for its distributed safetensors, on local
    disk, against the view of the same pieces through a fresh mount."""
    print(f"distributed safetensors: {du(pieces) / MIB:.0f} MiB in {len(list(pieces.glob('*.safetensors')))} files",
          flush=True)
    job = tmp / "local" / "hf-job"
    job.mkdir()
    drop_caches()
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CONSOLIDATE_HF, str(pieces), str(job)],
                         check=True, capture_output=True, text=True).stdout
    hf = {"job": time.perf_counter() - t, "job_rss": int(out.split()[-1]) / 1024, "job_disk": du(job)}
    drop_caches()
    hf["load_job"] = timed(load_all, job / "model-00001-of-00001.safetensors")

    m = Mount(tmp / "store", tmp / "mnt")
    try:
        drop_caches()
        before = du(tmp / "store")
        view = m.mnt / "hf@single" / "model.safetensors"
        hf["plan"] = timed(view.stat)
        hf["load_view"] = timed(load_all, view)
        hf["rss"] = m.rss()["VmHWM"] / 1024
        hf["extra"] = du(tmp / "store") - before
        got, want = load_all(view), load_all(job / "model-00001-of-00001.safetensors")
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), "view differs from torch's job"
        del got, want  # their storage maps the view file: the mount is busy until they go
        gc.collect()
    finally:
        m.close()
    return hf


def bench_tile(tmp: Path):
    """The read rate of DIR@single of a DCP checkpoint whose every 2-D tensor
    is split TILE_RANKS ways on dim 1 (each row of the view interleaves
    TILE_RANKS parts, one a rank), against DIR@single of the same tensors
    saved as one safetensors file, each read whole and cold (page cache
    dropped) through a fresh mount with no hot copies."""
    from safetensors.torch import save_file

    m = Mount(tmp / "store-tile", tmp / "mnt")
    try:
        (m.mnt / "tiles").mkdir()
        (m.mnt / "one").mkdir()
        mp.spawn(save_tile_ranks, args=(TILE_RANKS, free_port(), str(m.mnt / "tiles")), nprocs=TILE_RANKS)
        save_file(model_tensors(TILE_LAYERS), str(m.mnt / "one" / "model.safetensors"), metadata={"format": "pt"})
    finally:
        m.close()
    m = Mount(tmp / "store-tile", tmp / "mnt", "--hot-size", "0")
    out = {}
    try:
        for name in ("tiles", "one"):
            view = m.mnt / f"{name}@single" / "model.safetensors"
            size = view.stat().st_size
            drop_caches()
            cpu = m.cpu_s()
            out[name] = size / timed(read_all, view) / 1e6
            out[name + "_cpu_per_gb"] = (m.cpu_s() - cpu) / (size / 1e9)
        print(f"split {TILE_RANKS} ways on dim 1: {size / MIB:.0f} MiB; MB/s and daemon CPU-s per GB {out}", flush=True)
    finally:
        m.close()
    return out


if __name__ == "__main__":
    main()
