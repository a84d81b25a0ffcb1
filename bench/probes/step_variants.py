"""Batch-1 greedy decode of the native 1B model under variants of the fused step: programmatic
dependent launch (GENPLUG_PDL), the loop's bookkeeping as two kernels or as PyTorch ops
(graph_loop.FUSED_BOOKKEEPING), the attention kernel's first cached keys/values read before or after
its PDL wait (decode_kernels.ATTENTION_EARLY_LOADS), the attention's split (ATTENTION_CONFIG), the
gate/up projection through cuBLAS (stored [in, out]) instead of genplug's GEMV (shipped since the twelfth
session), its GEMV tile, the GEMVs' programs
per SM (so their split-K counts; 4 per SM measured 860.3 against 860.3 / 856.9 as shipped, 16 per SM
845.1, H100, 2026-12-05, seventh session), and the down projection's tile (all within noise of the
shipped (16, 256, 4, 2, 8) on an H100 in the seventh session: 664.5-679.8 against 673.1 / 675.7, measured
with the merge below). Tried and removed in the seventh session (commit e5939c1): the output projection's
GEMV merging the attention's split softmax states while loading them, in place of the attention
kernel's atomic count and last-program merge -- 673.1 / 675.7 tokens/s against 862.9 (attention's
share of the critical path fell ~2.7 us per layer, the output GEMV's rose ~23 us: every program
re-gathered 8 splits' states per tile, replicated across its threads). The output projection's whole
split as one tile (read before the PDL wait, while attention runs): 858.0 (8 warps) / 867.3 (4 warps)
against 874.3 / 867.4 as shipped; gate/up through genplug's GEMV 879.6 (867.2 and 675.2 in the two
runs before: within noise of as shipped each time, so cuBLAS keeps it). Tried on H100s on
2026-12-05 and removed (bench/results/gpu_decode_h100.txt): the output head through genplug's GEMV
(798 tokens/s against 810/799 as shipped); a GEMV program's whole weight slice as one tile loaded
before the PDL wait (778, 762); the RMSNorms inside the GEMVs, the o/down GEMVs adding into the
residual stream through a last-split merge (812/815 against 860 with the norm kernels, commit
8f805d7). cos/sin computed by the step instead of read from RoPE's table: 801 (within noise, kept
the table). Hopper's bulk L2 prefetch of weights before the PDL wait (commit
26be87f, H100, 2026-12-05, sixth session): each GEMV program's whole slice 788 (32 MB) / 810 (8 MB)
against 859 / 857 as shipped; the add+norm kernel prefetching cuBLAS's gate/up 459; both 438. The same prefetch
in few large pieces from kernels running while memory is otherwise idle (commit 10db9b0, H100, 2026-12-06,
twelfth session; bench/results/twelfth_session): the attention kernel asking L2, after its PDL wait, for the
output projection 860.8, plus gate/up's first 8 / 16 MB 862.0 / 860.2 (per-line prefetches 855.6); the
output GEMV's programs asking for gate/up's first 16 MB once done 876.5, the down GEMV's for the next
layer's q/k/v 855.9, both kinds 844.2 -- against 874.8 / 877.2 as shipped: the extra traffic slows the
latency-bound kernels' own L2 round trips more than it saves. Prints tokens/s (best of 3 calls of 256 new tokens) and whether the graph loop equals
the eager path under the same variant. The last line names the fastest variant whose graph loop
equals its eager path.

"persistent MLP" (built in the eighth session of 2026-12-05, removed in the twelfth -- the last code is at
commit e3fa3d1, plugins/models/llama/persistent_mlp.py): the output projection, add+norm, gate/up and
down projections, and the next layer's add+norm and q/k/v projection, as one persistent launch per layer
(GENPLUG_PERSISTENT_MLP=1); "..., next layer's q/k/v apart" without the next layer's part. H100, ninth
session: 470.4 / 465.1 tokens/s against 865.7 as shipped; with one poller per program and the sum of
squares read 32 values a round trip 524.3 against 861.3, its down loop 8 deep 508.7, with 8 warps 537.5,
5 deep with the down loop 12 deep and 8 warps 532.4 (graph == eager held in every variant).

Tried and removed in the sixteenth and seventeenth sessions (H100s, bench/results/seventeenth_session): the
one-row add+norm's add in 16 programs with the norm left to the q/k/v and gate/up GEMVs, each scaling its
sums by 1/rms from the add's partial sums of squares (commit 8485309): 906.1 tokens/s against 925.0 /
922.8; the output and down GEMVs adding the residual themselves so that no add+norm kernel runs, the
norms applied by the GEMVs that read them (commit 972a63f): in one split, each program owning whole
columns, 711.6-905.1 over 11 tiles against 920.6-925.0; with the last split of each column tile adding
(an acq_rel arrival count), 909.5 (841.5 / 899.3 with 4 / 16 GEMV programs per SM) against 932.4 / 932.4.

Tried and removed in the eighteenth session (H100, bench/results/eighteenth_session; the code is at commit
4c03289): the one-row step's kernels handing on through counters instead of PDL's wait for the previous grid
to retire ("step chain": each program's last act a release add behind a barrier, the next kernel's threads
spinning on an acquire load): 692.8 / 695.1 tokens/s against 932.4 / 935.9, same tokens, graph == eager.
bench/probes/boundary_cost.py had found PDL's wait the cheaper hand-off (0.64-1.50 us a link against
0.86-11.03 us: a 1,024-program producer's adds to one counter and the polling of it cost ~10 us).

Run: python bench/probes/step_variants.py ["variant name" ...]
"""
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402
from genplug import triton_support  # noqa: E402
from genplug.plugins.models.llama import decode_kernels  # noqa: E402

SHIPPED_ATTENTION = decode_kernels.ATTENTION_CONFIG["one row"]
SHIPPED_GEMV_CONFIG = decode_kernels._gemv_config
SHIPPED_WARPS = decode_kernels._warps_for
SHIPPED = dict(pdl="1", attention=SHIPPED_ATTENTION, gate_up_gemv=True,
               early_loads=decode_kernels.ATTENTION_EARLY_LOADS, bookkeeping=graph_loop.FUSED_BOOKKEEPING,
               gemv_per_sm=None, down_config=None, o_config=None, gate_up_config=None, norm_warps=None,
               head_config=None, qkv_config=None, gemv_ahead=decode_kernels.GEMV_AHEAD, x_ahead=decode_kernels.GEMV_X_AHEAD)
VARIANTS = [  # (name, changes to the shipped setting)
    ("as shipped", {}),
    # fewer attention splits: fewer softmax states to merge, more slots per program (only the first tile
    # is read before the PDL wait): 881.4 / 812.0 against 925.0 / 922.8 (H100, seventeenth session)
    ("attention 4 splits", dict(attention=(4, 4, 32, 4, 1))),
    ("attention 4 splits x 64 slots", dict(attention=(4, 4, 64, 4, 1))),
    # every split's cached slots in one tile, read before the PDL wait (shipped since the eleventh session: 16
    # splits); 8 splits of up to 48 slots at 384 take a second tile after it
    ("attention 8 splits (tuned before)", dict(attention=(8, 4, 32, 4, 1))),
    ("bookkeeping as PyTorch ops", dict(bookkeeping=False)),
    ("attention loads the cache after the wait", dict(early_loads=False)),
    # gate/up through cuBLAS, stored [in, out] (shipped before the twelfth session, which measured the GEMV
    # at 891.3 against 877.3 / 875.2 with cuBLAS: bench/results/twelfth_session/step_variants_gate_up.txt)
    ("gate/up through cuBLAS", dict(gate_up_gemv=False)),
    ("PDL off", dict(pdl="0")),
    ("GEMV 4 programs per SM (fewer splits)", dict(gemv_per_sm=4)),
    ("GEMV 16 programs per SM (more splits)", dict(gemv_per_sm=16)),
    ("down GEMV (16, 512, 4, 2, 8)", dict(down_config=(16, 512, 4, 2, 8))),
    ("down GEMV (32, 256, 4, 2, 8)", dict(down_config=(32, 256, 4, 2, 8))),
    ("down GEMV (16, 256, 8, 3, 8)", dict(down_config=(16, 256, 8, 3, 8))),
    ("down GEMV (16, 256, 4, 2, 4)", dict(down_config=(16, 256, 4, 2, 4))),
    ("down GEMV (16, 128, 4, 3, 8)", dict(down_config=(16, 128, 4, 3, 8))),
    ("gate/up GEMV + down (16, 512, 4, 2, 8)", dict(down_config=(16, 512, 4, 2, 8))),
    # block_k 256 = the output projection's whole split (2048 / 8): each program's whole weight slice is
    # read before its PDL wait, while attention runs (memory is idle then)
    ("output GEMV one tile (16, 256, 8, 2, 8)", dict(o_config=(16, 256, 8, 2, 8))),
    ("output GEMV one tile, 4 warps", dict(o_config=(16, 256, 4, 2, 8))),
    ("output GEMV one tile + gate/up GEMV", dict(o_config=(16, 256, 8, 2, 8))),
    # gate/up through genplug's GEMV (shipped since the twelfth session) with fewer warps or programs per SM,
    # so that the down GEMV's programs fit beside its last ones and read their first tiles early: 880.7-887.2
    # against 891.3 with its tuned tile (twelfth session)
    ("gate/up GEMV (16, 256, 4, 2, 8)", dict(gate_up_config=(16, 256, 4, 2, 8))),
    ("gate/up GEMV (16, 256, 4, 2, 4)", dict(gate_up_config=(16, 256, 4, 2, 4))),
    ("gate/up GEMV (32, 256, 4, 2, 8)", dict(gate_up_config=(32, 256, 4, 2, 8))),
    ("gate/up GEMV (16, 512, 4, 2, 8)", dict(gate_up_config=(16, 512, 4, 2, 8))),
    # the add+norm kernel's warps (one program a row; shipped: 4 up to 2,048 values read, 8 up to 8,192, else 16
    # -- the 1B step's add+norms read 8 partial sums of 2,048, so 16)
    ("add+norm 4 warps", dict(norm_warps=4)),
    ("add+norm 8 warps", dict(norm_warps=8)),
    ("add+norm 32 warps", dict(norm_warps=32)),
    # the one-row attention's warps (shipped 4): its reductions across warps put 32 CTA barriers in its code
    # (compiled for sm_90); fewer warps, fewer barriers but more loads a thread
    ("attention 2 warps", dict(attention=SHIPPED_ATTENTION[:3] + (2,) + SHIPPED_ATTENTION[4:])),
    ("attention 8 warps", dict(attention=SHIPPED_ATTENTION[:3] + (8,) + SHIPPED_ATTENTION[4:])),
    # nineteenth session, on the H200 where the small GEMVs stream at 63-76% of the copy bandwidth alone: each
    # GEMV program keeping 2 weight tiles in flight instead of 1 (both loaded before its PDL wait), its input
    # loaded an iteration ahead (no L2 round trip a tile), the output head's best tile there, and the
    # add+norm's 4 warps (1,154.8 against 1,148.5 / 1,149.3 in the first call)
    ("GEMV 2 tiles ahead", dict(gemv_ahead=2)),
    ("GEMV input ahead", dict(x_ahead=True)),
    ("GEMV 2 tiles + input ahead", dict(gemv_ahead=2, x_ahead=True)),
    ("head GEMV (16, 256, 4, 2, 16)", dict(head_config=(16, 256, 4, 2, 16))),
    ("add+norm 4 warps + head (16, 256, 4, 2, 16)", dict(norm_warps=4, head_config=(16, 256, 4, 2, 16))),
    ("add+norm 4 warps + head + 2 tiles ahead", dict(norm_warps=4, head_config=(16, 256, 4, 2, 16), gemv_ahead=2)),
    # q/k/v's (32, 128) tile with 8 warps takes 120 registers a thread (2 programs an SM; compiled for sm_90):
    # with 2 tiles ahead, fewer warps or narrower tiles keep more programs (and bytes) in flight
    ("2 ahead + q/k/v (32, 128, 4, 2, 8)", dict(gemv_ahead=2, qkv_config=(32, 128, 4, 2, 8))),
    ("2 ahead + q/k/v (16, 128, 8, 2, 8)", dict(gemv_ahead=2, qkv_config=(16, 128, 8, 2, 8))),
    # the output and down GEMVs with 8 columns a tile: as many programs in 4 splits instead of 8, so each add+norm
    # (one program on one SM) reads 4 partial sums of the row from L2 instead of 8
    ("output + down 8 columns a tile (4 splits)", dict(o_config=(8, 128, 8, 2, 8), down_config=(8, 128, 4, 2, 8))),
    ("output + down 8 columns, 4 warps + 2 ahead", dict(o_config=(8, 128, 4, 2, 8), down_config=(8, 128, 4, 2, 8),
                                                        gemv_ahead=2)),
    ("as shipped (again: noise)", {}),
]


def gate_up_storage(model, through_gemv: bool):
    for layer in model.model.layers:
        projection = layer.mlp.gate_up_proj
        weight = projection.weight_t.detach()
        if (weight.stride(0) == 1) != through_gemv:
            stored = weight.t().contiguous().t() if through_gemv else weight.contiguous()
            projection.weight_t = nn.Parameter(stored, requires_grad=False)


def gemv_config_with(per_sm, down=None, output=None, gate_up=None, head=None, qkv=None):
    """The GEMV's tuned config, with ``per_sm`` programs per SM (which sets the split-K count) if given,
    ``down`` for the down projection (in-width 8192), ``output`` for the output projection (2048 x
    2048), ``gate_up`` for the gate/up projection (2048 x 16384, through the GEMV) and ``head`` for the output
    head (2048 x 128256), ``qkv`` for the q/k/v projection (2048 x 3072) if given."""
    def config(in_width, out_width, k_contiguous):
        if qkv is not None and in_width < out_width <= 2 * in_width:
            return qkv
        if head is not None and out_width >= 32 * in_width:
            return head
        if down is not None and in_width == 8192:
            return down
        if gate_up is not None and out_width == 8 * in_width:
            return gate_up
        if output is not None and in_width == out_width == 2048:
            return output
        tuned = SHIPPED_GEMV_CONFIG(in_width, out_width, k_contiguous)
        return tuned if per_sm is None else tuned[:4] + (per_sm,)
    return config


def apply(name: str, native=None):
    """Set the fused step's knobs to the variant ``name`` (every knob: the shipped value where the variant leaves
    it); ``native`` is the model whose gate/up storage the variant may change (None: left as it is)."""
    changes = dict(VARIANTS)[name]
    setting = dict(SHIPPED, **changes)
    os.environ["GENPLUG_PDL"] = setting["pdl"]
    triton_support._DEPENDENT_LAUNCH.clear()
    decode_kernels.ATTENTION_CONFIG["one row"] = setting["attention"]
    decode_kernels.ATTENTION_EARLY_LOADS = setting["early_loads"]
    graph_loop.FUSED_BOOKKEEPING = setting["bookkeeping"]
    decode_kernels._warps_for = SHIPPED_WARPS if setting["norm_warps"] is None else (
        lambda width, warps=setting["norm_warps"]: warps)
    if native is not None:
        gate_up_storage(native, setting["gate_up_gemv"])
    decode_kernels._gemv_config = gemv_config_with(setting["gemv_per_sm"], setting["down_config"],
                                                   setting["o_config"], setting["gate_up_config"],
                                                   setting["head_config"], setting["qkv_config"])
    decode_kernels.GEMV_AHEAD, decode_kernels.GEMV_X_AHEAD = setting["gemv_ahead"], setting["x_ahead"]


def main():
    only = [name.strip() for name in sys.argv[1:]]  # run only these variants (default: all)
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    results = []
    reference = None
    for name, changes in VARIANTS:
        apply(name, native)
        graph_loop.release(native)
        if only and name not in only:
            continue

        def run(**extra):
            return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                    eos_token_id=None, **extra)

        try:
            eager = run(disable_compile=True)
            first, out = gpu_decode.timed(run)
            best = min(gpu_decode.timed(run)[0] for _ in range(3))
            same = torch.equal(out, eager)
            reference = reference if reference is not None else out  # the first variant run's tokens
            print(f"{name:40} {gpu_decode.NEW / best:7.1f} tokens/s (first call {first:.2f} s); "
                  f"graph == eager {same}; tokens == first variant's {torch.equal(out, reference)}", flush=True)
            if same:
                results.append((gpu_decode.NEW / best, name))
        except Exception as exc:  # one broken variant must not hide the others
            print(f"{name:40} {type(exc).__name__}: {exc}"[:300], flush=True)
    if results:
        print(f"fastest with graph == eager: {max(results)[1]}")


if __name__ == "__main__":
    main()
