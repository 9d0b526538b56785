"""torch.distributed.checkpoint (DCP) saves straight into the mount, from 2
and 4 gloo ranks on CPU, and the views serve them as HF folders: from_pretrained
on DIR@single and DIR@shards=20MB gives the reference weights and embeddings bit
for bit, with no consolidation job. The same for torch's distributed
safetensors (HuggingFaceStorageWriter(save_distributed=True)): a file of
pieces a rank, assembled by the views."""

import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open
from transformers import AutoModel

from conftest import assert_same_state, embed, unique_with_twin

HF_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]
LAYOUT = Path(__file__).resolve().parents[2] / "layout"
FIXTURE = LAYOUT / "dcp" / "testdata" / "2ranks"

# Each case: world size, how the model is sharded, dtype, how it is written,
# and whether the state dict is nested {"model", "optim"}. "hf" is
# HuggingFaceStorageWriter(save_distributed=True), "hf-map" the same with
# fqn_to_index_mapping (3 files a rank), "hf-consolidated" with
# enable_consolidation=True (torch's consolidation job writes the HF files,
# the pieces go to sharded/).
CASES = {
    "fsdp2-4": (4, "fsdp2", torch.float32, "torch_save", True),
    "dtensor-bf16-st-4": (4, "dtensor", torch.bfloat16, "safetensors", False),
    "dtensor-2": (2, "dtensor", torch.float32, "torch_save", True),
    "hf-bf16-4": (4, "dtensor", torch.bfloat16, "hf", False),
    "hf-map-2": (2, "dtensor", torch.float32, "hf-map", False),
    "hf-consolidated-2": (2, "dtensor", torch.float32, "hf-consolidated", False),
}
# The folders whose views are read: each case's, and the pieces torch's
# consolidation job read.
VIEWED = list(CASES) + ["hf-consolidated-2/sharded"]


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


def file_index(name):
    """fqn_to_index_mapping of the "hf-map" case: embeddings, the first
    three layers, the rest."""
    if name.startswith("embeddings."):
        return 1
    return 2 if any(name.startswith(f"encoder.layer.{i}.") for i in range(3)) else 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def writer_for(path, fmt, names):
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.filesystem import FileSystemWriter, SerializationFormat

    if fmt.startswith("hf"):
        mapping = {k: file_index(k) for k in names} if fmt == "hf-map" else None
        return HuggingFaceStorageWriter(path, save_distributed=True, fqn_to_index_mapping=mapping,
                                        enable_consolidation=fmt == "hf-consolidated")
    return FileSystemWriter(path, serialization_format=(
        SerializationFormat.SAFETENSORS if fmt == "safetensors" else SerializationFormat.TORCH_SAVE))


def save_ranks(rank, port, minilm, root, cases):
    """Saves the cases from 4 ranks, the 2-rank ones from ranks 0 and 1 of
    them: one set of processes for all, as each costs its imports."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
    from torch.distributed.tensor import distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=4)
    meshes = {4: init_device_mesh("cpu", (4,)), 2: DeviceMesh("cpu", [0, 1])}
    try:
        for name in cases:
            world, kind, dtype, fmt, nested = CASES[name]
            if rank >= world:
                continue
            mesh, path = meshes[world], os.path.join(root, name)
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
            dcp.save(sd, storage_writer=writer_for(path, fmt, sd), process_group=mesh.get_group())
            if fmt == "safetensors":
                continue  # torch's FileSystemReader cannot load these (see the README)
            # What torch loads from the files as written, it loads through the mount.
            want = sd["model"] if nested else sd
            got = {k: torch.zeros_like(v) for k, v in want.items()}
            kwargs = {"checkpoint_id": path}
            if fmt.startswith("hf"):
                kwargs = {"storage_reader": HuggingFaceStorageReader(path + ("/sharded" if fmt == "hf-consolidated" else ""))}
            dcp.load({"model": got} if nested else got, process_group=mesh.get_group(), **kwargs)
            for k, v in want.items():
                assert torch.equal(got[k].full_tensor(), v.full_tensor()), (name, k)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def dcp_saves(mount, minilm_dir):
    """The CASES saved into the mount, with the model's config and tokenizer
    copied next to them."""
    names = [n for n in CASES if not (mount / n).exists()]
    if names:
        mp.spawn(save_ranks, args=(free_port(), str(minilm_dir), str(mount.dir), names), nprocs=4)
    for name in VIEWED:
        for f in HF_FILES:
            shutil.copy(minilm_dir / f, mount / name / f)
    return CASES


@pytest.fixture(scope="module")
def references(reference, minilm_dir):
    """The state dict and embeddings of the model in each dtype."""
    refs = {torch.float32: (reference["state"], reference["embeddings"])}
    model = AutoModel.from_pretrained(minilm_dir).to(torch.bfloat16).eval()
    refs[torch.bfloat16] = (model.state_dict(), embed(model, reference["tokenizer"]))
    return refs


def case_of(folder):
    return CASES[folder.split("/")[0]]


def check_written(mount, folder):
    """The folder holds what the writer writes, and its views list none of
    it: the weights come assembled."""
    world, _, _, fmt, _ = case_of(folder)
    files = sorted(p.name for p in (mount / folder).iterdir())
    pieces = [f for f in files if f.startswith("shard-")]
    if folder.endswith("/sharded") or fmt in ("hf", "hf-map"):
        assert {f.split("-")[1] for f in pieces} == {f"{r:05d}" for r in range(1, world + 1)}, files
        if fmt == "hf-map":
            assert {f.split("-")[3] for f in pieces} == {"00001", "00002", "00003"}, files
    elif fmt == "hf-consolidated":
        assert "sharded" in files and "model.safetensors.index.json" in files and not pieces, files
    else:
        assert ".metadata" in files and sum(f.endswith(".distcp") for f in files) >= world, files
    return files


@pytest.mark.parametrize("folder", VIEWED)
@pytest.mark.parametrize("view", ["@single", "@shards=20MB"])
def test_dcp_views_from_pretrained(mount, dcp_saves, references, reference, folder, view):
    check_written(mount, folder)
    path = mount / f"{folder}{view}"
    if view != "@single":
        shards = sorted(p.name for p in path.glob("model-*.safetensors"))
        assert len(shards) > 1 and (path / "model.safetensors.index.json").exists(), shards
    listed = sorted(p.name for p in path.iterdir())
    assert not any(n.endswith(".distcp") or n == ".metadata" or n.startswith("shard-") or n == "sharded"
                   for n in listed), listed
    dtype = case_of(folder)[2]
    want, want_emb = references[dtype]
    model = AutoModel.from_pretrained(path).eval()
    assert model.dtype == dtype
    assert_same_state(model.state_dict(), want)
    assert torch.equal(embed(model, reference["tokenizer"]), want_emb)


def tensors_once(paths):
    """Every tensor of the safetensors files, each seen once, with its
    metadata."""
    got = {}
    for f in paths:
        with safe_open(f, framework="pt") as st:
            assert st.metadata() == {"format": "pt"}, (f, st.metadata())
            for k in st.keys():
                assert k not in got, (f, k)
                got[k] = st.get_tensor(k)
    return got


@pytest.mark.parametrize("folder", VIEWED)
def test_dcp_views_safe_open(mount, dcp_saves, references, folder):
    """safe_open sees every model tensor in the views once, with its full
    shape, and no optimizer state."""
    want, _ = references[case_of(folder)[2]]
    for view in ["@single", "@shards=20MB"]:
        got = tensors_once(sorted((mount / f"{folder}{view}").glob("*.safetensors")))
        # position_ids is a buffer transformers does not save in state_dict files.
        assert set(got) == set(want) - {"embeddings.position_ids"}, set(got) ^ set(want)
        for k, v in got.items():
            assert torch.equal(v, want[k]), (folder, view, k)


def test_consolidation_job_through_the_mount(mount, dcp_saves, references):
    """torch's own consolidation job, run by enable_consolidation=True on the
    pieces in the mount, wrote the same tensors the views assemble."""
    want, _ = references[torch.float32]
    folder = mount / "hf-consolidated-2"
    job = {}
    for f in sorted(folder.glob("model-*.safetensors")):
        with safe_open(f, framework="pt") as st:
            job.update({k: st.get_tensor(k) for k in st.keys()})
    view = tensors_once([mount / "hf-consolidated-2" / "sharded@single" / "model.safetensors"])
    assert set(job) == set(view) and all(torch.equal(job[k], view[k]) and torch.equal(view[k], want[k]) for k in view)


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


def rewrite_sharding(path, change):
    """Rewrites the DCP_SHARDING_INFO of safetensors file path as
    change(info) leaves it, the tensors as they were."""
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    info = json.loads(header["__metadata__"]["DCP_SHARDING_INFO"])
    change(info)
    header["__metadata__"]["DCP_SHARDING_INFO"] = json.dumps(info)
    js = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(js)) + js + b[8 + n:])


def test_hf_distributed_malformed(mount):
    """Malformed distributed safetensors saves (torch's, from 2 ranks):
    a rank's file removed or truncated, overlapping pieces, a name the
    second file holds a piece of without saying where, 10 MB of sharding
    info. The mount stays up, the log names the cause, and every tensor
    served is the one torch saved."""
    src = LAYOUT / "view" / "testdata" / "hf-2ranks"
    want = fixture_tensors(src / "reference.safetensors")
    rank0, rank1 = "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"
    cases = {}
    for name in ["hf-removed", "hf-truncated", "hf-overlap", "hf-noinfo", "hf-10mb", "hf-good"]:
        shutil.copytree(src, mount / name, ignore=shutil.ignore_patterns("reference.safetensors"))
        cases[name] = mount / name
    os.remove(cases["hf-removed"] / rank0)
    os.truncate(cases["hf-truncated"] / rank1, os.path.getsize(cases["hf-truncated"] / rank1) - 10)
    rewrite_sharding(cases["hf-overlap"] / rank1, lambda info: info.update({"embed.weight": {"saved_offsets": [4, 0]}}))
    rewrite_sharding(cases["hf-noinfo"] / rank1, lambda info: info.pop("layer.0.bias"))
    rewrite_sharding(cases["hf-10mb"] / rank1, lambda info: info.update(
        {f"pad.{i}": {"saved_offsets": [i, i]} for i in range(300_000)}))
    assert os.path.getsize(cases["hf-10mb"] / rank1) > 10 << 20

    def served(name):
        path = mount / f"{name}@single" / "model.safetensors"
        got = fixture_tensors(path) if path.exists() else {}
        assert all(torch.equal(v, want[k]) for k, v in got.items()), name
        return got

    assert set(served("hf-removed")) == {"norm.weight", "scale"}  # the replicated ones, in rank 1's file
    assert not (mount / "hf-truncated@single").exists()
    assert set(served("hf-overlap")) == set(want) - {"embed.weight"}
    assert set(served("hf-noinfo")) == set(want) - {"layer.0.bias"}
    assert not (mount / "hf-10mb@single").exists()  # every name rank 0 has a piece of is in rank 1's file
    assert set(served("hf-good")) == set(want)
    log = (mount.store / "ckptfs.log").read_text()
    for cause in ["saved by no chunk", "the pieces of a distributed save it holds are unknown", "chunks overlap",
                  "says where its pieces sit, but not where this one does", "DCP_SHARDING_INFO of 1"]:
        assert cause in log, cause
    assert subprocess.run(["ls", str(mount.dir)], capture_output=True).returncode == 0
