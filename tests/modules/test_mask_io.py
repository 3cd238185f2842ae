from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modularevo.errors import InputError
from modularevo.modules import (
    ModuleMask,
    fingerprint,
    load_module,
    open_module,
    pack_bits,
    save_module,
    unpack_bits,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=3), st.integers(0, 2**31))
def test_pack_unpack_roundtrip(shape, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(shape, generator=g) > 0.5
    packed = pack_bits(m)
    assert packed.dtype == torch.uint8
    assert packed.numel() == (m.numel() + 7) // 8
    assert torch.equal(unpack_bits(packed, m.shape), m)


def test_pack_bits_hand_checked():
    m = torch.tensor([True, False, True, True, False, False, False, False, True])
    # byte 0: bits 0,2,3 -> 1 + 4 + 8 = 13; byte 1: bit 0 -> 1
    assert pack_bits(m).tolist() == [13, 1]


def _module() -> tuple[ModuleMask, dict[str, torch.Tensor]]:
    params = {"a.weight": torch.randn(4, 3), "b.weight": torch.randn(5)}
    masks = {"a.weight": torch.rand(4, 3) > 0.5, "b.weight": torch.ones(5, dtype=torch.bool)}
    return (
        ModuleMask(
            masks=masks,
            domain="math",
            arch_fingerprint=fingerprint(params.items(), values=False),
            base_fingerprint=fingerprint(params.items()),
            metadata={"alpha": 10},
        ),
        params,
    )


def test_save_load_roundtrip_and_checks(tmp_path: Path):
    mod, params = _module()
    path = save_module(mod, tmp_path / "m.safetensors")
    back = load_module(path, params=params.items())
    assert back.domain == "math"
    assert back.metadata == {"alpha": 10}
    for n in mod.masks:
        assert torch.equal(back.masks[n], mod.masks[n])
    assert open_module(path).mask("missing") is None
    assert back.density() == pytest.approx(mod.density())

    changed = {n: t + 1 for n, t in params.items()}
    with pytest.raises(InputError, match="different base model"):
        load_module(path, params=changed.items())
    assert load_module(path, params=changed.items(), allow_modified=True).domain == "math"

    wrong_shape = {"a.weight": torch.randn(3, 4), "b.weight": torch.randn(5)}
    with pytest.raises(InputError, match=r"is \(4, 3\) but the model's parameter is \(3, 4\)"):
        load_module(path, params=wrong_shape.items())


def test_bad_files(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        open_module(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable safetensors"):
        open_module(bad)


def test_density_and_overlap_hand_checked():
    a = ModuleMask(masks={"w": torch.tensor([True, True, False, False])})
    b = ModuleMask(masks={"w": torch.tensor([True, False, True, False])})
    assert a.density() == 0.5
    ov = a.overlap(b)
    assert ov["jaccard"] == pytest.approx(1 / 3)
    assert ov["shared_of_all"] == pytest.approx(1 / 4)
    assert ov["shared_of_self"] == pytest.approx(1 / 2)
    with pytest.raises(InputError, match="bool"):
        ModuleMask(masks={"w": torch.ones(2)})


def test_apply_zeroes_outside():
    p = {"w": torch.tensor([1.0, 2.0, 3.0])}
    ModuleMask(masks={"w": torch.tensor([True, False, True])}).apply_(p)
    assert p["w"].tolist() == [1.0, 0.0, 3.0]
