"""The fused decode kernels (Triton) against PyTorch: on CUDA when there is one, else on the CPU
through Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported).

Oracles: the plain PyTorch decode step of :mod:`graph_step` (norm, RoPE, ``index_copy_``, SDPA) and
``F.rms_norm`` / ``F.silu``; for whole generations, the eager forward must equal the graph loop (they
share the kernels) and stay close to the unfused step.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

pytest.importorskip("triton")

from genplug.plugins.models.llama import graph_step  # noqa: E402
from genplug.plugins.models.llama.rope import apply_rotary  # noqa: E402

from native_llama_fixtures import GEMMA_SWITCHES, PHI3_SWITCHES, native_model  # noqa: E402


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def kernels(triton_kernels_on):
    from genplug.plugins.models.llama import decode_kernels

    return decode_kernels


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 3), width=st.sampled_from([8, 24, 64, 100]), with_delta=st.booleans(),
       seed=st.integers(0, 2**16))
def test_add_rms_norm_matches_torch(kernels, rows, width, with_delta, seed):
    g = torch.Generator().manual_seed(seed)
    x, delta = (torch.randn(rows, 1, width, generator=g).to(DEVICE) for _ in range(2))
    weight = (1 + 0.3 * torch.randn(width, generator=g)).to(DEVICE)
    total, normed = kernels.add_rms_norm(x, delta if with_delta else None, weight, 1e-5)
    expected_total = x + delta if with_delta else x
    torch.testing.assert_close(total, expected_total)
    torch.testing.assert_close(normed, F.rms_norm(expected_total, (width,), weight, 1e-5), rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 3), width=st.sampled_from([8, 24, 100]), vocab=st.integers(1, 50),
       stored_as_rows=st.booleans(), scaled=st.booleans(), seed=st.integers(0, 2**16))
def test_embed_rms_norm_is_the_lookup_then_the_norm(kernels, rows, width, vocab, stored_as_rows, scaled, seed):
    """The first layer's norm kernel looks the tokens up in the stored table ``[width, vocab]`` (the native
    layout, or a transformers ``[vocab, width]`` matrix seen transposed), times Gemma's scale: the same
    values as ``F.embedding`` (times the scale), then the norm of them."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, width, generator=g)
    table_t = table.t().contiguous() if not stored_as_rows else table.t()
    token = torch.randint(0, vocab, (rows, 8), generator=g)[:, 3:4]  # a strided column, as sliced from ids
    weight = 1 + 0.3 * torch.randn(width, generator=g)
    scale = 5.5 if scaled else None
    embedded, normed = kernels.embed_rms_norm(token.to(DEVICE), table_t.to(DEVICE), scale, weight.to(DEVICE), 1e-5)
    expected = F.embedding(token, table) * (scale or 1.0)
    assert torch.equal(embedded.cpu(), expected)
    torch.testing.assert_close(normed.cpu(), F.rms_norm(expected, (width,), weight, 1e-5), rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 3), width=st.sampled_from([8, 24, 100]), parts=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_add_rms_norm_norms_the_delta_first_where_asked(kernels, rows, width, parts, seed):
    """Gemma 2/3's sandwich: residual + norm(delta), then the next norm -- each norm's output rounded to the
    model dtype as Gemma's norm returns it; Gemma's (1 + weight) passed as the scale it is."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 1, width, generator=g).to(DEVICE, torch.bfloat16)
    pieces = torch.randn(parts, rows, width, generator=g).to(DEVICE)
    delta_weight, weight = (0.3 * torch.randn(width, generator=g) for _ in range(2))
    total, normed = kernels.add_rms_norm(x, kernels.PartialSums(pieces), (1 + weight).to(DEVICE), 1e-6,
                                         delta_norm=((1 + delta_weight).to(DEVICE), 1e-5))
    delta = pieces.sum(0).unsqueeze(1).to(torch.bfloat16)  # the sublayer's output as the model stores it
    gemma_norm = lambda v, w, eps: F.rms_norm(v.float(), (width,), 1 + w.to(DEVICE), eps).to(torch.bfloat16)  # noqa: E731
    normed_delta = gemma_norm(delta, delta_weight, 1e-5)
    # three roundings to bf16 (of the delta, the normed delta, the sum; Triton's interpreter truncates):
    # a few ulps of the larger operand, which a sum that cancels cannot hide in a relative tolerance
    error = (total.float() - (x + normed_delta).float()).abs()
    assert (error <= 2**-5 * (x.float().abs() + normed_delta.float().abs()) + 1e-6).all(), error.max()
    torch.testing.assert_close(normed.float(), gemma_norm(total, weight, 1e-6).float(), rtol=2**-6, atol=2**-6)


def test_add_rms_norm_rounds_the_residual_to_the_model_dtype(kernels):
    x = torch.randn(2, 1, 64).to(DEVICE, torch.bfloat16)
    delta = torch.randn(2, 1, 64).to(DEVICE, torch.bfloat16)
    total, normed = kernels.add_rms_norm(x, delta, torch.ones(64, dtype=torch.bfloat16, device=DEVICE), 1e-6)
    assert total.dtype == normed.dtype == torch.bfloat16
    if DEVICE == "cuda":
        assert torch.equal(total, x + delta)  # one fp32 add rounded to nearest, as PyTorch's bf16 add
    else:  # Triton's interpreter rounds float32 -> bfloat16 toward zero: within one bf16 ulp
        torch.testing.assert_close(total, x + delta, rtol=2**-7, atol=0)
    reference = F.rms_norm((x + delta).float(), (64,), None, 1e-6)
    torch.testing.assert_close(normed.float(), reference, rtol=1e-2, atol=1e-2)


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 3), width=st.sampled_from([4, 48, 1500]), seed=st.integers(0, 2**16))
def test_gated_activations_match_torch(kernels, rows, width, seed):
    gate_up = 3 * torch.randn(rows, 1, 2 * width, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(kernels.gated(gate_up, "silu"), F.silu(gate) * up, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kernels.gated(gate_up, "gelu_tanh"), F.gelu(gate, approximate="tanh") * up,
                               rtol=1e-5, atol=1e-5)


def test_gated_and_gemv_refuse_an_activation_they_do_not_have(kernels):
    with pytest.raises(ValueError, match="gelu_tanh"):
        kernels.gated(torch.zeros(1, 1, 8, device=DEVICE), "relu")
    with pytest.raises(ValueError, match="gated_input"):
        kernels.gemv(torch.zeros(1, 1, 8, device=DEVICE), torch.zeros(4, 4, device=DEVICE), gated_input="relu")


@settings(max_examples=20, deadline=None)
@given(in_width=st.integers(1, 300), out_width=st.integers(1, 200), with_bias=st.booleans(),
       k_contiguous=st.booleans(), parts_in=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_gemv_matches_torch(kernels, in_width, out_width, with_bias, k_contiguous, parts_in, seed):
    """One-row split-K GEMV over either weight layout, from a tensor or from partial sums, with bias."""
    g = torch.Generator().manual_seed(seed)
    weight_t = torch.randn(in_width, out_width, generator=g)
    if k_contiguous:  # [out, in] storage seen transposed, as a transformers weight
        weight_t = weight_t.t().contiguous().t()
    bias = torch.randn(out_width, generator=g) if with_bias else None
    x = torch.randn(1, 1, in_width, generator=g)
    expected = x @ weight_t + (bias if with_bias else 0)
    x_in = x
    if parts_in:  # the same input split into partial sums
        pieces = torch.randn(parts_in, 1, in_width, generator=g)
        pieces[0] += x[0] - pieces.sum(0)
        x_in = kernels.PartialSums(pieces.to(DEVICE))
        x = pieces.sum(0, keepdim=True)
        expected = x @ weight_t + (bias if with_bias else 0)
    out = kernels.gemv(x_in if parts_in else x.to(DEVICE), weight_t.to(DEVICE),
                       bias.to(DEVICE) if with_bias else None)
    assert isinstance(out, kernels.PartialSums) and out.parts.dtype == torch.float32
    torch.testing.assert_close(out.total().cpu(), expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(in_width=st.integers(1, 160), widths=st.lists(st.sampled_from([64, 128, 192]), min_size=1, max_size=2),
       last=st.integers(1, 100), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_gemv_over_separately_stored_parts_matches_their_concatenation(kernels, in_width, widths, last, with_bias,
                                                                      seed):
    """A transformers model's q/k/v (or gate/up), stored as separate ``[out, in]`` matrices, read in place as one."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(w, in_width, generator=g).t() for w in widths + [last]]
    biases = [torch.randn(w.shape[1], generator=g) for w in parts] if with_bias else [None] * len(parts)
    x = torch.randn(1, 1, in_width, generator=g)
    expected = x @ torch.cat(parts, dim=1) + (torch.cat(biases) if with_bias else 0)
    given_biases = [b.to(DEVICE) for b in biases] if with_bias else None  # None: no bias for any part
    out = kernels.gemv(x.to(DEVICE), [w.to(DEVICE) for w in parts], given_biases)
    torch.testing.assert_close(out.total().cpu(), expected, rtol=1e-4, atol=1e-4)


def test_gemv_refuses_parts_it_cannot_read_as_one(kernels):
    x = torch.randn(1, 1, 8, device=DEVICE)
    aligned, odd = torch.randn(64, 8, device=DEVICE).t(), torch.randn(40, 8, device=DEVICE).t()
    for weights, biases in (([odd, aligned], None),  # a boundary off the alignment
                            ([aligned, torch.randn(64, 9, device=DEVICE).t()], None),  # other in-widths
                            ([aligned, aligned.contiguous()], None),  # other layouts
                            ([torch.randn(8, 64, device=DEVICE), torch.randn(8, 128, device=DEVICE)], None),  # [in, out]s
                            ([aligned, aligned], [torch.zeros(64, device=DEVICE), None]),  # one bias of two
                            ([aligned] * 4, None),  # more than three
                            ([aligned, aligned], torch.zeros(128, device=DEVICE))):  # one bias for two
        assert not kernels.gemv_applies_to_parts(weights, biases)
        with pytest.raises(ValueError, match="1 to 3 matrices"):
            kernels.gemv(x, weights, biases)


@settings(max_examples=200, deadline=None)
@given(in_width=st.integers(1, 1 << 16), out_width=st.integers(1, 1 << 18), k_contiguous=st.booleans())
def test_every_gemv_tile_can_read_separately_stored_parts(kernels, in_width, out_width, k_contiguous):
    """Whatever tile the GEMV picks for a shape, part boundaries at multiples of PART_ALIGNMENT fall on its
    column tiles (gemv refuses the call otherwise), and the tile is a shape Triton can build."""
    block_n, block_k, warps, stages, per_sm = kernels._gemv_config(in_width, out_width, k_contiguous)
    assert kernels.PART_ALIGNMENT % block_n == 0
    for size in (block_n, block_k, warps):
        assert size & (size - 1) == 0  # powers of two
    assert block_n * block_k <= 128 * 128 and stages >= 1 and per_sm >= 1


@settings(max_examples=10, deadline=None)
@given(in_width=st.integers(100, 260), out_width=st.integers(1, 70), gated=st.booleans(), parts_in=st.integers(1, 3),
       k_contiguous=st.booleans(), seed=st.integers(0, 2**16))
def test_gemv_loads_ahead_without_changing_a_bit(kernels, in_width, out_width, gated, parts_in, k_contiguous, seed):
    """The loop Hopper runs (weights loaded 1 or 2 tiles ahead, the first before the PDL wait; the input an
    iteration ahead or not) multiplies and adds in the plain loop's order: the same bits, and close to torch.
    Tiles of 16 and at most 4 splits (1 program an SM of the interpreter's 4), so each program walks 2 or more."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(parts_in, 1, (2 if gated else 1) * in_width, generator=g)
    weight_t = torch.randn(in_width, out_width, generator=g)
    if k_contiguous:
        weight_t = weight_t.t().contiguous().t()
    summed = x.sum(0, keepdim=True)
    if gated:
        gate, up = summed.chunk(2, dim=-1)
        summed = F.silu(gate) * up
    expected = summed @ weight_t

    def parts(prefetch, ahead=1, input_ahead=False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "GEMV_PREFETCH_WITHOUT_PDL", prefetch)
            patch.setattr(kernels, "GEMV_AHEAD", ahead)
            patch.setattr(kernels, "GEMV_X_AHEAD", input_ahead)
            return kernels.gemv(kernels.PartialSums(x.to(DEVICE)), weight_t.to(DEVICE),
                                gated_input="silu" if gated else None, config=(16, 16, 4, 2, 1)).parts.cpu()

    plain = parts(False)
    torch.testing.assert_close(plain.sum(0).unsqueeze(1), expected, rtol=1e-4, atol=1e-4)
    for ahead in (1, 2):
        for input_ahead in (False, True):
            assert torch.equal(parts(True, ahead, input_ahead), plain), (ahead, input_ahead)


def test_gemv_refuses_a_prefetch_depth_it_does_not_have(kernels, monkeypatch):
    monkeypatch.setattr(kernels, "GEMV_AHEAD", 3)
    with pytest.raises(ValueError, match="GEMV_AHEAD must be 1 or 2"):
        kernels.gemv(torch.zeros(1, 1, 8, device=DEVICE), torch.zeros(8, 4, device=DEVICE))


@settings(max_examples=10, deadline=None)
@given(in_width=st.integers(1, 200), out_width=st.integers(1, 100), seed=st.integers(0, 2**16))
def test_gemv_with_gated_input_matches_torch(kernels, in_width, out_width, seed):
    """The down projection reads act(gate) * up (SiLU, Gemma's tanh-GELU) straight from the gate/up
    projection's output."""
    g = torch.Generator().manual_seed(seed)
    gate_up = torch.randn(1, 1, 2 * in_width, generator=g)
    weight_t = torch.randn(in_width, out_width, generator=g)
    gate, up = gate_up.chunk(2, dim=-1)
    for act, reference in (("silu", F.silu(gate)), ("gelu_tanh", F.gelu(gate, approximate="tanh"))):
        expected = (reference * up) @ weight_t
        for given_as in (gate_up.to(DEVICE), kernels.PartialSums(torch.stack((gate_up[0], 0 * gate_up[0])).to(DEVICE))):
            out = kernels.gemv(given_as, weight_t.to(DEVICE), gated_input=act)
            torch.testing.assert_close(out.total().cpu(), expected, rtol=1e-4, atol=1e-4)


def _reference_attention(qkv, cos, sin, slot, valid, keys, values, heads, kv_heads, dim, qk_norm=None,
                         scale=None, softcap=None, window=None):
    """graph_step's unfused ops: (norm the heads,) rotate, write the cache at ``slot``, then attention over
    the valid slots written out by hand: scaled scores (soft-capped), masked (to the window), softmax."""
    batch = qkv.shape[0]
    qkv = qkv.view(batch, 1, heads + 2 * kv_heads, dim)
    qk = qkv[:, :, : heads + kv_heads]
    if qk_norm is not None:
        q_weight, k_weight, eps = qk_norm
        qk = torch.cat((F.rms_norm(qk[:, :, :heads], (dim,), q_weight, eps),
                        F.rms_norm(qk[:, :, heads:], (dim,), k_weight, eps)), dim=2)
    qk = apply_rotary(qk, cos, sin)
    keys.index_copy_(2, slot.view(1), qk[:, :, heads:].transpose(1, 2))
    values.index_copy_(2, slot.view(1), qkv[:, :, heads + kv_heads:].transpose(1, 2))
    queries = qk[:, :, :heads].reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = queries @ keys.transpose(-1, -2) * (dim ** -0.5 if scale is None else scale)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    attend = valid[:, None, None, :]
    if window is not None:
        attend = attend & (torch.arange(valid.shape[-1], device=valid.device) > slot - window)
    out = torch.softmax(scores.masked_fill(~attend, float("-inf")), dim=-1) @ values
    return out.reshape(batch, 1, heads * dim)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), kv_heads=st.integers(1, 3), groups=st.sampled_from([1, 3, 4]),
       dim=st.sampled_from([8, 16, 24]), max_len=st.integers(1, 80), data=st.data())
def test_rope_cache_attention_matches_the_unfused_ops(kernels, batch, kv_heads, groups, dim, max_len, data):
    heads = kv_heads * groups
    slot = data.draw(st.integers(0, max_len - 1), label="slot")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    shared_positions = data.draw(st.booleans(), label="shared_positions")
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, 1, (heads + 2 * kv_heads) * dim, generator=g)
    rotary = data.draw(st.sampled_from([dim, dim // 2]), label="rotary_dim")  # Phi-3's partial rotary: dim // 2
    angles = torch.rand(1 if shared_positions else batch, 1, 1, rotary // 2, generator=g) * 6.3
    cos = torch.cat((angles.cos(), angles.cos()), -1)
    sin = torch.cat((-angles.sin(), angles.sin()), -1)
    keys = torch.randn(batch, kv_heads, max_len, dim, generator=g)
    values = torch.randn(batch, kv_heads, max_len, dim, generator=g)
    valid = torch.rand(batch, max_len, generator=g) < 0.7  # left padding and holes
    valid[:, slot] = True
    valid[:, slot + 1:] = False
    qk_norm = None
    if data.draw(st.booleans(), label="qk_norm"):  # Qwen3's per-head norms of queries and keys
        qk_norm = ((1 + 0.3 * torch.randn(dim, generator=g)).to(DEVICE), (1 + 0.3 * torch.randn(dim, generator=g)).to(DEVICE),
                   1e-6)
    gemma = dict(scale=data.draw(st.sampled_from([None, 0.3]), label="scale"),  # Gemma's query_pre_attn_scalar
                 softcap=data.draw(st.sampled_from([None, 0.7, 50.0]), label="softcap"),  # Gemma 2's score cap
                 window=data.draw(st.sampled_from([None, 1, 3, 17]), label="window"))  # a sliding layer
    qkv, cos, sin, keys, values, valid = (t.to(DEVICE) for t in (qkv, cos, sin, keys, values, valid))
    slot_t = torch.tensor(slot, device=DEVICE)
    ref_keys, ref_values = keys.clone(), values.clone()
    expected = _reference_attention(qkv, cos, sin, slot_t, valid, ref_keys, ref_values, heads, kv_heads, dim, qk_norm,
                                    **gemma)
    if data.draw(st.booleans(), label="qkv_as_partial_sums"):
        qkv = kernels.PartialSums(torch.stack((0.25 * qkv[:, 0], 0.75 * qkv[:, 0])))
    # the cached slots split among 1-8 programs (some with no slot at all); 1 to all query heads of a
    # group per program
    queries = data.draw(st.sampled_from([q for q in (1, 2, 3, 4) if groups % q == 0]), label="queries")
    config = (data.draw(st.sampled_from([1, 2, 4, 8]), label="splits"), queries,
              data.draw(st.sampled_from([16, 32]), label="block_s"), 4, 1)
    arrivals = kernels.new_arrivals(batch, heads, DEVICE)
    by_position = {}
    if data.draw(st.booleans(), label="cos_sin_from_a_table"):  # RotaryEmbedding.table's form: rows by position
        rows = cos.shape[0]
        positions = torch.tensor(data.draw(st.lists(st.integers(0, 9), min_size=rows, max_size=rows, unique=True),
                                           label="positions"), device=DEVICE)[:, None]
        table_cos, table_sin = (torch.randn(10, rotary, generator=g).to(DEVICE) for _ in range(2))
        table_cos[positions[:, 0]], table_sin[positions[:, 0]] = cos.view(rows, rotary), sin.view(rows, rotary)
        cos, sin, by_position = table_cos, table_sin, dict(positions=positions)
    out = kernels.rope_cache_attention(qkv, cos, sin, slot_t, valid, keys, values, heads, kv_heads, dim,
                                       config=config, arrivals=arrivals, qk_norm=qk_norm, **by_position, **gemma)
    assert not arrivals.any()  # left zero for the next call
    torch.testing.assert_close(keys, ref_keys, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values, ref_values, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(batch=st.sampled_from([1, 2, 16]), groups=st.integers(1, 16), head_dim=st.integers(8, 512))
def test_attention_config_keeps_the_tuned_tile_of_products(kernels, batch, groups, head_dim):
    """Fitted to any model, the attention settings stay runnable and no larger than tuned: query heads per
    program divide the group, slots per tile are a power of two no more than tuned, and the tile of
    products [queries, block_s, head] is no larger than the tuned one (unless one slot already is)."""
    splits, queries, block_s, warps, stages = kernels.attention_config(batch, groups, head_dim)
    tuned = kernels.ATTENTION_CONFIG["one row" if batch == 1 else "rows"]
    assert (splits, warps, stages) == (tuned[0] or 1, tuned[3], tuned[4])  # fitted splits: 1 without the GPU's size
    assert groups % queries == 0 and queries <= tuned[1]
    assert block_s & (block_s - 1) == 0 and 1 <= block_s <= tuned[2]
    tile = queries * block_s * triton_next_power_of_2(head_dim)
    tuned_tile = tuned[1] * tuned[2] * kernels.ATTENTION_TUNED_HEAD_DIM
    assert tile <= tuned_tile or block_s == 1
    assert tile * 2 > tuned_tile or block_s == tuned[2]  # and no smaller than it needs to be


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 256), teams=st.sampled_from([1, 2, 4, 8, 16]), multiprocessors=st.integers(1, 200))
def test_fitted_attention_splits_fill_the_gpu_without_overfilling_it(kernels, rows, teams, multiprocessors):
    """Several rows: each row's slots are split the most ways (a power of two, at most 16) that keep the launch
    within ROWS_PROGRAMS_PER_SM programs per multiprocessor; one way when even unsplit it is past that. The
    shipped rows setting asks for this (splits 0) and attention_config passes it on."""
    programs = rows * teams
    splits = kernels.attention_splits(programs, multiprocessors)
    budget = kernels.ROWS_PROGRAMS_PER_SM * multiprocessors
    assert splits & (splits - 1) == 0 and 1 <= splits <= kernels.MAX_ATTENTION_SPLITS
    assert splits == 1 or programs * splits <= budget
    assert splits == kernels.MAX_ATTENTION_SPLITS or programs * splits * 2 > budget
    if kernels.ATTENTION_CONFIG["rows"][0] == 0 and rows > 1:
        fitted = kernels.attention_config(rows, 4, 64, heads=4 * teams, multiprocessors=multiprocessors)
        assert fitted[0] == kernels.attention_splits(rows * teams, multiprocessors)


def test_rows_attention_on_an_h100_splits_16_rows_in_two_and_64_not(kernels):
    """The measured cases (an H100 has 132 multiprocessors; the 1B shape 32 query heads, groups of 4): 16
    rows ran fastest with 2 splits, 64 rows with none (bench/probes/rows_variants.py)."""
    assert kernels.attention_config(16, 4, 64, heads=32, multiprocessors=132)[:2] == (2, 4)
    assert kernels.attention_config(64, 4, 64, heads=32, multiprocessors=132)[:2] == (1, 4)


def triton_next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def test_rope_cache_attention_keeps_positions_inside_the_table(kernels):
    """A position past the table's end (or below 0) reads its last (first) row, never memory outside it."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 1, 3 * 8, generator=g).to(DEVICE)
    table_cos, table_sin = (torch.randn(4, 8, generator=g).to(DEVICE) for _ in range(2))
    valid = torch.ones(2, 3, dtype=torch.bool, device=DEVICE)

    def attend(cos, sin, **kw):
        keys, values = torch.zeros(2, 1, 3, 8, device=DEVICE), torch.zeros(2, 1, 3, 8, device=DEVICE)
        out = kernels.rope_cache_attention(qkv, cos, sin, torch.tensor(2, device=DEVICE), valid, keys, values,
                                           1, 1, 8, **kw)
        return out, keys

    out, keys = attend(table_cos, table_sin, positions=torch.tensor([[7], [-3]], device=DEVICE))
    rows = torch.tensor([3, 0], device=DEVICE)
    expected_out, expected_keys = attend(table_cos[rows].view(2, 1, 1, 8), table_sin[rows].view(2, 1, 1, 8))
    assert torch.equal(out, expected_out) and torch.equal(keys, expected_keys)
    with pytest.raises(ValueError, match="tables"):
        attend(table_cos[None, :, None], table_sin[None, :, None], positions=torch.zeros(2, 1, dtype=torch.long))


def test_rope_cache_attention_refuses_a_config_it_cannot_run(kernels):
    args = (torch.zeros(1, 1, 48), torch.ones(1, 1, 1, 8), torch.zeros(1, 1, 1, 8), torch.tensor(0),
            torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8), 4, 1, 8)
    for bad in ((1, 3, 16, 4, 1), (3, 1, 16, 4, 1)):  # 3 heads per program of a group of 4; 3 splits
        with pytest.raises(ValueError, match="attention config"):
            kernels.rope_cache_attention(*args, config=bad)


def test_rope_cache_attention_refuses_mismatched_buffers(kernels):
    keys = torch.zeros(1, 1, 4, 8)
    values = torch.zeros(1, 4, 1, 8).transpose(1, 2)
    with pytest.raises(ValueError, match="contiguous layout"):
        kernels.rope_cache_attention(torch.zeros(1, 1, 24), torch.ones(1, 1, 1, 8), torch.zeros(1, 1, 1, 8),
                                     torch.tensor(0), torch.ones(1, 4, dtype=torch.bool), keys, values, 1, 1, 8)


@pytest.mark.parametrize("qk_norm", [False, True], ids=["llama", "qwen3 norms"])
@pytest.mark.parametrize("rows", [1, 2], ids=["one row: GEMV kernels", "two rows: PyTorch matmuls"])
def test_fused_step_logits_match_the_unfused_step(kernels, rows, qk_norm, monkeypatch):
    import genplug

    model = native_model(seed=3, qk_norm=qk_norm).to(DEVICE, torch.bfloat16)
    model.store_for_gpu_decode()  # the projections through the GEMV kernel at one row
    prompt = torch.tensor([[5, 9, 17, 3, 44], [0, 0, 8, 61, 2]], device=DEVICE)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], device=DEVICE)
    cache = genplug.StaticCache(config=model.config, max_cache_len=12)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    model(prompt, attention_mask=mask, position_ids=positions, past_key_values=cache)
    unfused_cache = genplug.StaticCache(config=model.config, max_cache_len=12)
    model(prompt, attention_mask=mask, position_ids=positions, past_key_values=unfused_cache)

    token, slot = torch.tensor([[7], [11]], device=DEVICE), torch.tensor(5, device=DEVICE)
    valid = torch.zeros(2, 12, dtype=torch.bool, device=DEVICE)
    valid[:, :6] = torch.cat((mask, torch.ones_like(mask[:, :1])), -1).bool()
    position = positions[:, -1:] + 1
    if rows == 1:  # the second row alone (left padding), over caches of one row
        for c in (cache, unfused_cache):
            for layer in c.layers:
                layer.keys, layer.values = layer.keys[1:].contiguous(), layer.values[1:].contiguous()
        token, position, valid = token[1:], position[1:], valid[1:]
    gemv_calls, real_gemv = [], kernels.gemv
    monkeypatch.setattr(kernels, "gemv", lambda *a, **k: gemv_calls.append(k) or real_gemv(*a, **k))
    fused = graph_step.static_decode_step(model, token, position, slot, valid, cache.layers)
    # the attention kernels' split counters are the model's, made once and left zero for the next step
    from genplug.plugins.models.llama import fused_step

    arrivals = fused_step.attention_arrivals(model, rows, token.device)
    assert not arrivals.any() and fused_step.attention_arrivals(model, rows, token.device) is arrivals
    # one row: qkv, o, gate/up and down (SiLU input) of every layer and the output head through the GEMV
    # kernel; two rows: none
    layers = model.config.num_hidden_layers
    assert len(gemv_calls) == (4 * layers + 1 if rows == 1 else 0)
    assert sum(k.get("gated_input") == "silu" for k in gemv_calls) == (layers if rows == 1 else 0)
    unfused = graph_step.static_decode_step(model, token, position, slot, valid, unfused_cache.layers,
                                            layer_fn=graph_step.decode_layer)
    # one row: float32 from the head's GEMV; two rows: the head's own dtype (the loop's token choice reads it
    # as it is); the unfused step's float32
    assert fused.dtype == (torch.float32 if rows == 1 else torch.bfloat16)
    assert fused.shape == (rows, model.config.vocab_size)
    fused = fused.float()
    torch.testing.assert_close(fused, unfused, rtol=0.05, atol=0.05)  # bf16 noise of different roundings
    assert (fused.argmax(-1) == unfused.argmax(-1)).all()
    for mine, theirs in zip(cache.layers, unfused_cache.layers):
        torch.testing.assert_close(mine.keys.float(), theirs.keys.float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("rows", [1, 2], ids=["one row: GEMV kernels", "two rows: PyTorch matmuls"])
def test_eager_forward_and_graph_loop_share_the_kernels(kernels, graph_on_cpu, rows, monkeypatch):
    """Greedy output of the eager loop (model forward, one token at a time) equals the graph loop's,
    bit for bit, because both run :func:`graph_step.fused_decode_hidden` (the graph step with cos/sin
    from RoPE's table, the eager one computing them); with left padding."""
    import genplug
    model = native_model(seed=1).to(DEVICE, torch.bfloat16)
    model.store_for_gpu_decode()
    prompt = torch.tensor([[5, 9, 17, 3, 44], [0, 0, 8, 61, 2]], device=DEVICE)[:rows]
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], device=DEVICE)[:rows]
    kw = dict(attention_mask=mask, max_new_tokens=10, cache_implementation="static", pad_token_id=0)
    from genplug import loop_kernels

    chosen_from, real_choice = [], loop_kernels.choose_and_accept
    monkeypatch.setattr(loop_kernels, "choose_and_accept", lambda s, *a, **k: chosen_from.append(s.dtype) or real_choice(s, *a, **k))
    graph = genplug.generate(model, prompt, **kw)
    assert graph_on_cpu.LAST_CAPTURE_SECONDS is not None
    # no processors: the step's token is chosen from the head's logits as they are, uncopied -- float32 from
    # the head's GEMV at one row, bf16 from cuBLAS at two
    assert set(chosen_from) == {torch.float32 if rows == 1 else torch.bfloat16}
    eager = genplug.generate(model, prompt, disable_compile=True, **kw)
    assert torch.equal(graph, eager)
    # and the fused eager step is really taken: the static cache's counters advance through mark_written
    cache = genplug.StaticCache(config=model.config, max_cache_len=16)
    out = model(prompt[:1], past_key_values=cache)
    step = model(out.logits[:, -1:].argmax(-1), past_key_values=cache)
    assert cache.get_seq_length() == 6 and step.logits.shape == (1, 1, model.config.vocab_size)
    full = model(torch.cat((prompt[:1], out.logits[:, -1:].argmax(-1)), -1), past_key_values=None, use_cache=False)
    torch.testing.assert_close(step.logits[:, -1].float(), full.logits[:, -1].float(), rtol=0.05, atol=0.05)


def test_kernels_stay_off_where_they_do_not_apply(kernels, monkeypatch):
    assert not kernels.usable(torch.zeros(1, 1, 8, device=DEVICE))  # float32: the PyTorch step, exact
    assert kernels.usable(torch.zeros(1, 1, 8, dtype=torch.float16, device=DEVICE))
    monkeypatch.setenv("GENPLUG_DECODE_KERNELS", "0")
    assert not kernels.usable(torch.zeros(1, 1, 8, dtype=torch.float16, device=DEVICE))


def _one_step(model, rows=2, fused_in_float32=False, **step_kw):
    """Logits of one decode step after a left-padded prompt (``rows=1``: its padded row alone), over a
    fresh static cache whose sliding layers span it (slot 5 of 12; Gemma's window of 4 leaves slots 0-1
    out). ``fused_in_float32``: through the fused kernels even though the model is float32 (which the
    step itself never does: the kernels are for half precision, but their arithmetic is float32)."""
    import genplug
    from genplug.plugins.models.llama import fused_step

    prompt = torch.tensor([[5, 9, 17, 3, 44], [0, 0, 8, 61, 2]], device=DEVICE)[-rows:]
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], device=DEVICE)[-rows:]
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    token, slot = torch.tensor([[7], [11]], device=DEVICE)[-rows:], torch.tensor(5, device=DEVICE)
    valid = torch.zeros(rows, 12, dtype=torch.bool, device=DEVICE)
    valid[:, :6] = torch.cat((mask, torch.ones_like(mask[:, :1])), -1).bool()
    cache = genplug.StaticCache(config=model.config, max_cache_len=12, crop_margin=12)
    with torch.no_grad():
        model(prompt, attention_mask=mask, position_ids=positions, past_key_values=cache)
        if fused_in_float32:
            normed = fused_step.fused_decode_hidden(model, model.model.embed_tokens(token), positions[:, -1:] + 1, slot,
                                                    valid, cache.layers, positions_below=12)
            return model.logits_of(normed)[:, -1].float()
        return graph_step.static_decode_step(model, token, positions[:, -1:] + 1, slot, valid, cache.layers, **step_kw)


def _assert_fused_step_matches_the_pytorch_step(model, rows=2):
    """In float32 (same weights) the fused kernels compute the PyTorch step's logits to float32 rounding:
    every norm, rotation, mask, cap and activation is right. In bf16 (the step the model takes) they are
    no further from the float32 step than twice the bf16 PyTorch step is, or 5% of the logits' range."""
    wide = copy.deepcopy(model).float()
    reference = _one_step(wide, rows, layer_fn=graph_step.decode_layer)
    torch.testing.assert_close(_one_step(wide, rows, fused_in_float32=True), reference, rtol=1e-4, atol=1e-4)
    fused = _one_step(model, rows)
    unfused = _one_step(model, rows, layer_fn=graph_step.decode_layer)
    fused_error, bf16_error = (fused - reference).abs().max(), (unfused - reference).abs().max()
    assert fused_error <= max(2 * bf16_error, 0.05 * reference.abs().max()), (fused_error, bf16_error)


@pytest.mark.parametrize("rows", [1, 2], ids=["one row: GEMV kernels", "two rows: PyTorch matmuls"])
@pytest.mark.parametrize("family", [*GEMMA_SWITCHES])
def test_gemma_models_run_the_fused_kernels(kernels, graph_on_cpu, family, rows, monkeypatch):
    """Gemma 1/2/3 through the fused kernels: (1 + weight) norms, the embedding scale, sandwich norms
    (the attention and MLP outputs normed inside the next add+norm kernel), the attention scale, Gemma 2's
    soft-capped scores, Gemma 3's q/k norms and local RoPE, tanh-GELU in the down GEMV's input, sliding
    windows and the soft-capped head. Logits within bf16 noise of the PyTorch step (float32 oracle),
    and greedy graph == eager path, with left padding."""
    import genplug
    from genplug.plugins.models.llama import fused_step

    model = native_model(seed=2, **GEMMA_SWITCHES[family]).to(DEVICE, torch.bfloat16)
    model.store_for_gpu_decode()
    assert model.fused_kernels_fit
    ran, real = [], fused_step.fused_decode_hidden
    monkeypatch.setattr(fused_step, "fused_decode_hidden", lambda *a, **k: ran.append(1) or real(*a, **k))
    _assert_fused_step_matches_the_pytorch_step(model, rows)
    assert ran
    prompt = torch.tensor([[5, 9, 17, 3, 44], [0, 0, 8, 61, 2]], device=DEVICE)[-rows:]
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], device=DEVICE)[-rows:]

    def run(**kw):  # sliding layers take the graph step when their buffers span the cache (crop_margin)
        cache = genplug.StaticCache(config=model.config, max_cache_len=13, crop_margin=13)
        return genplug.generate(model, prompt, attention_mask=mask, max_new_tokens=8, past_key_values=cache,
                                pad_token_id=0, **kw)

    graph = run()
    assert graph_on_cpu.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(graph, run(disable_compile=True))


def test_a_transformers_twin_reads_its_separate_q_k_v_and_gate_up_through_one_gemv(kernels, graph_on_cpu, monkeypatch):
    """The twin of a transformers Llama keeps q/k/v and gate/up as separate matrices (read in place):
    at one row each set goes through one GEMV launch, not one matmul per matrix and a concatenation, and
    so does the output head.
    Greedy graph == eager path, and the fused step's logits stay within bf16 noise of transformers'."""
    transformers = pytest.importorskip("transformers")
    import genplug

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=128, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=32, vocab_size=120, pad_token_id=0)
    hf = transformers.LlamaForCausalLM(config).to(DEVICE, torch.bfloat16).eval()
    widths, real_gemv = [], kernels.gemv
    monkeypatch.setattr(kernels, "gemv", lambda x, w, *a, **k: widths.append(
        tuple(p.shape[1] for p in w) if isinstance(w, (list, tuple)) else (w.shape[1],)) or real_gemv(x, w, *a, **k))
    prompt = torch.tensor([[5, 9, 17, 3, 44]], device=DEVICE)
    kw = dict(max_new_tokens=6, cache_implementation="static")
    graph = genplug.generate(hf, prompt, **kw)
    assert graph_on_cpu.LAST_CAPTURE_SECONDS is not None
    assert (128, 64, 64) in widths and (192, 192) in widths  # q/k/v and gate/up, one launch each
    assert (120,) in widths  # the output head, transformers' [vocab, hidden] matrix read in place
    assert torch.equal(graph, genplug.generate(hf, prompt, disable_compile=True, **kw))
    out = genplug.generate(hf, prompt, disable_compile=True, output_logits=True, return_dict_in_generate=True, **kw)
    with torch.no_grad():
        theirs = hf(out.sequences[:, :-1]).logits[:, prompt.shape[1] - 1:].float()
    torch.testing.assert_close(torch.stack(out.logits, 1).float(), theirs, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("family", [*PHI3_SWITCHES])
def test_phi3_partial_rotary_and_longrope_run_the_fused_kernels(kernels, graph_on_cpu, family, monkeypatch):
    """Phi-3's partial rotary (RoPE turns the first rotary_dim dimensions of each head) and LongRoPE's
    scaled, position-dependent cos/sin go through the fused kernels: the step's logits are as close
    to the PyTorch step in float32 as the PyTorch step in bf16 is (bf16 noise, not a wrong rotation),
    and greedy graph == eager path, with left padding."""
    import genplug

    model = native_model(seed=2, **PHI3_SWITCHES[family]).to(DEVICE, torch.bfloat16)
    model.store_for_gpu_decode()
    assert model.fused_kernels_fit and model.config.rotary_dim < model.config.head_dim
    _assert_fused_step_matches_the_pytorch_step(model)
    prompt = torch.tensor([[5, 9, 17, 3, 44], [0, 0, 8, 61, 2]], device=DEVICE)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], device=DEVICE)
    kw = dict(attention_mask=mask, max_new_tokens=8, cache_implementation="static", pad_token_id=0)
    graph = genplug.generate(model, prompt, **kw)
    assert graph_on_cpu.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(graph, genplug.generate(model, prompt, disable_compile=True, **kw))


def test_a_transformers_phi3_twin_with_partial_rotary_runs_the_fused_kernels(kernels, graph_on_cpu, monkeypatch):
    """A transformers Phi-3 (3/4 of each head rotated) through its twin and the fused kernels: greedy
    graph == eager path, and the step's logits within bf16 noise of transformers' own."""
    transformers = pytest.importorskip("transformers")
    import genplug
    from genplug.plugins.models.llama import fused_step

    torch.manual_seed(0)
    config = transformers.Phi3Config(hidden_size=128, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, vocab_size=120, pad_token_id=0, partial_rotary_factor=0.75,
                                     sliding_window=None, max_position_embeddings=64)
    hf = transformers.Phi3ForCausalLM(config).to(DEVICE, torch.bfloat16).eval()
    ran, real = [], fused_step.fused_decode_hidden
    monkeypatch.setattr(fused_step, "fused_decode_hidden", lambda *a, **k: ran.append(1) or real(*a, **k))
    prompt = torch.tensor([[5, 9, 17, 3, 44]], device=DEVICE)
    kw = dict(max_new_tokens=6, cache_implementation="static")
    graph = genplug.generate(hf, prompt, **kw)
    assert ran and graph_on_cpu.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(graph, genplug.generate(hf, prompt, disable_compile=True, **kw))
    out = genplug.generate(hf, prompt, disable_compile=True, output_logits=True, return_dict_in_generate=True, **kw)
    with torch.no_grad():
        theirs = hf(out.sequences[:, :-1]).logits[:, prompt.shape[1] - 1:].float()
    torch.testing.assert_close(torch.stack(out.logits, 1).float(), theirs, rtol=0.05, atol=0.05)


def _tiny_transformers_gemma(transformers, family):
    """A random transformers Gemma 1 / 2 / 3 (text) model, its sliding window longer than the tests' calls."""
    shape = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16, vocab_size=120, pad_token_id=0, max_position_embeddings=64)
    if family == "gemma":
        return transformers.GemmaForCausalLM(transformers.GemmaConfig(**shape))
    sliding = dict(sliding_window=32, query_pre_attn_scalar=16)
    if family == "gemma2":
        return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            **shape, **sliding, attn_logit_softcapping=20.0, final_logit_softcapping=10.0,
            attn_implementation="eager"))  # the soft-capping attention (transformers 5.17 defaults Gemma 2 to SDPA)
    return transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**shape, **sliding, sliding_window_pattern=2))


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3"])
def test_a_transformers_gemma_twin_runs_the_fused_kernels(kernels, graph_on_cpu, family, monkeypatch):
    """A transformers Gemma through its native twin takes the fused kernels for its one-token steps, and
    its generated logits stay within bf16 noise of transformers' own forward."""
    transformers = pytest.importorskip("transformers")
    import genplug
    from genplug.plugins.models.llama import fused_step

    torch.manual_seed(0)
    hf = _tiny_transformers_gemma(transformers, family).to(DEVICE, torch.bfloat16).eval()
    ran, real = [], fused_step.fused_decode_hidden
    monkeypatch.setattr(fused_step, "fused_decode_hidden", lambda *a, **k: ran.append(1) or real(*a, **k))
    prompt = torch.tensor([[5, 9, 17, 3, 44]], device=DEVICE)
    kw = dict(max_new_tokens=6, cache_implementation="static")
    out = genplug.generate(hf, prompt, disable_compile=True, output_logits=True, return_dict_in_generate=True, **kw)
    assert ran
    with torch.no_grad():
        theirs = hf(out.sequences[:, :-1]).logits[:, prompt.shape[1] - 1:].float()
    mine = torch.stack(out.logits, 1).float()
    assert (mine - theirs).abs().max() <= 0.05 * theirs.abs().max() + 0.05
