"""The GPU-only branches of the decode kernels -- programmatic dependent launch, the split attention's
atomic merge, Qwen3's q/k norms, Gemma's soft-capped scores, tanh-GELU and normed deltas -- compile for an H100 (sm_90) even on a machine without a GPU.

Triton's interpreter (the other kernel tests) never compiles them, so a typo there would only show on
a lent GPU. The graph loop's bookkeeping kernels (core/loop_kernels.py) are compiled too. The
merge must publish its partial results with a release/acquire atomic behind a barrier.
The compiler runs in a subprocess: this test session runs Triton in interpreter mode.
"""

import pytest

pytest.importorskip("triton")

from helpers.compile_for_gpu import compiled_json  # noqa: E402

COMPILE = r'''
import json, os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from genplug.plugins.models.llama import decode_kernels as dk

GEMV = {"x_ptr": "*fp32", "x_parts_stride": "i32", "w_ptr": "*bf16", "w_stride_k": "i32", "w_stride_n": "i32",
        "bias_ptr": "*bf16", "out_ptr": "*fp32", "in_width": "i32", "out_width": "i32", "k_per_split": "i32",
        "w1_ptr": "*bf16", "bias1_ptr": "*bf16", "bound1": "i32", "w2_ptr": "*bf16", "bias2_ptr": "*bf16", "bound2": "i32"}
NORM = {"x_ptr": "*bf16", "delta_ptr": "*fp32", "delta_parts_stride": "i32", "weight_ptr": "*bf16",
        "sum_ptr": "*bf16", "norm_ptr": "*bf16", "width": "i32", "eps": "fp32", "delta_weight_ptr": "*fp32",
        "delta_eps": "fp32", "token_ptr": "*i64", "table_stride_width": "i32", "table_stride_token": "i32",
        "x_scale": "fp32"}
ATTENTION = {"qkv_ptr": "*fp32", "qkv_parts_stride": "i32", "cos_ptr": "*bf16", "sin_ptr": "*bf16", "slot_ptr": "*i64",
             "valid_ptr": "*u8", "keys_ptr": "*bf16", "values_ptr": "*bf16", "out_ptr": "*bf16",
             "partial_ptr": "*fp32", "arrivals_ptr": "*i32", "q_norm_ptr": "*bf16", "k_norm_ptr": "*bf16",
             "norm_eps": "fp32", "position_ptr": "*i64", "position_row": "i32", "table_rows": "i32", "qkv_row": "i32", "rope_row": "i32", "valid_row": "i32", "cache_batch": "i32",
             "cache_head": "i32", "cache_slot": "i32", "scale": "fp32", "softcap": "fp32", "window": "i32"}
ONE_B = {"HEADS": 32, "KV_HEADS": 8, "GROUPS": 4, "DIM": 64, "QKV_PARTS": 4, "BLOCK_D": 64}

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

def stack_bytes(cubin):
    """Bytes of stack per thread (register spills) in the compiled kernel, or None without cuobjdump."""
    if not os.path.exists(CUOBJDUMP):
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    found = re.search(r"STACK:(\d+)", usage)
    return int(found.group(1)) if found else None

def compiled(kernel, signature, constants, warps=4):
    source = ASTSource(fn=kernel, signature={**signature, **{k: "constexpr" for k in constants}}, constexprs=constants)
    out = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    ptx = out.asm["ptx"]
    lines = ptx.splitlines()
    atomics = [i for i, line in enumerate(lines) if "atom." in line]
    return {"cubin": "cubin" in out.asm, "gdc_wait": "griddepcontrol.wait" in ptx,
            "atomics": [lines[i].strip() for i in atomics],
            "barrier_before_atomic": bool(atomics) and any("bar.sync" in l for l in lines[max(0, atomics[0] - 12):atomics[0]]),
            "cached_past_l1": "ld.global.cg" in ptx, "stack": stack_bytes(out.asm["cubin"])}

results = {}
for pdl in (False, True):
    for gate in (0, 2 if pdl else 1):
        # a gated input (SiLU, Gemma's tanh-GELU) with the weights in three parts and biases (a transformers
        # twin's q/k/v), else one matrix; with the gate under PDL, 2 weight tiles and the input loaded ahead
        results[f"gemv pdl={pdl} gate={gate}"] = compiled(dk._gemv_kernel, GEMV, {"X_PARTS": 4, "X_GATE": gate,
            "HAS_BIAS": gate > 0, "W_PARTS": 3 if gate else 1, "BLOCK_N": 16, "BLOCK_K": 256, "PDL": pdl,
            "PREFETCH": pdl, "AHEAD": 2 if pdl and gate else 1, "X_AHEAD": bool(pdl and gate)})
    results[f"norm pdl={pdl}"] = compiled(dk._add_rms_norm_kernel, NORM, {"DELTA_PARTS": 4, "DELTA_NORM": pdl,
                                                                          "GATHER": False, "SCALED": False,
                                                                          "BLOCK": 2048, "PDL": pdl})
    # the first layer's norm, looking the token up (Gemma's scale with PDL)
    results[f"embed norm pdl={pdl}"] = compiled(dk._add_rms_norm_kernel, NORM, {"DELTA_PARTS": 0, "DELTA_NORM": False,
                                                                                "GATHER": True, "SCALED": pdl,
                                                                                "BLOCK": 2048, "PDL": pdl})
for splits, queries, block_s, qk_norm, table, rot, pdl in ((1, 1, 128, False, False, 64, False),
                                                           (8, 4, 32, False, True, 64, True),
                                                           (16, 4, 16, True, False, 48, True),
                                                           (4, 1, 32, True, True, 48, False)):
    results[f"attention splits={splits} queries={queries} qk_norm={qk_norm} rope_table={table} rotary={rot} "
            f"pdl={pdl}"] = compiled(
        dk._rope_cache_attention_kernel, ATTENTION, {**ONE_B, "QUERIES": queries, "SPLITS": splits,
        "BLOCK_G": queries, "BLOCK_S": block_s, "QK_NORM": qk_norm, "ROPE_TABLE": table, "ROPE_DIM": rot,
        "PDL": pdl, "EARLY_LOADS": True, "SOFTCAP": qk_norm})
# the tuned attention settings (decode_kernels.attention_config) for heads of 64 (the tuned shape), 128
# (Llama 3 8B, Mistral 7B) and 256 (Gemma; groups of 4, 2 and 1 query heads), one row and several
for batch in (1, 4):
    for dim, heads, kv_heads in ((64, 32, 8), (128, 32, 8), (256, 4, 1), (256, 8, 4), (256, 4, 4)):
        splits, queries, block_s, warps, _ = dk.attention_config(batch, heads // kv_heads, dim)
        results[f"attention tuned batch={batch} dim={dim} groups={heads // kv_heads} splits={splits} pdl=True"] = compiled(
            dk._rope_cache_attention_kernel, ATTENTION, {"HEADS": heads, "KV_HEADS": kv_heads, "GROUPS": heads // kv_heads,
            "DIM": dim, "QKV_PARTS": 4 if batch == 1 else 1, "BLOCK_D": dim, "QUERIES": queries, "SPLITS": splits,
            "BLOCK_G": queries, "BLOCK_S": block_s, "QK_NORM": False, "ROPE_TABLE": True, "ROPE_DIM": dim, "PDL": True,
            "EARLY_LOADS": True, "SOFTCAP": False}, warps=warps)
# the graph loop's bookkeeping kernels (core/loop_kernels.py)
from genplug import loop_kernels as lk
results["loop advance"] = compiled(lk._advance_kernel, {"tokens_ptr": "*i64", "tokens_row": "i32", "slot_ptr": "*i64",
    "positions_ptr": "*i64", "positions_row": "i32", "valid_ptr": "*u8", "valid_row": "i32", "token_out_ptr": "*i64",
    "column_out_ptr": "*i64", "rows": "i32", "valid_cols": "i32"}, {"BLOCK_R": 64})
results["loop accept"] = compiled(lk._accept_kernel, {"best_ptr": "*fp32", "index_ptr": "*i32", "chunks": "i32",
    "rows": "i32", "tokens_ptr": "*i64", "tokens_row": "i32", "column_ptr": "*i64", "slot_ptr": "*i64",
    "unfinished_ptr": "*u8", "generated_ptr": "*i64", "eos_ptr": "*i64", "eos_count": "i32", "pad": "i32",
    "fed_ptr": "*i64", "positions_ptr": "*i64", "positions_row": "i32", "valid_ptr": "*u8", "valid_row": "i32",
    "valid_cols": "i32"},
    {"HAS_EOS": True, "ADVANCE": True, "BLOCK_R": 64, "BLOCK_C": 128, "BLOCK_E": 2, "FEED": True})
# several rows' bf16 logits from cuBLAS; one row's float32 logits from the head's GEMV, after a PDL wait
for name, scores, pdl in (("loop choose+accept pdl=False", "*bf16", False), ("loop choose+accept pdl=True", "*fp32", True)):
    results[name] = compiled(lk._choose_accept_kernel, {"scores_ptr": scores, "width": "i32",
        "seed_ptr": "*i64", "step_ptr": "*i64", "arrivals_ptr": "*i32", "best_ptr": "*fp32", "index_ptr": "*i32",
        "chunks": "i32", "rows": "i32", "tokens_ptr": "*i64", "tokens_row": "i32", "column_ptr": "*i64",
        "slot_ptr": "*i64", "unfinished_ptr": "*u8", "generated_ptr": "*i64", "eos_ptr": "*i64", "eos_count": "i32",
        "pad": "i32", "fed_ptr": "*i64", "positions_ptr": "*i64", "positions_row": "i32", "valid_ptr": "*u8",
        "valid_row": "i32", "valid_cols": "i32"}, {"GUMBEL": True, "CHUNK": 1024, "HAS_EOS": True, "ADVANCE": True,
        "BLOCK_R": 64, "BLOCK_C": 128, "BLOCK_E": 2, "FEED": True, "PDL": pdl})
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def compiled():
    return compiled_json(COMPILE)


def test_every_variant_compiles_through_ptxas(compiled):
    assert len(compiled) == 26 and all(result["cubin"] for result in compiled.values())


def test_larger_heads_get_no_more_spills_than_the_tuned_one(compiled):
    """The tuned attention settings fitted to heads of 128 and 256 spill no more registers than at the
    tuned head of 64: none at one row; the rows setting (measured fastest at 64 as it is) no more."""
    for batch in (1, 4):
        stacks = {name: result["stack"] for name, result in compiled.items()
                  if name.startswith(f"attention tuned batch={batch} ")}
        if None in stacks.values():
            pytest.skip("this Triton build has no cuobjdump to read the kernels' resource usage")
        tuned = [stack for name, stack in stacks.items() if " dim=64 " in name]
        assert len(stacks) == 5 and len(tuned) == 1, stacks
        assert all(stack <= tuned[0] for stack in stacks.values()), (batch, stacks)
        if batch == 1:
            assert tuned[0] == 0, stacks


def test_dependent_launch_waits_only_when_asked(compiled):
    for name, result in compiled.items():
        assert result["gdc_wait"] == ("pdl=True" in name), name


def test_the_split_merge_publishes_through_an_acq_rel_atomic(compiled):
    for name, result in compiled.items():
        if name.startswith("loop choose+accept"):  # the last chunk's program accepts: the same publication
            assert result["atomics"] and all("acq_rel" in a and ".gpu" in a for a in result["atomics"]), name
            assert result["barrier_before_atomic"] and result["cached_past_l1"], name
            continue
        if not name.startswith("attention"):
            continue
        if "splits=1 " in name:
            assert not result["atomics"], name
        else:
            assert result["atomics"] and all("acq_rel" in a and ".gpu" in a for a in result["atomics"]), name
            assert result["barrier_before_atomic"] and result["cached_past_l1"], name
