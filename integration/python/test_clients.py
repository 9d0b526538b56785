"""Real loaders reading and writing through a ckptfs mount, compared
bit-for-bit with the same operations on the original folder."""

import hashlib
import re

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

from conftest import assert_same_state, embed, in_thread


def load(path):
    return AutoModel.from_pretrained(path).eval()


@pytest.mark.parametrize("view", ["", "@single", "@shards=20MB"])
def test_from_pretrained_views(mount, minilm_in_mount, reference, view):
    path = mount / f"minilm{view}"
    if view == "@shards=20MB":
        shards = sorted(p.name for p in path.glob("model-*.safetensors"))
        assert len(shards) > 1 and (path / "model.safetensors.index.json").exists(), shards
    model = load(path)
    assert_same_state(model.state_dict(), reference["state"])
    assert torch.equal(embed(model, reference["tokenizer"]), reference["embeddings"])


def test_from_pretrained_hot_copy(mount, minilm_in_mount, reference):
    """A view loaded twice gets a hot copy, made in the background; the loads
    after it read the copy through FUSE passthrough and give the same weights
    and embeddings."""
    import time

    path = mount / "minilm@shards=30MB"
    for _ in range(2):
        assert_same_state(load(path).state_dict(), reference["state"])
    hot = mount.store / "hot"
    deadline = time.time() + 60
    while time.time() < deadline and not any(not p.name.endswith(".partial") for p in hot.iterdir()):
        time.sleep(0.1)
    assert any(not p.name.endswith(".partial") for p in hot.iterdir()), list(hot.iterdir())
    for _ in range(2):
        model = load(path)
        assert_same_state(model.state_dict(), reference["state"])
        assert torch.equal(embed(model, reference["tokenizer"]), reference["embeddings"])
    log = (mount.store / "ckptfs.log").read_text()
    assert re.search(r'msg="open from hot copy" file="?minilm@shards=30MB/', log)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_pretrained_into_mount(mount, minilm_dir, reference, dtype):
    model = load(minilm_dir).to(dtype)
    name = f"saved-{str(dtype).split('.')[-1]}"
    model.save_pretrained(mount / name, max_shard_size="20MB")
    written = sorted(p.name for p in (mount / name).iterdir())
    assert "model.safetensors.index.json" in written, written
    want = model.state_dict()
    want_emb = embed(model, reference["tokenizer"])
    for view in ["", "@single", "@shards"]:
        got = load(mount / f"{name}{view}")
        assert got.dtype == dtype
        assert_same_state(got.state_dict(), want)
        assert torch.equal(embed(got, reference["tokenizer"]), want_emb)


def view_files(mount):
    base = mount / "minilm"
    return ([base / "model.safetensors", mount / "minilm@single" / "model.safetensors"]
            + sorted((mount / "minilm@shards=20MB").glob("model-*.safetensors")))


def test_safe_open_views(mount, minilm_in_mount, minilm_dir):
    ref = {}
    with safe_open(minilm_dir / "model.safetensors", framework="pt") as f:
        for k in f.keys():
            ref[k] = f.get_tensor(k)
    seen = set()
    for path in view_files(mount):
        with safe_open(path, framework="pt") as f:
            assert f.metadata().get("format") == "pt"
            for k in f.keys():
                seen.add(k)
                t = f.get_tensor(k)
                assert torch.equal(t, ref[k]), (path, k)
                if t.dim() > 0 and t.shape[0] > 2:
                    a, b = 1, t.shape[0] - 1
                    assert torch.equal(f.get_slice(k)[a:b], ref[k][a:b]), (path, k)
    assert seen == set(ref)


def train_step(model, opt, sched, batch):
    out = model(**batch).last_hidden_state.pow(2).mean()
    out.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_optimizer_and_scheduler_round_trip(mount, minilm_dir, reference):
    torch.manual_seed(0)
    batch = reference["tokenizer"](["a training sentence", "another one"], padding=True, return_tensors="pt")

    def fresh():
        model = load(minilm_dir)  # eval mode: no dropout, so steps are repeatable
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
        return model, opt, sched

    model, opt, sched = fresh()
    for _ in range(3):
        train_step(model, opt, sched, batch)
    run = mount / "run1"
    run.mkdir(exist_ok=True)
    torch.save(opt.state_dict(), run / "optimizer.pt")
    torch.save(sched.state_dict(), run / "lr_scheduler.pt")
    model.save_pretrained(run / "model")

    loaded_opt = torch.load(run / "optimizer.pt", weights_only=True)
    loaded_sched = torch.load(run / "lr_scheduler.pt", weights_only=True)
    assert loaded_sched == sched.state_dict()
    want = opt.state_dict()
    assert loaded_opt["param_groups"] == want["param_groups"]
    for pid, st in want["state"].items():
        for k, v in st.items():
            assert torch.equal(loaded_opt["state"][pid][k], v), (pid, k)

    # One more step without the round trip...
    train_step(model, opt, sched, batch)
    # ...and the same step after reloading everything from the mount.
    model2 = load(run / "model")
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-4)
    opt2.load_state_dict(loaded_opt)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.9)
    sched2.load_state_dict(loaded_sched)
    train_step(model2, opt2, sched2, batch)
    assert_same_state(model2.state_dict(), model.state_dict())


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def save_copy(src, dst):
    AutoModel.from_pretrained(src).save_pretrained(dst, max_shard_size="20MB")


def test_concurrent_readers_and_writer(mount, minilm_in_mount, minilm_dir):
    target = str(mount / "minilm@single" / "model.safetensors")
    want = sha256_of(target)
    # Threads, not processes: the daemon serves their reads and writes at
    # once all the same, and five Pythons importing torch cost 5x the test.
    writer = in_thread(save_copy, str(minilm_dir), str(mount / "concurrent-save"))
    readers = [in_thread(sha256_of, target) for _ in range(4)]
    assert [r.result(timeout=600) for r in readers] == [want] * 4
    writer.result(timeout=600)
    ref = load(minilm_dir).state_dict()
    assert_same_state(load(mount / "concurrent-save@single").state_dict(), ref)
