"""ColossalAI's checkpoint layout through the mount.

With colossalai importable (make runs this file in its own venv, since
colossalai pins older torch and transformers), GeneralCheckpointIO itself
saves into the mount and loads back. Without it, the same file names and
index formats are written the way GeneralCheckpointIO writes them and read
back the way it reads them.
"""

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from conftest import assert_same_state

try:
    from colossalai.checkpoint_io import GeneralCheckpointIO
except ImportError:
    GeneralCheckpointIO = None

SHARD_MB = 20


def shard_name(base: str, idx: int) -> str:
    """ColossalAI's shard naming: model.safetensors -> model-00001.safetensors."""
    return base.replace(".bin", f"-{idx + 1:05d}.bin").replace(".safetensors", f"-{idx + 1:05d}.safetensors")


def greedy_shards(items, size_of, max_mb):
    """ColossalAI's StateDictSharder: a new block when the next item would pass max_mb."""
    block, block_mb = OrderedDict(), 0.0
    for key, value in items:
        mb = size_of(value)
        if block and block_mb + mb > max_mb:
            yield block, block_mb
            block, block_mb = OrderedDict(), 0.0
        block[key] = value
        block_mb += mb
    yield block, block_mb


def tensor_mb(t):
    return t.numel() * t.element_size() / 1024 / 1024


class EmulatedCheckpointIO:
    """GeneralCheckpointIO's on-disk behaviour, for machines without colossalai."""

    def save_model(self, model, path, shard, use_safetensors, size_per_shard=SHARD_MB):
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if not shard:
            save_file(sd, path, metadata={"format": "pt"}) if use_safetensors else torch.save(sd, path)
            return
        os.makedirs(path, exist_ok=True)
        base = "model.safetensors" if use_safetensors else "pytorch_model.bin"
        weight_map, total = {}, 0.0
        for i, (block, mb) in enumerate(greedy_shards(sd.items(), tensor_mb, size_per_shard)):
            name = shard_name(base, i)
            target = os.path.join(path, name)
            save_file(dict(block), target, metadata={"format": "pt"}) if use_safetensors else torch.save(block, target)
            weight_map.update({k: name for k in block})
            total += mb
        with open(os.path.join(path, base + ".index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        model.config.save_pretrained(path)

    def load_model(self, model, path):
        path = Path(path)
        if path.is_file():
            sd = load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
            model.load_state_dict(sd)
            return
        index = next(path.glob("*.index.json"))
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        for s in shards:
            model.load_state_dict(load_file(path / s), strict=False)

    def save_optimizer(self, optimizer, path, shard, size_per_shard=SHARD_MB):
        sd = optimizer.state_dict()
        os.makedirs(path, exist_ok=True)
        torch.save(sd["param_groups"], os.path.join(path, "pytorch_optim_group.bin"))
        weight_map, total = {}, 0.0
        state_mb = lambda st: sum(tensor_mb(v) for v in st.values() if torch.is_tensor(v))
        for i, (block, mb) in enumerate(greedy_shards(sd["state"].items(), state_mb, size_per_shard)):
            name = shard_name("pytorch_optim.bin", i)
            torch.save(block, os.path.join(path, name))
            weight_map.update({str(k): name for k in block})
            total += mb
        meta = {"param_groups": "pytorch_optim_group.bin", "total_size": total}
        with open(os.path.join(path, "pytorch_optim.bin.index.json"), "w") as f:
            json.dump({"metadata": meta, "weight_map": weight_map}, f, indent=2)

    def load_optimizer(self, optimizer, path):
        index = json.loads((Path(path) / "pytorch_optim.bin.index.json").read_text())
        groups = torch.load(Path(path) / index["metadata"]["param_groups"], weights_only=True)
        state = {}
        for s in sorted(set(index["weight_map"].values())):
            state.update(torch.load(Path(path) / s, weights_only=True))
        optimizer.load_state_dict({"state": state, "param_groups": groups})

    def save_lr_scheduler(self, scheduler, path):
        torch.save(scheduler.state_dict(), path)

    def load_lr_scheduler(self, scheduler, path):
        scheduler.load_state_dict(torch.load(path, weights_only=True))


def checkpoint_io():
    return GeneralCheckpointIO() if GeneralCheckpointIO else EmulatedCheckpointIO()


def load_optimizer(io, optimizer, path):
    """Real load_optimizer where it works. colossalai 0.5.0 calls
    get_accelerator().synchronize() after loading optimizer shards, which its CPU
    accelerator refuses (RuntimeError); the files are then read the way it
    reads them."""
    try:
        io.load_optimizer(optimizer, str(path))
    except RuntimeError as e:
        if "not supported for cpu accelerator" not in str(e):
            raise
        EmulatedCheckpointIO().load_optimizer(optimizer, path)


def test_colossalai_layout(mount, minilm_dir):
    if os.environ.get("CKPTFS_REQUIRE_COLOSSALAI") and GeneralCheckpointIO is None:
        pytest.fail("colossalai was required but does not import")
    io = checkpoint_io()
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    batch = {"input_ids": torch.tensor([[101, 7592, 2088, 102]])}
    for _ in range(2):
        model(**batch).last_hidden_state.pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()

    run = mount / "colossal-run"
    run.mkdir(exist_ok=True)
    io.save_model(model, str(run / "model"), shard=True, use_safetensors=True, size_per_shard=SHARD_MB)
    io.save_model(model, str(run / "model.safetensors"), shard=False, use_safetensors=True)
    io.save_model(model, str(run / "model-bin"), shard=True, use_safetensors=False, size_per_shard=SHARD_MB)
    io.save_optimizer(opt, str(run / "optimizer"), shard=True, size_per_shard=SHARD_MB)
    io.save_lr_scheduler(sched, str(run / "lr_scheduler.pt"))

    files = sorted(os.listdir(run / "model"))
    assert "model.safetensors.index.json" in files and "model-00002.safetensors" in files, files
    assert "pytorch_optim_group.bin" in os.listdir(run / "optimizer")
    files = sorted(os.listdir(run / "model-bin"))
    assert "pytorch_model.bin.index.json" in files and "pytorch_model-00002.bin" in files, files

    want = model.state_dict()
    for source in [run / "model", run / "model.safetensors",
                   run / "model@single" / "model.safetensors", run / "model@shards=30MB",
                   run / "model-bin@single" / "model.safetensors", run / "model-bin@shards=30MB"]:
        fresh = AutoModel.from_pretrained(minilm_dir)
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        io.load_model(fresh, str(source))
        assert_same_state(fresh.state_dict(), want)

    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    load_optimizer(io, opt2, run / "optimizer")
    got, ref = opt2.state_dict(), opt.state_dict()
    assert got["param_groups"] == ref["param_groups"]
    for pid, st in ref["state"].items():
        for k, v in st.items():
            assert torch.equal(got["state"][pid][k], v), (pid, k)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    io.load_lr_scheduler(sched2, str(run / "lr_scheduler.pt"))
    assert sched2.state_dict() == sched.state_dict()
