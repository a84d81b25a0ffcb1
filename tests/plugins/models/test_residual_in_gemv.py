"""The one-row GEMVs that add the residual or apply a pending RMS norm (``fused_step.RESIDUAL_IN_GEMV``, a
step variant) against PyTorch: a matmul plus the residual, ``F.rms_norm`` then a matmul, and the unfused decode
step; on CUDA when there is one, else through Triton's interpreter."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

pytest.importorskip("triton")

from genplug.plugins.models.llama import graph_step  # noqa: E402

from native_llama_fixtures import native_model  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def kernels(triton_kernels_on):
    from genplug.plugins.models.llama import decode_kernels, fused_step

    return decode_kernels, fused_step


def _residual_and_delta(g, width, parts, decode_kernels):
    x = torch.randn(1, 1, width, generator=g)
    delta = torch.randn(max(parts, 1), 1, width, generator=g)
    given_delta = decode_kernels.PartialSums(delta.to(DEVICE)) if parts else delta[0:1].to(DEVICE)
    return x, delta.sum(0, keepdim=True), given_delta


@settings(max_examples=15, deadline=None)
@given(in_width=st.integers(1, 300), out_width=st.integers(1, 150), with_bias=st.booleans(),
       k_contiguous=st.booleans(), pieces=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_a_gemv_over_a_pending_norm_is_the_matmul_of_the_normed_row(kernels, in_width, out_width, with_bias,
                                                                  k_contiguous, pieces, seed):
    """The row's squares come in ``pieces`` partial sums, as the programs of the GEMV before leave them."""
    decode_kernels, _ = kernels
    g = torch.Generator().manual_seed(seed)
    row = torch.randn(1, 1, in_width, generator=g)
    squares = torch.stack([(piece * piece).sum() for piece in row.flatten().tensor_split(pieces)])
    weight = 1 + 0.3 * torch.randn(in_width, generator=g)
    weight_t = torch.randn(in_width, out_width, generator=g)
    if k_contiguous:
        weight_t = weight_t.t().contiguous().t()
    bias = torch.randn(out_width, generator=g) if with_bias else None
    pending = decode_kernels.PendingNorm(row.to(DEVICE), weight.to(DEVICE), 1e-5, squares.to(DEVICE))
    out = decode_kernels.gemv(pending, weight_t.to(DEVICE), bias.to(DEVICE) if with_bias else None)
    expected = F.rms_norm(row, (in_width,), weight, 1e-5) @ weight_t + (bias if with_bias else 0)
    torch.testing.assert_close(out.total().cpu(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="gated"):
        decode_kernels.gemv(pending, weight_t.to(DEVICE), gated_input="silu")


@settings(max_examples=15, deadline=None)
@given(in_width=st.integers(1, 300), out_width=st.integers(1, 150), with_bias=st.booleans(),
       k_contiguous=st.booleans(), parts=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_a_gemv_adding_the_residual_leaves_the_sum_and_what_its_norm_needs(kernels, in_width, out_width, with_bias,
                                                                          k_contiguous, parts, seed):
    """``gemv(..., residual=r)`` is ``r + x @ w (+ bias)`` rounded to r's dtype (the splits' sums added by the
    last split of each column tile), its pending norm is ``F.rms_norm`` of that sum (squares summed over the
    column tiles), and the arrival counters are left zero for the next launch."""
    decode_kernels, _ = kernels
    g = torch.Generator().manual_seed(seed)
    x, summed_x, given_x = _residual_and_delta(g, in_width, parts, decode_kernels)
    x = summed_x if parts else x  # the input: partial sums of it, or the row itself
    weight_t = torch.randn(in_width, out_width, generator=g)
    if k_contiguous:
        weight_t = weight_t.t().contiguous().t()
    bias = torch.randn(out_width, generator=g) if with_bias else None
    residual = torch.randn(1, 1, out_width, generator=g)
    norm_weight = 1 + 0.3 * torch.randn(out_width, generator=g)
    arrivals = decode_kernels.new_arrivals(1, out_width, DEVICE)
    summed = decode_kernels.gemv(given_x if parts else x.to(DEVICE), weight_t.to(DEVICE),
                                 bias.to(DEVICE) if with_bias else None, residual=residual.to(DEVICE), arrivals=arrivals)
    assert not arrivals.any()
    expected = residual + x @ weight_t + (bias if with_bias else 0)
    torch.testing.assert_close(summed.total.cpu(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(summed.pending(norm_weight.to(DEVICE), 1e-5).normed().cpu(),
                               F.rms_norm(expected, (out_width,), norm_weight, 1e-5), rtol=1e-4, atol=1e-4)


def test_a_gemv_adding_the_residual_rounds_it_to_the_model_dtype_and_checks_its_width(kernels):
    decode_kernels, _ = kernels
    residual = torch.full((1, 1, 64), 1.0, dtype=torch.bfloat16, device=DEVICE)
    x = torch.full((1, 1, 4), 2.0 ** -12, dtype=torch.bfloat16, device=DEVICE)  # x @ w = 2**-10 a column
    w = torch.ones(4, 64, dtype=torch.bfloat16, device=DEVICE)
    arrivals = decode_kernels.new_arrivals(1, 64, DEVICE)
    summed = decode_kernels.gemv(x, w, residual=residual, arrivals=arrivals)
    assert summed.total.dtype == torch.bfloat16 and torch.equal(summed.total, residual)  # 1 + 2**-10 -> 1
    torch.testing.assert_close(summed.squares.sum().cpu(), torch.tensor(64.0))
    with pytest.raises(ValueError, match="one row of 64"):
        decode_kernels.gemv(x, w, residual=residual[..., :32], arrivals=arrivals)
    with pytest.raises(ValueError, match="arrival counters"):
        decode_kernels.gemv(x, w, residual=residual)


@pytest.fixture
def residual_in_gemv(kernels, monkeypatch):
    monkeypatch.setattr(kernels[1], "RESIDUAL_IN_GEMV", True)
    return kernels


@pytest.mark.parametrize("head_gemv", [True, False])
def test_the_step_adding_residuals_in_the_gemvs_stays_close_to_the_unfused_step(residual_in_gemv, head_gemv,
                                                                                monkeypatch):
    """Every output and down projection adds the residual: no add+norm kernel at all (the first layer's input
    norm looks the token up; the final norm goes to the head's GEMV, or to its kernel where the head is
    PyTorch's), and the logits stay within bf16 noise of the plain PyTorch step."""
    import genplug
    decode_kernels, fused_step = residual_in_gemv
    monkeypatch.setattr(fused_step, "HEAD_GEMV", head_gemv)

    model = native_model(seed=3).to(DEVICE, torch.bfloat16)
    model.store_for_gpu_decode()
    prompt = torch.tensor([[0, 0, 8, 61, 2]], device=DEVICE)
    caches = [genplug.StaticCache(config=model.config, max_cache_len=12) for _ in range(2)]
    for cache in caches:
        model(prompt, past_key_values=cache)
    token, slot, position = torch.tensor([[11]], device=DEVICE), torch.tensor(5, device=DEVICE), torch.tensor([[5]], device=DEVICE)
    valid = torch.zeros(1, 12, dtype=torch.bool, device=DEVICE)
    valid[:, :6] = True
    calls, real_norm = [], decode_kernels.add_rms_norm
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode_kernels, "add_rms_norm", lambda *a, **k: calls.append(1) or real_norm(*a, **k))
        fused = graph_step.static_decode_step(model, token, position, slot, valid, caches[0].layers)
    assert len(calls) == (0 if head_gemv else 1)
    unfused = graph_step.static_decode_step(model, token, position, slot, valid, caches[1].layers,
                                            layer_fn=graph_step.decode_layer)
    torch.testing.assert_close(fused.float(), unfused, rtol=0.05, atol=0.05)
    assert (fused.float().argmax(-1) == unfused.argmax(-1)).all()


def test_the_graph_loop_adding_residuals_in_the_gemvs_equals_the_eager_loop(residual_in_gemv, graph_on_cpu):
    import genplug

    model = native_model(seed=1).to(DEVICE, torch.bfloat16)
    model.store_for_gpu_decode()
    prompt = torch.tensor([[5, 9, 17, 3, 44]], device=DEVICE)
    kw = dict(max_new_tokens=8, cache_implementation="static", pad_token_id=0)
    graph = genplug.generate(model, prompt, **kw)
    assert graph_on_cpu.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(graph, genplug.generate(model, prompt, disable_compile=True, **kw))
