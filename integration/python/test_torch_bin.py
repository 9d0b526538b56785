"""PyTorch .bin checkpoints through the mount: stored as written, loaded
through @single and @shards as safetensors, with no pickle run.

transformers 4 writes pytorch_model.bin for save_pretrained(...,
safe_serialization=False); transformers 5 always writes safetensors, so
there the same files are written the way 4.x writes them. make runs this
file in both venvs; the colossalai venv has transformers 4 and sets
CKPTFS_REQUIRE_BIN_SAVE, so the real save_pretrained is always covered.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

from conftest import assert_same_state, embed, unique_with_twin


def load(path):
    return AutoModel.from_pretrained(path).eval()


def save_bin(model, path: Path, max_shard_mb=None):
    """save_pretrained(safe_serialization=False), or what it writes."""
    kw = {"max_shard_size": f"{max_shard_mb}MB"} if max_shard_mb else {}
    model.save_pretrained(path, safe_serialization=False, **kw)
    if any(path.glob("pytorch_model*.bin")):
        return
    if os.environ.get("CKPTFS_REQUIRE_BIN_SAVE"):
        pytest.fail("save_pretrained(safe_serialization=False) wrote no .bin")
    for p in path.glob("model*.safetensors*"):
        p.unlink()
    sd = model.state_dict()
    if not max_shard_mb:
        torch.save(sd, path / "pytorch_model.bin")
        return
    shards, cur, size = [], {}, 0
    for k, v in sd.items():
        n = v.numel() * v.element_size()
        if cur and size + n > max_shard_mb * 10**6:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += n
    shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, path / name)
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    (path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


@pytest.mark.parametrize("max_shard_mb", [None, 20])
def test_bin_checkpoint_views(mount, minilm_dir, reference, max_shard_mb):
    name = "minilm-bin" + (f"-{max_shard_mb}mb" if max_shard_mb else "")
    save_bin(load(minilm_dir), mount / name, max_shard_mb)
    written = sorted(p.name for p in (mount / name).iterdir())
    bins = [n for n in written if n.endswith(".bin")]
    assert (len(bins) > 1 if max_shard_mb else bins == ["pytorch_model.bin"]), written

    # As written: the files torch.load reads are the ones saved.
    got = {}
    for b in bins:
        got.update(torch.load(mount / name / b, weights_only=True))
    assert_same_state(got, reference["state"])

    for view in ["@single", "@shards=20MB"]:
        path = mount / f"{name}{view}"
        listed = sorted(p.name for p in path.iterdir())
        assert "config.json" in listed and not any(n.endswith(".bin") for n in listed), listed
        for st in path.glob("*.safetensors"):
            with safe_open(st, "pt") as f:
                assert f.metadata().get("format") == "pt"
        model = load(path)
        assert_same_state(model.state_dict(), reference["state"])
        assert torch.equal(embed(model, reference["tokenizer"]), reference["embeddings"])


def test_bin_and_safetensors_stored_once(minilm_dir):
    """The same weights as .bin and as safetensors cost about one copy."""
    if os.environ.get("CKPTFS_REQUIRE_BIN_SAVE"):
        pytest.skip("measured once, in the main venv")
    unique_both, unique_one, logical = unique_with_twin(minilm_dir, lambda d: save_bin(load(minilm_dir), d))
    weights = os.path.getsize(minilm_dir / "model.safetensors")
    print(f"\n.bin + safetensors: unique {unique_both} bytes, safetensors alone {unique_one}, "
          f"ratio {unique_both / unique_one:.4f}, weights {weights}")
    assert logical > 2 * weights
    assert unique_both < unique_one + weights // 50, (unique_both, unique_one)
