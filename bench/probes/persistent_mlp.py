"""The second half of a decoder layer as ONE persistent launch -- the output projection, the residual add
and RMSNorm, gate/up, act(gate) * up and the down projection -- against the step's kernels for the same
work (output GEMV, add+norm, gate/up matmul, down GEMV), on the Llama-3.2-1B shape at batch 1.

Why: in a batch-1 step (docs/performance.md, seventh session of 2026-12-05) memory stands idle while the
small kernels between the matmuls run, and each matmul streams its weights only once it is launched,
one tile ahead per program. This kernel walks the three matrices' weight tiles in order through tensor
descriptors (TMA), software-pipelined ``STAGES`` deep, and waits for its activations only at each matrix's
first tile, so weights keep streaming while a program waits for the others. The layer's MLP weights are
109 MB: ~36 us at 3 TB/s, against ~46.6 us for these kernels in the step's timeline.

Work split, ``P`` programs, all resident at once (128 on an H100's 132 SMs):

* **output projection, by rows**: each program owns ``H / P`` whole rows (16), so it holds the whole
  attention output and finishes its rows' sums itself: it adds them to the residual, stores the new
  residual stream (bf16, as the model keeps it) and publishes the rows' sum of squares;
* **gate/up, by blocks**: ``P / GROUPS`` row blocks x ``GROUPS`` column groups of 256. Once every
  program has published, each reads its 256 columns of the residual stream and the ``P`` sums of squares
  (the RMSNorm's scale: nobody holds a whole row) and streams its block, storing partial sums per
  column group;
* **down, by blocks**: the same split over the ``I / GROUPS`` columns of each group; the input
  act(gate) * up is computed from the gate/up partials at the first tile. The down projection's partial
  sums are left for the next add+norm kernel to add up (``PartialSums`` of ``GROUPS`` parts).

Activations are read with inline-PTX loads after an inline-PTX wait (acquire) on a counter of programs
that have published; every wait is predicated inside the PTX op on "this is the matrix's first tile":
Triton's pipeliner must see neither a branch nor an atomic in the loop body, and must not hoist the
wait into its prologue (bench/probes/pipelined_spin_compile.py). Results are published with a release
add after a CTA-wide reduction of the store instructions' results (which orders every thread's stores).

``EMULATE=True`` replaces the PTX with plain loads and stores and runs each matrix as its own launch
(``PHASES`` 1, 2, 4): Triton's interpreter runs programs one after another, where a wait for others
would never end -- so the CPU tests (tests/bench/test_persistent_mlp.py) check the arithmetic and
indexing against a float32 recompute, and the GPU run checks the synchronisation.

Written without a GPU (eighth session of 2026-12-05): ``--compile-only`` compiles it for sm_90 (Triton 3.6
and 3.9) and prints how many tiles each loop buffers and whether a wait was hoisted.

Run on the accelerator: python bench/probes/persistent_mlp.py [--layers 16] [--stages 4]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

BLOCK_K = 256  # a TMA box is at most 256 elements along a dimension


@triton.jit
def _address(pointers):
    """Pointers as 64-bit integers for inline PTX (Triton 3.6 takes no pointers of two types in one asm)."""
    return pointers.to(tl.int64, bitcast=True)


@triton.jit
def _is(t, value, shape: tl.constexpr):
    """int32 ``t == value`` broadcast to ``shape`` (a loop index is a plain integer in Triton's interpreter)."""
    return ((tl.zeros(shape, tl.int32) + t) == value).to(tl.int32)


@triton.jit
def _wait_previous_kernel_if(flag, EMULATE: tl.constexpr):
    """``flag`` (int32) back, after -- where it is set -- waiting for the previous kernel (programmatic
    dependent launch: ``griddepcontrol.wait``; a no-op in a launch without it)."""
    if EMULATE:
        return flag
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p griddepcontrol.wait; mov.b32 $0, $1; }", "=r,r", [flag],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _wait_count_if(flag, counter_ptr, needed, EMULATE: tl.constexpr):
    """``flag`` (int32) back, after -- where it is set -- spinning (acquire) until ``*counter >= needed``."""
    if EMULATE:
        return flag
    return tl.inline_asm_elementwise(
        "{ .reg .pred p, w; .reg .b32 v; mov.b32 $0, $3; setp.eq.s32 p, $3, 0; @p bra $$done; "
        "$$wait: ld.acquire.gpu.global.b32 v, [$1]; setp.lt.s32 w, v, $2; @w bra $$wait; $$done: }", "=r,l,r,r",
        [_address(counter_ptr + tl.zeros_like(flag)), needed + tl.zeros_like(flag), flag],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _load_f32_if(flag, pointers, EMULATE: tl.constexpr):
    """float32 ``*pointers`` where ``flag`` is set (read from L2: written by other programs), else 0."""
    if EMULATE:
        return tl.load(pointers, mask=flag != 0, other=0.0)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $2, 0; mov.b32 $0, 0; @p ld.global.cg.b32 $0, [$1]; }", "=r,l,r",
        [_address(pointers), flag], dtype=tl.float32, is_pure=False, pack=1)


@triton.jit
def _load_bf16_if(flag, pointers, EMULATE: tl.constexpr):
    """bf16 ``*pointers`` as float32 where ``flag`` is set, else 0."""
    if EMULATE:
        return tl.load(pointers, mask=flag != 0, other=0.0).to(tl.float32)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b16 h; setp.ne.s32 p, $2, 0; mov.b32 $0, 0; @p ld.global.cg.b16 h, [$1]; "
        "@p cvt.f32.bf16 $0, h; }", "=r,l,r", [_address(pointers), flag], dtype=tl.float32, is_pure=False, pack=1)


@triton.jit
def _store_f32_if(flag, pointers, values, EMULATE: tl.constexpr):
    """Store float32 ``values`` where ``flag`` is set; int32 zeros back, whose CTA-wide sum orders every
    thread's stores before a :func:`_publish`."""
    if EMULATE:
        tl.store(pointers, values, mask=flag != 0)
        return tl.zeros_like(flag)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p st.global.b32 [$1], $3; mov.b32 $0, 0; }", "=r,l,r,r",
        [_address(pointers), flag, values], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _store_bf16_if(flag, pointers, values, EMULATE: tl.constexpr):
    """Store float32 ``values`` rounded to bf16 where ``flag`` is set (see :func:`_store_f32_if`)."""
    if EMULATE:
        tl.store(pointers, values.to(tl.bfloat16), mask=flag != 0)
        return tl.zeros_like(flag)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b16 h; setp.ne.s32 p, $2, 0; cvt.rn.bf16.f32 h, $3; @p st.global.b16 [$1], h; "
        "mov.b32 $0, 0; }", "=r,l,r,r", [_address(pointers), flag, values], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _publish(counter_ptr, last, stored, EMULATE: tl.constexpr):
    """Where ``last`` is set, one release add of 1 to ``*counter`` once every thread's stores are done (the
    reduction of ``stored``, 1-D, is a CTA barrier). Inline PTX: an atomic in the loop stops the pipelining."""
    if not EMULATE:
        all_stored = tl.sum(stored, axis=0) + tl.zeros([1], tl.int32)
        tl.inline_asm_elementwise(
            "{ .reg .pred p, q; .reg .b32 r; mov.u32 r, %tid.x; setp.eq.u32 p, r, 0; setp.ne.and.s32 q, $2, 0, p; "
            "@q red.release.gpu.global.add.s32 [$1], 1; mov.b32 $0, $3; }", "=r,l,r,r",
            [_address(counter_ptr + tl.zeros([1], tl.int32)), last + tl.zeros([1], tl.int32), all_stored],
            dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _persistent_mlp_kernel(
        wo_desc, wgu_desc, wd_desc, attn_ptr, resid_ptr, norm_ptr, h_ptr, squares_ptr, gu_part_ptr, d_part_ptr,
        ready_ptr, eps, H: tl.constexpr, I: tl.constexpr, PROGRAMS: tl.constexpr, GROUPS: tl.constexpr,
        BLOCK_K: tl.constexpr, BN_O: tl.constexpr, BN_GU: tl.constexpr, BN_D: tl.constexpr,
        STAGES: tl.constexpr, PHASES: tl.constexpr, EMULATE: tl.constexpr):
    # wo_desc: Wo [H, H / BLOCK_K, BLOCK_K] (rows whole), box [BN_O, H / BLOCK_K, BLOCK_K];
    # wgu_desc: Wgu [2I, H] (gate rows, then up rows), box [BN_GU, BLOCK_K];
    # wd_desc: Wd [H, I / BLOCK_K, BLOCK_K], box [BN_D, I / GROUPS / BLOCK_K, BLOCK_K].
    # attn, resid: [H] bf16 from the previous kernel. Out: h [H] bf16 (resid + Wo attn), squares [PROGRAMS]
    # (each program's rows' sum of h^2), gu_part [GROUPS, 2I] and d_part [GROUPS, H] float32 partial sums.
    # ready [2], zeroed: programs done with the output projection, with gate/up.
    program = tl.program_id(0)
    group = program % GROUPS
    row_block = program // GROUPS
    ROW_BLOCKS: tl.constexpr = PROGRAMS // GROUPS
    H_BOXES: tl.constexpr = H // BLOCK_K
    D_BOXES: tl.constexpr = I // GROUPS // BLOCK_K
    k = tl.arange(0, BLOCK_K)

    # the output projection: this program's H / PROGRAMS rows, whole
    O_ROWS: tl.constexpr = H // PROGRAMS
    O_TILES: tl.constexpr = O_ROWS // BN_O
    attn_k = tl.arange(0, H_BOXES)[:, None] * BLOCK_K + k[None, :]
    n_o = tl.arange(0, BN_O)
    x_o = tl.zeros([H_BOXES, BLOCK_K], tl.float32)
    squares = tl.zeros([BN_O], tl.float32)
    for t in tl.range(0, O_TILES * (PHASES & 1), num_stages=STAGES):
        first_row = program * O_ROWS + t * BN_O
        w = wo_desc.load([first_row, 0, 0])  # weights: independent of every wait
        ready = _wait_previous_kernel_if(_is(t, 0, [H_BOXES, BLOCK_K]), EMULATE)
        x_o = tl.where(t == 0, _load_bf16_if(ready, attn_ptr + attn_k, EMULATE), x_o)
        o = tl.sum(tl.sum(w.to(tl.float32) * x_o[None, :, :], axis=2), axis=1)
        rows = first_row + n_o
        every = tl.full([BN_O], 1, tl.int32)
        h = (_load_bf16_if(every, resid_ptr + rows, EMULATE) + o).to(tl.bfloat16).to(tl.float32)
        stored = _store_bf16_if(every, h_ptr + rows, h, EMULATE)
        squares += h * h
        last = _is(t, O_TILES - 1, [BN_O])
        stored += _store_f32_if(last, squares_ptr + program + n_o * 0,
                                tl.sum(squares, axis=0) + tl.zeros([BN_O], tl.float32), EMULATE)
        _publish(ready_ptr, tl.max(last, axis=0), stored, EMULATE)

    # gate/up: rows [row_block * GU_ROWS, + GU_ROWS) x columns [group * BLOCK_K, + BLOCK_K)
    GU_ROWS: tl.constexpr = 2 * I // ROW_BLOCKS
    GU_TILES: tl.constexpr = GU_ROWS // BN_GU
    my_k = group * BLOCK_K + k
    weight = tl.load(norm_ptr + my_k).to(tl.float32)
    others = tl.arange(0, PROGRAMS)
    n_gu = tl.arange(0, BN_GU)
    x_gu = tl.zeros([BLOCK_K], tl.float32)
    for t in tl.range(0, GU_TILES * ((PHASES >> 1) & 1), num_stages=STAGES):
        first_row = row_block * GU_ROWS + t * BN_GU
        w = wgu_desc.load([first_row, group * BLOCK_K])
        ready = _wait_count_if(_is(t, 0, [1]), ready_ptr, PROGRAMS, EMULATE)
        total = tl.sum(_load_f32_if(ready + tl.zeros([PROGRAMS], tl.int32), squares_ptr + others, EMULATE), axis=0)
        inverse_rms = 1.0 / tl.sqrt(total / H + eps)
        h = _load_bf16_if(ready + tl.zeros([BLOCK_K], tl.int32), h_ptr + my_k, EMULATE)
        x_gu = tl.where(t == 0, (h * inverse_rms * weight).to(tl.bfloat16).to(tl.float32), x_gu)
        part = tl.sum(w.to(tl.float32) * x_gu[None, :], axis=1)
        every = tl.full([BN_GU], 1, tl.int32)
        stored = _store_f32_if(every, gu_part_ptr + group * 2 * I + first_row + n_gu, part, EMULATE)
        _publish(ready_ptr + 1, tl.max(_is(t, GU_TILES - 1, [1]), axis=0), stored, EMULATE)
    if not EMULATE:
        # every program has published the output projection, so all are resident: the next kernel may start
        tl.extra.cuda.gdc_launch_dependents()

    # down: rows [row_block * D_ROWS, + D_ROWS) x columns [group * I / GROUPS, + I / GROUPS)
    D_ROWS: tl.constexpr = H // ROW_BLOCKS
    D_TILES: tl.constexpr = D_ROWS // BN_D
    d_k = group * (I // GROUPS) + tl.arange(0, D_BOXES)[:, None] * BLOCK_K + k[None, :]
    n_d = tl.arange(0, BN_D)
    x_d = tl.zeros([D_BOXES, BLOCK_K], tl.float32)
    for t in tl.range(0, D_TILES * ((PHASES >> 2) & 1), num_stages=STAGES):
        first_row = row_block * D_ROWS + t * BN_D
        w = wd_desc.load([first_row, group * D_BOXES, 0])
        ready = _wait_count_if(_is(t, 0, [1]), ready_ptr + 1, PROGRAMS, EMULATE)
        ready = ready + tl.zeros([D_BOXES, BLOCK_K], tl.int32)
        gate = tl.zeros([D_BOXES, BLOCK_K], tl.float32)
        up = tl.zeros([D_BOXES, BLOCK_K], tl.float32)
        for g in tl.static_range(GROUPS):  # the groups' partial sums, in a fixed order
            gate += _load_f32_if(ready, gu_part_ptr + g * 2 * I + d_k, EMULATE)
            up += _load_f32_if(ready, gu_part_ptr + g * 2 * I + I + d_k, EMULATE)
        x_d = tl.where(t == 0, gate / (1.0 + tl.exp(-gate)) * up, x_d)
        part = tl.sum(tl.sum(w.to(tl.float32) * x_d[None, :, :], axis=2), axis=1)
        tl.store(d_part_ptr + group * H + first_row + n_d, part)


def layout_check(hidden: int, intermediate: int, programs: int, groups: int, bn_o: int, bn_gu: int, bn_d: int):
    """Raise ValueError unless the shapes split as the kernel assumes."""
    row_blocks = programs // groups
    problems = [
        (hidden != groups * BLOCK_K, f"hidden {hidden} must be groups x {BLOCK_K}"),
        (programs & (programs - 1) or programs % groups, "programs must be a power of two and a multiple of groups"),
        (hidden % programs or (hidden // programs) % bn_o, "the output projection's rows must split evenly"),
        ((2 * intermediate) % row_blocks or (2 * intermediate // row_blocks) % bn_gu, "gate/up rows must split evenly"),
        (intermediate % (groups * BLOCK_K), f"intermediate must be a multiple of groups x {BLOCK_K}"),
        (hidden % row_blocks or (hidden // row_blocks) % bn_d, "the down projection's rows must split evenly"),
        (max(bn_o, bn_gu, bn_d, hidden // BLOCK_K, intermediate // groups // BLOCK_K) > 256,
         "a TMA box is at most 256 elements along each dimension"),
    ]
    for bad, why in problems:
        if bad:
            raise ValueError(f"persistent_mlp: {why}")


class PersistentMLP:
    """The kernel's buffers and descriptors for one layer's weights: ``Wo [H, H]``, ``Wgu [2I, H]``,
    ``Wd [H, I]`` (all ``[out, in]``, bf16) and the post-attention norm's weight ``[H]``."""

    def __init__(self, wo, wgu, wd, norm_weight, eps=1e-5, programs=128, groups=8, bn_o=4, bn_gu=64, bn_d=8,
                 stages=4, emulate=False):
        from triton.tools.tensor_descriptor import TensorDescriptor

        hidden, intermediate = wd.shape
        layout_check(hidden, intermediate, programs, groups, bn_o, bn_gu, bn_d)
        self.hidden, self.intermediate, self.eps, self.emulate = hidden, intermediate, eps, emulate
        self.settings = dict(H=hidden, I=intermediate, PROGRAMS=programs, GROUPS=groups, BLOCK_K=BLOCK_K, BN_O=bn_o,
                             BN_GU=bn_gu, BN_D=bn_d, STAGES=stages, EMULATE=emulate)
        self.programs, self.norm_weight = programs, norm_weight
        self.descs = (
            TensorDescriptor.from_tensor(wo.view(hidden, hidden // BLOCK_K, BLOCK_K), [bn_o, hidden // BLOCK_K, BLOCK_K]),
            TensorDescriptor.from_tensor(wgu, [bn_gu, BLOCK_K]),
            TensorDescriptor.from_tensor(wd.view(hidden, intermediate // BLOCK_K, BLOCK_K),
                                         [bn_d, intermediate // groups // BLOCK_K, BLOCK_K]))
        device = wo.device
        self.squares = torch.empty(programs, dtype=torch.float32, device=device)
        self.gu_part = torch.empty(groups, 2 * intermediate, dtype=torch.float32, device=device)
        self.d_part = torch.empty(groups, hidden, dtype=torch.float32, device=device)
        self.ready = torch.zeros(2, dtype=torch.int32, device=device)

    def __call__(self, attn: torch.Tensor, resid: torch.Tensor):
        """``(h, down partial sums [GROUPS, H])`` for ``attn``, ``resid`` ``[H]`` bf16: ``h = resid + Wo attn``
        (bf16), and the down projection of act(gate) * up of gate/up over RMSNorm(h) * weight."""
        h = torch.empty_like(resid)
        self.ready.zero_()
        args = (*self.descs, attn, resid, self.norm_weight, h, self.squares, self.gu_part, self.d_part, self.ready,
                self.eps)
        if self.emulate:  # one launch per matrix: the interpreter runs programs one after another
            for phase in (1, 2, 4):
                _persistent_mlp_kernel[(self.programs,)](*args, **self.settings, PHASES=phase)
        else:
            _persistent_mlp_kernel[(self.programs,)](*args, **self.settings, PHASES=7, num_warps=4, launch_pdl=True)
        return h, self.d_part


def reference_mlp(wo, wgu, wd, norm_weight, eps, attn, resid):
    """The same layer half in float32 with the step's roundings: ``(h, down output [H])``."""
    h = (resid.float() + wo.float() @ attn.float()).to(torch.bfloat16).float()
    normed = (h * torch.rsqrt(h.pow(2).mean() + eps) * norm_weight.float()).to(torch.bfloat16).float()
    gate, up = (wgu.float() @ normed).chunk(2)
    return h.to(torch.bfloat16), wd.float() @ (torch.nn.functional.silu(gate) * up)


def compile_only(stages: int):
    """Compile for sm_90 (no GPU needed) and read the IR: tiles buffered per loop, waits hoisted."""
    import re

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    hidden, intermediate, groups, bn_o, bn_gu, bn_d = 2048, 8192, 8, 4, 64, 8
    constants = dict(H=hidden, I=intermediate, PROGRAMS=128, GROUPS=groups, BLOCK_K=BLOCK_K, BN_O=bn_o, BN_GU=bn_gu,
                     BN_D=bn_d, STAGES=stages, PHASES=7, EMULATE=False)
    signature = {"wo_desc": f"tensordesc<bf16[{bn_o}, {hidden // BLOCK_K}, {BLOCK_K}]>",
                 "wgu_desc": f"tensordesc<bf16[{bn_gu}, {BLOCK_K}]>",
                 "wd_desc": f"tensordesc<bf16[{bn_d}, {intermediate // groups // BLOCK_K}, {BLOCK_K}]>",
                 "attn_ptr": "*bf16", "resid_ptr": "*bf16", "norm_ptr": "*bf16", "h_ptr": "*bf16",
                 "squares_ptr": "*fp32", "gu_part_ptr": "*fp32", "d_part_ptr": "*fp32", "ready_ptr": "*i32",
                 "eps": "fp32", **{c: "constexpr" for c in constants}}
    compiled = triton.compile(ASTSource(fn=_persistent_mlp_kernel, signature=signature, constexprs=constants),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ir = compiled.asm["ttgir"]
    buffers = re.findall(r"ttg.local_alloc.*?!ttg.memdesc<(\d+)x([\dx]+)xbf16", ir)
    starts = [m.start() for m in re.finditer(r"scf.for", ir)]
    ends = [ir.index("scf.yield", start) for start in starts]
    # a wait outside every loop body was hoisted into a pipeline's prologue (waiting early)
    outside = ir[:starts[0]] + "".join(ir[end:start] for end, start in zip(ends, starts[1:] + [len(ir)]))
    inside = [ir[start:end].count("ld.acquire") + ir[start:end].count("griddepcontrol.wait")
              for start, end in zip(starts, ends)]
    print(f"Triton {triton.__version__}, sm_90, {stages} stages: tiles buffered {[f'{n} x {s}' for n, s in buffers]}; "
          f"waits in each loop {inside}, outside the loops {outside.count('ld.acquire') + outside.count('griddepcontrol.wait')}; "
          f"shared memory {compiled.metadata.shared / 1024:.0f} KB; cubin {'cubin' in compiled.asm}")
    return compiled


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--compile-only", action="store_true")
    args = parser.parse_args()
    if args.compile_only:
        compile_only(args.stages)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from processor_kernels import graph_time

    from genplug.plugins.models.llama import decode_kernels

    hidden, intermediate, eps = 2048, 8192, 1e-5
    torch.manual_seed(0)

    def matrix(out, inp):
        return (torch.randn(out, inp, device="cuda") / inp ** 0.5).to(torch.bfloat16)

    layers = [(matrix(hidden, hidden), matrix(2 * intermediate, hidden), matrix(hidden, intermediate),
               (1 + 0.1 * torch.randn(hidden, device="cuda")).to(torch.bfloat16),
               (1 + 0.1 * torch.randn(hidden, device="cuda")).to(torch.bfloat16)) for _ in range(args.layers)]
    attn0 = torch.randn(hidden, device="cuda").to(torch.bfloat16)
    resid0 = torch.randn(hidden, device="cuda").to(torch.bfloat16)
    kernels = [PersistentMLP(wo, wgu, wd, norm, eps, stages=args.stages) for wo, wgu, wd, norm, _ in layers]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    if kernels[0].programs > sms:
        raise SystemExit(f"the persistent kernel needs its {kernels[0].programs} programs resident; {sms} SMs here")

    def as_row(v):
        return v.view(1, 1, hidden)

    def step_kernels(count=args.layers):
        """As the step runs it: output GEMV, add+norm, gate/up (cuBLAS), down GEMV (act on load), add+norm --
        whose normed output stands in for the next layer's attention output."""
        attn, resid = as_row(attn0), as_row(resid0)
        for wo, wgu, wd, norm, next_norm in layers[:count]:
            resid, normed = decode_kernels.add_rms_norm(resid, decode_kernels.gemv(attn, wo.t()), norm, eps)
            gate_up = torch.nn.functional.linear(normed, wgu)
            down = decode_kernels.gemv(gate_up, wd.t(), gated_input="silu")
            resid, attn = decode_kernels.add_rms_norm(resid, down, next_norm, eps)
        return attn.view(hidden)

    def persistent(count=args.layers):
        attn, resid = attn0, resid0
        for kernel, (_, _, _, _, next_norm) in zip(kernels[:count], layers):
            h, d_part = kernel(attn, resid)
            resid, attn = decode_kernels.add_rms_norm(as_row(h), decode_kernels.PartialSums(d_part.view(-1, 1, hidden)),
                                                      next_norm, eps)
            resid, attn = resid.view(hidden), attn.view(hidden)
        return attn

    def reference(count):
        attn, resid = attn0, resid0
        for wo, wgu, wd, norm, next_norm in layers[:count]:
            h, down = reference_mlp(wo, wgu, wd, norm, eps, attn, resid)
            resid = (h.float() + down).to(torch.bfloat16)
            attn = (resid.float() * torch.rsqrt(resid.float().pow(2).mean() + eps) * next_norm.float()).to(torch.bfloat16)
        return attn

    # checked over one layer and over all (random layers can amplify the bf16 roundings' differences: the
    # step's kernels are checked the same way, as a yardstick)
    expected = {1: reference(1).float(), args.layers: reference(args.layers).float()}
    nbytes = sum(w.numel() * w.element_size() for layer in layers for w in layer[:3])
    print(f"{args.layers} layers' output projection + norm + gate/up + down, Llama-3.2-1B shape, bf16 "
          f"({nbytes / 1e6:.0f} MB), {sms} SMs, {args.stages} stages")
    for label, fn in (("the step's kernels (GEMV, add+norm, cuBLAS, GEMV, add+norm)", step_kernels),
                      ("one persistent launch per layer + add+norm", persistent)):
        try:
            apart = {}
            for count, want in expected.items():
                out = fn(count).float()
                torch.cuda.synchronize()
                apart[count] = ((out - want).abs().max() / want.abs().max()).item()
            us = graph_time(fn)
        except Exception as exc:
            print(f"{label:62} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        print(f"{label:62} {us:8.1f} us ({us / args.layers:5.1f} per layer), {nbytes / us / 1e6:5.2f} TB/s; off a "
              f"float32 recompute by {apart[1]:.1e} after one layer{'' if apart[1] < 2e-2 else ' -- WRONG'}, "
              f"{apart[args.layers]:.1e} after {args.layers}", flush=True)


if __name__ == "__main__":
    main()
