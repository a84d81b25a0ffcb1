"""The persistent MLP probe's arithmetic and indexing (bench/probes/persistent_mlp.py), through Triton's
interpreter: each matrix as its own launch (``emulate=True``), against a float32 recompute with the step's
roundings. Its synchronisation (inline PTX) only runs on a GPU, where the probe checks its own result."""
import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROBE = Path(__file__).resolve().parents[2] / "bench" / "probes" / "persistent_mlp.py"


@pytest.fixture(scope="module")
def probe(triton_kernels_on):
    if triton_kernels_on != "cpu":
        pytest.skip("the emulated launches are for Triton's interpreter; on a GPU run the probe itself")
    spec = importlib.util.spec_from_file_location("persistent_mlp_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layer(hidden, intermediate, seed):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(torch.bfloat16)

    return (randn(hidden, hidden, scale=hidden ** -0.5), randn(2 * intermediate, hidden, scale=hidden ** -0.5),
            randn(hidden, intermediate, scale=intermediate ** -0.5), (1 + 0.1 * randn(hidden).float()).to(torch.bfloat16),
            randn(hidden), randn(hidden))


def _check(probe, hidden, intermediate, seed, **layout):
    wo, wgu, wd, norm, attn, resid = _layer(hidden, intermediate, seed)
    kernel = probe.PersistentMLP(wo, wgu, wd, norm, 1e-5, emulate=True, **layout)
    h, d_part = kernel(attn, resid)
    want_h, want_down = probe.reference_mlp(wo, wgu, wd, norm, 1e-5, attn, resid)
    # h: one bf16 rounding of the same float32 sum (summation orders differ: one ulp at most)
    torch.testing.assert_close(h.float(), want_h.float(), rtol=2 ** -7, atol=1e-6)
    # the down projection's partial sums add up to the recompute (bf16 inputs: the normed row is rounded
    # once on each side, so a flipped rounding moves a few elements by one bf16 ulp of the input)
    down = d_part.sum(0)
    assert (down - want_down).abs().max() <= 2e-2 * want_down.abs().max()
    assert d_part.shape[0] == layout.get("groups", 8)
    assert kernel.squares.sum().item() == pytest.approx(h.float().pow(2).sum().item(), rel=1e-5)


def test_small_layer_matches_a_float32_recompute(probe):
    _check(probe, 512, 1024, 0, programs=32, groups=2, bn_o=4, bn_gu=64, bn_d=8)


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([(256, 512, 8, 1), (512, 512, 16, 2), (512, 1024, 8, 2), (1024, 1024, 16, 4)]),
       st.sampled_from([2, 4]), st.sampled_from([16, 32]), st.sampled_from([2, 4]), st.integers(0, 2 ** 16))
def test_every_layout_computes_the_same_layer(probe, shape, bn_o, bn_gu, bn_d, seed):
    hidden, intermediate, programs, groups = shape
    _check(probe, hidden, intermediate, seed, programs=programs, groups=groups, bn_o=bn_o, bn_gu=bn_gu, bn_d=bn_d)


@pytest.mark.parametrize("layout, why", [
    (dict(programs=32, groups=4), "hidden 512 must be groups"),
    (dict(programs=24, groups=2), "power of two"),
    (dict(programs=32, groups=2, bn_o=32), "output projection's rows"),
    (dict(programs=32, groups=2, bn_gu=96), "gate/up rows"),
    (dict(programs=32, groups=2, bn_d=64), "down projection's rows"),
])
def test_layouts_that_do_not_split_are_refused(probe, layout, why):
    wo, wgu, wd, norm, _, _ = _layer(512, 1024, 0)
    with pytest.raises(ValueError, match=why):
        probe.PersistentMLP(wo, wgu, wd, norm, emulate=True, **layout)
