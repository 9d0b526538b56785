"""Writes the DCP checkpoints layout/dcp's tests read, with the torch it
runs under: python gen.py OUT [--ranks N] [--format torch_save|safetensors|hf]
[--files K].

Each checkpoint is saved from N gloo ranks on CPU as DTensors: sharded on
dim 0, on dim 1, unevenly, replicated, in fp32 and bf16, nested as
{"model": ..., "optim": ...} with a non-tensor "step". reference.safetensors
next to it holds the full model tensors, as the views must assemble them.
With --ranks 1 there is no process group and every tensor is whole.

--format hf saves the model tensors alone (torch's HF writer takes tensors
only) with HuggingFaceStorageWriter(save_distributed=True): a safetensors
file of its pieces per rank, shard-RRRRR-model-00001-of-00001.safetensors,
and no .metadata; a 2-row tensor split 4 ways adds empty pieces. --files K
spreads the tensors over K files per rank (fqn_to_index_mapping). These
are layout/view's fixtures (view/testdata/hf-*): views assemble them.
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp


def model_tensors():
    g = torch.Generator().manual_seed(7)
    return {
        "embed.weight": torch.randn(10, 6, generator=g),  # dim 0, even
        "layer.0.weight": torch.randn(4, 6, generator=g).to(torch.bfloat16),  # dim 1
        "layer.0.bias": torch.randn(7, generator=g),  # dim 0, uneven
        "layer.1.weight": torch.randn(3, 5, 2, generator=g),  # dim 1 of 3, uneven
        "norm.weight": torch.randn(6, generator=g),  # replicated
        "scale": torch.tensor(2.5),  # a scalar, replicated
    }


PLACEMENT = {"embed.weight": 0, "layer.0.weight": 1, "layer.0.bias": 0, "layer.1.weight": 1, "tok.weight": 0}


def state(world, rank, fmt="torch_save"):
    full = model_tensors()
    if fmt == "hf":
        full["tok.weight"] = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    if world == 1:
        model = full
    else:
        from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

        mesh = init_device_mesh("cpu", (world,))
        model = {}
        for name, t in full.items():
            dim = PLACEMENT.get(name)
            placement = [Replicate()] if dim is None else [Shard(dim)]
            model[name] = distribute_tensor(t, mesh, placement)
    optim = {"state.embed.weight.exp_avg": full["embed.weight"] * 0.5, "param_groups.lr": 0.001}
    return {"model": model, "optim": optim, "step": 3}, full


def save(rank, world, out, fmt, files):
    if world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        dist.init_process_group("gloo", rank=rank, world_size=world)
    sd, full = state(world, rank, fmt)
    if fmt == "hf":
        from torch.distributed.checkpoint import HuggingFaceStorageWriter

        mapping = {k: 1 + i % files for i, k in enumerate(sd["model"])} if files > 1 else None
        writer = HuggingFaceStorageWriter(out, save_distributed=True, fqn_to_index_mapping=mapping)
        dcp.save(sd["model"], storage_writer=writer)
    else:
        kwargs = {}
        if fmt != "torch_save":
            from torch.distributed.checkpoint.filesystem import SerializationFormat

            kwargs["serialization_format"] = SerializationFormat.SAFETENSORS
        dcp.save(sd, storage_writer=dcp.FileSystemWriter(out, **kwargs))
    if rank == 0:
        from safetensors.torch import save_file

        save_file(full, os.path.join(out, "reference.safetensors"), metadata={"format": "pt"})
    if world > 1:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--format", default="torch_save")
    ap.add_argument("--files", type=int, default=1)
    a = ap.parse_args()
    os.environ["MASTER_PORT"] = str(29500 + os.getpid() % 1000)
    if a.ranks == 1:
        save(0, 1, a.out, a.format, a.files)
    else:
        mp.spawn(save, args=(a.ranks, a.out, a.format, a.files), nprocs=a.ranks)
    print(torch.__version__, a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
