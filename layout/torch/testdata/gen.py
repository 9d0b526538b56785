"""Writes the torch.save fixtures of layout/torch's tests into a directory.

    python gen.py OUTDIR

For each NAME.bin whose tensors a view can hold it also writes
NAME.safetensors with those tensors, and expect.json says which names the
reader must leave out or why it must refuse a file. The Go tests read the
committed copies and, with CKPTFS_PYTHON set, a fresh run of this script.
"""

import collections
import json
import os
import sys

import torch
from safetensors.torch import save_file


class Evil:
    """An object whose unpickling would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ckptfs-pwned",))


def state_dict():
    g = torch.Generator().manual_seed(7)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 5, generator=g)
    sd["f64"] = torch.randn(4, generator=g, dtype=torch.float64)
    sd["f16"] = torch.randn(2, 3, generator=g).half()
    sd["bf16"] = torch.randn(7, generator=g).bfloat16()
    sd["i64"] = torch.arange(-3, 6, dtype=torch.int64)
    sd["i32"] = torch.arange(5, dtype=torch.int32)
    sd["i16"] = torch.arange(5, dtype=torch.int16)
    sd["i8"] = torch.arange(-2, 3, dtype=torch.int8)
    sd["u8"] = torch.arange(250, 256, dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["f8_e4m3"] = torch.randn(6, generator=g).to(torch.float8_e4m3fn)
    sd["f8_e5m2"] = torch.randn(6, generator=g).to(torch.float8_e5m2)
    sd["u16"] = torch.arange(4, dtype=torch.int32).to(torch.uint16)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 4)
    base = torch.arange(20, dtype=torch.float32)
    sd["shared_whole"] = base
    sd["shared_view"] = base[4:10].view(2, 3)  # offset into a shared storage
    sd["tied"] = base  # the same tensor twice, as tied weights are
    sd["param"] = torch.nn.Parameter(torch.ones(2, 2))
    sd["transposed"] = torch.arange(6, dtype=torch.float32).view(2, 3).t()  # non-contiguous
    sd["complex"] = torch.ones(2, dtype=torch.complex64)
    sd["not_a_tensor"] = 3
    sd._metadata = {"": {"version": 1}}
    return sd


def main(out):
    os.makedirs(out, exist_ok=True)
    expect = {}

    sd = state_dict()
    left_out = ["transposed", "complex", "not_a_tensor"]
    torch.save(sd, os.path.join(out, "state_dict.bin"))
    viewable = {k: v.detach().clone().contiguous() for k, v in sd.items() if k not in left_out}
    save_file(viewable, os.path.join(out, "state_dict.safetensors"))
    expect["state_dict.bin"] = {"left_out": left_out}

    small = {k: sd[k] for k in ("f32", "bf16", "shared_view")}
    torch.save(small, os.path.join(out, "protocol4.bin"), pickle_protocol=4)
    save_file({k: v.clone().contiguous() for k, v in small.items()}, os.path.join(out, "protocol4.safetensors"))
    expect["protocol4.bin"] = {"left_out": []}

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), os.path.join(out, "optimizer.bin"))
    expect["optimizer.bin"] = {"left_out": ["state", "param_groups"]}

    torch.save({"w": torch.ones(2), "payload": Evil()}, os.path.join(out, "malicious.bin"))
    expect["malicious.bin"] = {"refused": "posix.system"}

    torch.save({"w": torch.ones(2)}, os.path.join(out, "legacy.bin"), _use_new_zipfile_serialization=False)
    expect["legacy.bin"] = {"refused": "zip"}

    with open(os.path.join(out, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
