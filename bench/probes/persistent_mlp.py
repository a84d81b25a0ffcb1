"""The second half of each decoder layer (output projection, add+RMSNorm, gate/up, SiLU * up, down) as
ONE persistent launch per layer (``plugins/models/llama/persistent_mlp.py``, off by default) against the
step's kernels for the same work (output GEMV, add+norm, gate/up through cuBLAS, down GEMV), on genplug's
native model of the random Llama-3.2-1B shape at batch 1: the 16 layers' halves chained, each followed
by the add+norm kernel whose normed output stands in for the next layer's attention output.

Prints microseconds for the chain (replayed from CUDA graphs), the weights' bytes per second, and how
far each result is from a float32 recompute after one layer (past 2e-2 of the largest value prints
WRONG) and after all 16 (random layers amplify bf16 roundings: the step's kernels are the yardstick).
Then the whole decode step with and without it: ``bench/probes/step_variants.py "as shipped" "persistent MLP"``.

``--compile-only`` compiles the kernel for sm_90 on any machine with Triton (no GPU) and prints how many
weight tiles each of its three loops buffers and whether a wait was left outside the loops (hoisted
into a pipeline's prologue: waiting early). Written in the eighth session of 2026-12-05 without a GPU:
Triton 3.6 (the lent H100s') and 3.9 both buffer ``stages - 1`` tiles per loop and hoist no wait.

Run on the accelerator: python bench/probes/persistent_mlp.py [--stages 4] [--sweep] [--compile-only]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def compile_only(stages: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from genplug.plugins.models.llama import persistent_mlp as pm

    hidden, intermediate = 2048, 8192
    layout = pm.layout_for(hidden, intermediate, 132, 3072)  # taking the next layer's q/k/v along
    signature, constants = pm.compile_spec(hidden, intermediate, 3072, layout, stages)
    compiled = triton.compile(ASTSource(fn=pm._persistent_mlp_kernel, signature=signature, constexprs=constants),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ir = compiled.asm["ttgir"]
    buffers = re.findall(r"ttg.local_alloc.*?!ttg.memdesc<(\d+)x([\dx]+)xbf16", ir)
    starts = [m.start() for m in re.finditer(r"scf.for", ir)]
    ends = [ir.index("scf.yield", start) for start in starts]
    outside = ir[:starts[0]] + "".join(ir[end:start] for end, start in zip(ends, starts[1:] + [len(ir)]))

    def waits(text):
        return text.count("ld.acquire") + text.count("griddepcontrol.wait")

    print(f"Triton {triton.__version__}, sm_90, {layout}, {stages} stages: tiles buffered "
          f"{[f'{n} x {s}' for n, s in buffers]}; waits in each loop {[waits(ir[s:e]) for s, e in zip(starts, ends)]}, "
          f"outside the loops {waits(outside)}; shared memory {compiled.metadata.shared / 1024:.0f} KB; "
          f"cubin {'cubin' in compiled.asm}")
    return compiled


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--compile-only", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="also time other tile sizes and pipeline depths")
    args = parser.parse_args()
    if args.compile_only:
        compile_only(args.stages)
        return
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "probes"))
    import gpu_decode
    from processor_kernels import graph_time

    from genplug.plugins.models.llama import decode_kernels, fused_step
    from genplug.plugins.models.llama import persistent_mlp as pm

    model = gpu_decode.native_one_b()
    layers = list(model.model.layers)
    hidden = model.config.hidden_size
    norms = [layer.input_layernorm for layer in layers[1:]] + [model.model.norm]
    layout = pm.layout_for(hidden, model.config.intermediate_size, torch.cuda.get_device_properties(0).multi_processor_count)
    if not all(pm.layer_fits(layer, hidden) for layer in layers) or layout is None:
        raise SystemExit("the persistent MLP does not take this model's layers")
    torch.manual_seed(1)
    attn0 = torch.randn(1, 1, hidden, device="cuda").to(torch.bfloat16)
    resid0 = torch.randn(1, 1, hidden, device="cuda").to(torch.bfloat16)

    def step_kernels(count=len(layers)):
        attn, resid = attn0, resid0
        for layer, norm in zip(layers[:count], norms):
            post = layer.post_attention_layernorm
            resid, normed = decode_kernels.add_rms_norm(resid, fused_step._matmul(layer.self_attn.o_proj, attn, True),
                                                        post.scale(), post.eps)
            gate_up = fused_step._matmul(layer.mlp.gate_up_proj, normed, True)
            down = decode_kernels.gemv(gate_up, layer.mlp.down_proj.weight_t, gated_input="silu")
            resid, attn = decode_kernels.add_rms_norm(resid, down, norm.scale(), norm.eps)
        return attn.float().view(hidden)

    def persistent(count=len(layers), stages=args.stages, split=layout):
        attn, resid = attn0, resid0
        counters = pm.new_counters(count, attn.device)
        for i, (layer, norm) in enumerate(zip(layers[:count], norms)):
            h, down = pm.persistent_mlp(layer, attn, resid, counters[i], split, stages)
            resid, attn = decode_kernels.add_rms_norm(h, down, norm.scale(), norm.eps)
        return attn.float().view(hidden)

    def reference(count):
        attn, resid = attn0, resid0
        for layer, norm in zip(layers[:count], norms):
            h, down = pm.reference(layer, attn, resid)
            x = (h.float() + down).to(torch.bfloat16).float()
            attn = pm.rms_normed(x, norm).to(torch.bfloat16)
            resid = x.to(torch.bfloat16)
        return attn.float().view(hidden)

    expected = {1: reference(1), len(layers): reference(len(layers))}
    nbytes = sum(p.weight_t.numel() * 2 for layer in layers
                 for p in (layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj))
    print(f"{len(layers)} layers' output projection + add+norm + gate/up + down + add+norm, 1B shape, bf16 "
          f"({nbytes / 1e6:.0f} MB of weights), {layout}, {args.stages} stages")
    def waits_in_loops(count=len(layers)):
        pm.LEAN_LOOPS = False
        try:
            return persistent(count)
        finally:
            pm.LEAN_LOOPS = True

    for label, fn in (("the step's kernels (GEMV, add+norm, cuBLAS, GEMV, add+norm)", step_kernels),
                      ("persistent MLP launch + add+norm (lean loops)", persistent),
                      ("persistent MLP launch + add+norm (waits in the loops)", waits_in_loops)):
        try:
            apart = {}
            for count, want in expected.items():
                out = fn(count)
                torch.cuda.synchronize()
                apart[count] = ((out - want).abs().max() / want.abs().max()).item()
            us = graph_time(fn)
        except Exception as exc:  # e.g. a launch this device's Triton refuses
            print(f"{label:62} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        print(f"{label:62} {us:8.1f} us ({us / len(layers):5.1f} per layer), {nbytes / us / 1e6:5.2f} TB/s; off a "
              f"float32 recompute by {apart[1]:.1e} after one layer{'' if apart[1] < 2e-2 else ' -- WRONG'}, "
              f"{apart[len(layers)]:.1e} after {len(layers)}", flush=True)
    timeline(pm, layers[1], layers[2], attn0, resid0, args.stages)
    if args.sweep:  # (stages, the down loop's, bn_o, bn_gu, bn_d, warps): deeper pipelines, bigger or smaller tiles, more warps
        # (the first GPU run streamed each loop's tiles at ~1.45 us a tile whatever their size, 3 in flight:
        # about 4.4 us from a tile's load to its buffer's reuse -- so more bytes in flight should pay)
        for stages, down_stages, bn_o, bn_gu, bn_d, warps in (
                (4, 4, 4, 64, 8, 8), (4, 8, 4, 64, 8, 4), (4, 8, 4, 64, 8, 8), (5, 12, 4, 64, 8, 8),
                (6, 6, 8, 64, 16, 8), (3, 3, 16, 128, 32, 8)):
            split = layout._replace(bn_o=bn_o, bn_gu=bn_gu, bn_d=bn_d)
            label = f"  stages {stages} (down {down_stages}), tiles of {bn_o} / {bn_gu} / {bn_d} rows, {warps} warps"
            if pm.layout_problem(hidden, model.config.intermediate_size, split):
                continue
            pm.WARPS, pm.DOWN_STAGES = warps, down_stages
            try:
                out = persistent(1, stages, split)
                apart = ((out - expected[1]).abs().max() / expected[1].abs().max()).item()
                us = graph_time(lambda: persistent(len(layers), stages, split))
                print(f"{label:62} {us:8.1f} us, {nbytes / us / 1e6:5.2f} TB/s; one layer off by {apart:.1e}"
                      f"{'' if apart < 2e-2 else ' -- WRONG'}", flush=True)
            except Exception as exc:  # e.g. more shared memory than an SM has
                print(f"{label:62} failed: {type(exc).__name__}: {str(exc)[:160]}", flush=True)
            finally:
                pm.WARPS = pm.DOWN_STAGES = None
            if (stages, down_stages, warps, bn_d) == (5, 12, 8, layout.bn_d):  # the deepest down pipeline's timeline
                pm.WARPS, pm.DOWN_STAGES = warps, down_stages
                timeline(pm, layers[1], layers[2], attn0, resid0, stages)
                pm.WARPS = pm.DOWN_STAGES = None


def timeline(pm, layer, following, attended, residual, stages):
    """Where one launch's time goes (the launch for ``layer`` taking ``following``'s add+norm and q/k/v along):
    each program's clock at the kernel's STAMPS, relative to the earliest start, as the median and the
    latest over programs, and each matrix's weights over its stretch."""
    hidden = residual.shape[-1]
    qkv_out = following.self_attn.qkv_proj.weight_t.shape[1]
    layout = pm.layout_for(hidden, layer.mlp.down_proj.weight_t.shape[0],
                           torch.cuda.get_device_properties(0).multi_processor_count, qkv_out)
    stamps = torch.zeros(layout.programs, 8, dtype=torch.int64, device="cuda")
    for _ in range(3):  # the last of three back-to-back launches (compiled, caches warm)
        pm.persistent_mlp(layer, attended, residual, pm.new_counters(1, "cuda")[0], layout, stages, stamps,
                          next_layer=following)
    torch.cuda.synchronize()
    at = (stamps - stamps[:, 0].min()).double() / 1000  # microseconds
    mb = {2: layer.self_attn.o_proj.weight_t.numel() * 2e-6, 4: layer.mlp.gate_up_proj.weight_t.numel() * 2e-6,
          6: layer.mlp.down_proj.weight_t.numel() * 2e-6}
    print(f"one launch's timeline ({layout}; us from the first program's start; the q/k/v loop's end is the "
          f"launch's end, not stamped):")
    for i, name in enumerate(pm.STAMPS):
        stretch = at[:, i] - at[:, i - 1] if i else at[:, 0]
        line = (f"  {name:28} median {at[:, i].median().item():7.2f}  latest {at[:, i].max().item():7.2f}   "
                f"stretch before it: median {stretch.median().item():6.2f}, longest {stretch.max().item():6.2f}")
        if i in mb:  # this stretch streamed the matrix's weights: its rate over the whole launch
            span = at[:, i].max().item() - at[:, i - 1].min().item()
            line += f"   ({mb[i]:.1f} MB: {mb[i] / span:.2f} TB/s over its span)" if span > 0 else ""
        print(line, flush=True)

if __name__ == "__main__":
    main()
