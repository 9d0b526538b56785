"""pytest plugin of ckptfs, registered by the wheel's pytest11 entry point:
the ckptfs_mount fixture."""

from pathlib import Path
from typing import Iterator

import pytest

import ckptfs


@pytest.fixture
def ckptfs_mount(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ckptfs mount of a new, empty store, for one test: yields the
    mountpoint, and unmounts (flushing) after the test, whether it passed or
    not. CKPTFS_STORE names the store meanwhile, so ckptfs.ls(),
    ckptfs.stat() and ckptfs commands the test runs see this store."""
    root = tmp_path_factory.mktemp("ckptfs")
    store = root / "store"
    monkeypatch.setenv("CKPTFS_STORE", str(store))
    with ckptfs.mount(root / "mnt", store=store) as mnt:
        yield mnt
