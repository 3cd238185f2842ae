from pathlib import Path

import pytest
import torch

from modularevo.errors import InputError
from modularevo.utils.atomic import atomic_dir
from modularevo.utils.seed import derived_generator, derived_seed


def test_derived_seed_is_stable_and_key_sensitive():
    assert derived_seed(1, "a.weight", 0) == derived_seed(1, "a.weight", 0)
    assert derived_seed(1, "a.weight", 0) != derived_seed(1, "a.weight", 1)
    assert derived_seed(1, "a.weight", 0) != derived_seed(2, "a.weight", 0)
    a = torch.rand(5, generator=derived_generator(3, "x", 1))
    b = torch.rand(5, generator=derived_generator(3, "x", 1))
    assert torch.equal(a, b)


def test_atomic_dir_success_and_failure(tmp_path: Path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "f.txt").write_text("ok")
        assert not target.exists()
    assert (target / "f.txt").read_text() == "ok"

    with pytest.raises(InputError, match="already exists"), atomic_dir(target):
        pass

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError), atomic_dir(failed) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("killed")
    assert not failed.exists()
    assert list(tmp_path.iterdir()) == [target]


def test_lazy_module_imports_on_first_attribute_and_caches(tmp_path: Path, monkeypatch):
    import sys

    from modularevo.utils.lazy import LazyModule

    (tmp_path / "lazy_probe_mod.py").write_text("LOADS = []\nLOADS.append(1)\nVALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = LazyModule("lazy_probe_mod")
    assert "lazy_probe_mod" not in sys.modules  # nothing imported yet
    assert "lazy_probe_mod" in repr(mod)
    assert mod.VALUE == 41
    assert sys.modules["lazy_probe_mod"].LOADS == [1]
    assert "VALUE" in vars(mod)  # cached on the proxy: later lookups skip __getattr__
    with pytest.raises(AttributeError):
        _ = mod.MISSING
    del sys.modules["lazy_probe_mod"]


def test_reuse_freed_memory_restores_and_survives_errors():
    from modularevo.utils import heap

    with heap.reuse_freed_memory():
        buf = bytearray(8 * 2**20)  # below the raised mmap threshold: comes from the heap
        del buf
    with pytest.raises(RuntimeError), heap.reuse_freed_memory():
        raise RuntimeError("boom")
    heap.release_free_heap()  # no-op off glibc, never raises
