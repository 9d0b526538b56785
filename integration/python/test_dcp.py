"""torch.distributed.checkpoint (DCP) saves straight into the mount, from 2
and 4 gloo ranks on CPU, and the views serve them as HF folders: from_pretrained
on DIR@single and DIR@shards=20MB gives the reference weights and embeddings bit
for bit, with no consolidation job."""

import os
import pickle
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open
from transformers import AutoModel

from conftest import assert_same_state, embed, unique_with_twin

HF_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]
FIXTURE = Path(__file__).resolve().parents[2] / "layout" / "testdata" / "dcp" / "2ranks"

# Each case: world size, how the model is sharded, dtype, serialization
# format, and whether the state dict is nested {"model", "optim"}.
CASES = {
    "fsdp2-4": (4, "fsdp2", torch.float32, "torch_save", True),
    "dtensor-bf16-st-4": (4, "dtensor", torch.bfloat16, "safetensors", False),
    "dtensor-2": (2, "dtensor", torch.float32, "torch_save", True),
}


def placement(name, t):
    """Mixed placements: the vocab on dim 0 (uneven on 4 ranks), the token
    types on dim 0 (empty shards on 4 ranks), the attention's query and
    output and the intermediate weights on dim 1, the other linear weights
    and the biases on dim 0, LayerNorms replicated."""
    from torch.distributed.tensor import Replicate, Shard

    if "LayerNorm" in name or t.dim() == 0:
        return Replicate()
    if t.dim() == 2 and any(p in name for p in ("query", "attention.output", "intermediate")):
        return Shard(1)
    return Shard(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_ranks(rank, world, port, minilm, root, cases):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.filesystem import FileSystemWriter, SerializationFormat
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    try:
        for name in cases:
            _, kind, dtype, fmt, nested = CASES[name]
            model = AutoModel.from_pretrained(minilm).to(dtype)
            if kind == "fsdp2":
                from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
                from torch.distributed.fsdp import fully_shard

                for layer in model.encoder.layer:
                    fully_shard(layer, mesh=mesh)
                fully_shard(model, mesh=mesh)
                # One real AdamW step with lr=0: optimizer state, weights unchanged.
                opt = torch.optim.AdamW(model.parameters(), lr=0.0)
                model(input_ids=torch.randint(0, 1000, (2, 16))).last_hidden_state.sum().backward()
                opt.step()
                sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
            else:
                weights = {k: distribute_tensor(v, mesh, [placement(k, v)]) for k, v in model.state_dict().items()}
                sd = weights
                if nested:
                    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
                    model(input_ids=torch.randint(0, 1000, (2, 16))).last_hidden_state.sum().backward()
                    opt.step()
                    sd = {"model": weights, "optim": opt.state_dict(), "step": 1}
            writer = FileSystemWriter(os.path.join(root, name), serialization_format=(
                SerializationFormat.SAFETENSORS if fmt == "safetensors" else SerializationFormat.TORCH_SAVE))
            dcp.save(sd, storage_writer=writer)
            if fmt == "torch_save":
                # dcp.load of the files as written still works, through the mount.
                want = sd["model"] if nested else sd
                got = {k: torch.zeros_like(v) for k, v in want.items()}
                dcp.load({"model": got} if nested else got, checkpoint_id=os.path.join(root, name))
                for k, v in want.items():
                    assert torch.equal(got[k].full_tensor(), v.full_tensor()), (name, k)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def dcp_saves(mount, minilm_dir):
    """The CASES saved into the mount, with the model's config and tokenizer
    copied next to them."""
    for world in sorted({c[0] for c in CASES.values()}):
        names = [n for n, c in CASES.items() if c[0] == world and not (mount / n / ".metadata").exists()]
        if names:
            mp.spawn(save_ranks, args=(world, free_port(), str(minilm_dir), str(mount.dir), names), nprocs=world)
    for name in CASES:
        for f in HF_FILES:
            shutil.copy(minilm_dir / f, mount / name / f)
    return CASES


def reference_for(reference, minilm_dir, dtype):
    if dtype == torch.float32:
        return reference["state"], reference["embeddings"]
    model = AutoModel.from_pretrained(minilm_dir).to(dtype).eval()
    return model.state_dict(), embed(model, reference["tokenizer"])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("view", ["@single", "@shards=20MB"])
def test_dcp_views_from_pretrained(mount, dcp_saves, reference, minilm_dir, case, view):
    world, kind, dtype, fmt, nested = CASES[case]
    files = sorted(p.name for p in (mount / case).iterdir())
    assert ".metadata" in files and sum(f.endswith(".distcp") for f in files) >= world, files
    path = mount / f"{case}{view}"
    if view != "@single":
        shards = sorted(p.name for p in path.glob("model-*.safetensors"))
        assert len(shards) > 1 and (path / "model.safetensors.index.json").exists(), shards
    listed = sorted(p.name for p in path.iterdir())
    assert not any(n.endswith(".distcp") or n == ".metadata" for n in listed), listed
    want, want_emb = reference_for(reference, minilm_dir, dtype)
    model = AutoModel.from_pretrained(path).eval()
    assert model.dtype == dtype
    assert_same_state(model.state_dict(), want)
    assert torch.equal(embed(model, reference["tokenizer"]), want_emb)


@pytest.mark.parametrize("case", list(CASES))
def test_dcp_views_safe_open(mount, dcp_saves, reference, minilm_dir, case):
    """safe_open sees every model tensor in the views, and no optimizer state."""
    want, _ = reference_for(reference, minilm_dir, CASES[case][2])
    for view in ["@single", "@shards=20MB"]:
        got = {}
        for f in sorted((mount / f"{case}{view}").glob("*.safetensors")):
            with safe_open(f, framework="pt") as st:
                assert st.metadata() == {"format": "pt"}, st.metadata()
                for k in st.keys():
                    got[k] = st.get_tensor(k)
        # position_ids is a buffer transformers does not save in state_dict files.
        assert set(got) == set(want) - {"embeddings.position_ids"}, set(got) ^ set(want)
        for k, v in got.items():
            assert torch.equal(v, want[k]), (case, view, k)


def test_dcp_deduplicates_against_safetensors(minilm_dir):
    """A one-process DCP save of the weights costs little next to their
    safetensors twin: .distcp files are split at their storage records."""
    import torch.distributed.checkpoint as dcp

    def save_twin(d):
        dcp.save(AutoModel.from_pretrained(minilm_dir).state_dict(), checkpoint_id=str(d), no_dist=True)

    unique_both, unique_one, logical = unique_with_twin(minilm_dir, save_twin)
    weights = os.path.getsize(minilm_dir / "model.safetensors")
    print(f"\nDCP + safetensors: unique {unique_both} bytes, safetensors alone {unique_one}, "
          f"ratio {unique_both / unique_one:.4f}")
    assert logical > 2 * weights
    assert unique_both < unique_one + weights // 50, (unique_both, unique_one)


def fixture_tensors(path):
    with safe_open(path, framework="pt") as st:
        return {k: st.get_tensor(k) for k in st.keys()}


def test_dcp_malformed_left_out(mount):
    """Malformed DCP folders leave out what they cannot serve, with a warning
    naming the cause; the mount stays up and serves the rest."""
    want = fixture_tensors(FIXTURE / "reference.safetensors")
    cases = {}
    for name in ["dcp-truncated", "dcp-missing", "dcp-nochunk", "dcp-overlap", "dcp-global", "dcp-good"]:
        shutil.copytree(FIXTURE, mount / name, ignore=shutil.ignore_patterns("reference.safetensors", "gen.py"))
        cases[name] = mount / name
    md = pickle.loads((FIXTURE / ".metadata").read_bytes())
    last = max(i.offset for k, i in md.storage_data.items()
               if i.relative_path == "__1_0.distcp" and k.fqn.startswith("model."))
    os.truncate(cases["dcp-truncated"] / "__1_0.distcp", last + 10)  # cuts its last model item
    os.remove(cases["dcp-missing"] / "__0_0.distcp")
    md.state_dict_metadata["model.layer.0.bias"].chunks[1].offsets = torch.Size([2])
    for k in list(md.storage_data):
        if k.fqn == "model.layer.0.bias" and k.offset == torch.Size([4]):
            md.storage_data[type(k)(k.fqn, [2])] = md.storage_data.pop(k)
    (cases["dcp-overlap"] / ".metadata").write_bytes(pickle.dumps(md))
    md = pickle.loads((FIXTURE / ".metadata").read_bytes())
    del md.state_dict_metadata["model.embed.weight"].chunks[1]  # rows 5..10 saved by no chunk
    (cases["dcp-nochunk"] / ".metadata").write_bytes(pickle.dumps(md))
    (cases["dcp-global"] / ".metadata").write_bytes(b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.")

    def served(name):
        return fixture_tensors(mount / f"{name}@single" / "model.safetensors")

    got = served("dcp-truncated")
    assert 0 < len(got) < len(want), sorted(got)
    assert "layer.0.bias" not in served("dcp-overlap")
    assert len(served("dcp-overlap")) == len(want) - 1
    assert 0 < len(served("dcp-missing")) < len(want)
    assert set(served("dcp-nochunk")) == set(want) - {"embed.weight"}
    assert not (mount / "dcp-global@single").exists()
    good = served("dcp-good")
    assert set(good) == set(want) and all(torch.equal(good[k], want[k]) for k in want)
    log = (mount.store / "ckptfs.log").read_text()
    for cause in ["runs past the end", "which the folder does not have", "saved by no chunk", "chunks overlap",
                  "os.system refused"]:
        assert cause in log, cause
    assert subprocess.run(["ls", str(mount.dir)], capture_output=True).returncode == 0
