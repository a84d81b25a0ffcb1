"""The persistent MLP launch (plugins/models/llama/persistent_mlp.py, GENPLUG_PERSISTENT_MLP=1) through
Triton's interpreter, where each matrix is its own launch: its arithmetic and indexing against a float32
recompute with the fused step's roundings, over every layout it accepts; the fused step with it against
the unfused step; the eager loop against the graph loop, bit for bit. Its synchronisation (inline PTX)
runs only on a GPU: bench/probes/persistent_mlp.py checks its own result there, and the last test here
compiles it for sm_90 and reads the PTX (pipelining, waits, barriers, store order, spills)."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

from native_llama_fixtures import GEMMA_SWITCHES, native_model  # noqa: E402

SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             num_hidden_layers=2, vocab_size=97)


@pytest.fixture(scope="module")
def pm(triton_kernels_on):
    if triton_kernels_on != "cpu":
        pytest.skip("the emulated launches are the interpreter's; on a GPU bench/probes/persistent_mlp.py checks it")
    from genplug.plugins.models.llama import persistent_mlp

    return persistent_mlp


def _model(seed=0, **overrides):
    """A native model the kernel takes, its weights scaled so activations stay O(1) through the layers."""
    model = native_model(seed=seed, **{**SHAPE, **overrides}).to(torch.bfloat16)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight_t") and "embed" not in name:
                param.mul_(1.0 / (0.2 * math.sqrt(param.shape[0])))
    model.store_for_gpu_decode()
    return model


def _inputs(hidden, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 1, hidden, generator=generator).to(torch.bfloat16) for _ in range(2)]


def _check(pm, layer, attended, residual, layout=None):
    h, down = pm.persistent_mlp(layer, attended, residual, pm.new_counters(1, residual.device)[0], layout)
    assert pm.new_counters(2, residual.device).shape == (2, 3)
    want_h, want_down = pm.reference(layer, attended, residual)
    # the residual stream: one bf16 rounding of the same float32 sum, added in another order
    torch.testing.assert_close(h.float().view(-1), want_h.float(), rtol=2 ** -7, atol=1e-6)
    got = down.total().view(-1)
    # the normed row is rounded to bf16 on both sides: a flipped rounding moves an input by one ulp
    assert (got - want_down).abs().max() <= 2e-2 * want_down.abs().max()
    return h, down


@pytest.mark.parametrize("lean", [True, False], ids=["lean loops", "waits in the loops"])
def test_taking_the_next_layer_along_matches_a_float32_recompute(pm, monkeypatch, lean):
    """With the next layer, the launch also sums the new residual stream, norms it with that layer's input
    norm and runs its q/k/v projection: what the add+norm kernel and q/k/v GEMV did -- in both forms of
    its loops (inputs computed before the loop, or at its first tile)."""
    monkeypatch.setattr(pm, "LEAN_LOOPS", lean)
    model = _model(seed=5, hidden_size=512, num_attention_heads=8)  # two groups of 256 inputs
    layer, following = model.model.layers
    attended, residual = _inputs(512, 3)
    assert pm.next_layer_fits(following, 512) and pm.takes_next(layer, following, residual)
    stream, qkv = pm.persistent_mlp(layer, attended, residual, pm.new_counters(1, "cpu")[0], next_layer=following)
    want_stream, want_qkv = pm.reference(layer, attended, residual, following)
    # the stream adds the down projection, whose float32 sums differ in order: a bf16 ulp of the larger value
    assert (stream.float().view(-1) - want_stream.float()).abs().max() <= 1e-2 * want_stream.float().abs().max()
    got = qkv.total().view(-1)
    assert got.shape == want_qkv.shape == (following.self_attn.qkv_proj.weight_t.shape[1],)
    assert (got - want_qkv).abs().max() <= 2e-2 * want_qkv.abs().max()


def test_one_layer_matches_a_float32_recompute(pm):
    model = _model()
    layer = model.model.layers[0]
    assert pm.layer_fits(layer, 256)
    h, down = _check(pm, layer, *_inputs(256, 0))
    layout = pm.layout_for(256, 512, 4)  # the interpreter counts 4 multiprocessors
    assert down.parts.shape == (layout.groups, 1, 256) and h.dtype == torch.bfloat16


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([(256, 512, 8), (512, 512, 16), (512, 1024, 8), (256, 1024, 4)]),
       st.sampled_from([2, 4]), st.sampled_from([16, 32, 64]), st.sampled_from([2, 4]), st.integers(0, 2 ** 16))
def test_every_layout_computes_the_same_layer(pm, shape, bn_o, bn_gu, bn_d, seed):
    hidden, intermediate, programs = shape
    layout = pm.Layout(programs, hidden // 256, bn_o, bn_gu, bn_d)
    model = _model(seed % 7, hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=hidden // 64,
                   num_hidden_layers=1)
    _check(pm, model.model.layers[0], *_inputs(hidden, seed), layout)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 32).map(lambda n: 256 * n), st.integers(1, 64).map(lambda n: 128 * n), st.integers(1, 160),
       st.integers(1, 64).map(lambda n: 64 * n))
def test_layout_for_picks_a_split_that_fits(hidden, intermediate, sms, qkv_out):
    from genplug.plugins.models.llama import persistent_mlp as pm

    layout = pm.layout_for(hidden, intermediate, sms)
    if layout is not None:
        assert pm.layout_problem(hidden, intermediate, layout) is None and layout.bn_q == 0
        assert layout.programs <= sms and layout.groups == hidden // 256
    with_next = pm.layout_for(hidden, intermediate, sms, qkv_out)
    if with_next is not None:
        assert pm.layout_problem(hidden, intermediate, with_next, qkv_out) is None and with_next.bn_q > 0
        assert with_next.programs <= sms


def test_layout_for_the_1b_shape_on_an_h100():
    from genplug.plugins.models.llama import persistent_mlp as pm

    # 128 of the 132 SMs; 16 KB output/down tiles, 32 KB gate/up tiles (bf16)
    assert pm.layout_for(2048, 8192, 132) == pm.Layout(128, 8, 4, 64, 8, 0)
    # taking the next layer's q/k/v along (3,072 outputs: 32 query and 8 key/value heads of 64)
    assert pm.layout_for(2048, 8192, 132, 3072) == pm.Layout(128, 8, 4, 64, 8, 64)
    assert pm.layout_for(2000, 8192, 132) is None  # hidden not a multiple of 256


@pytest.mark.parametrize("layout, why", [
    ((32, 4, 4, 64, 8), "hidden 512 must be groups"),
    ((24, 2, 4, 64, 8), "power of two"),
    ((32, 2, 32, 64, 8), "output projection's rows"),
    ((32, 2, 4, 96, 8), "gate/up rows"),
    ((32, 2, 4, 64, 64), "down projection's rows"),
])
def test_layouts_that_do_not_split_are_refused(pm, layout, why):
    model = _model(hidden_size=512, num_attention_heads=8, num_hidden_layers=1)
    with pytest.raises(ValueError, match=why):
        pm.persistent_mlp(model.model.layers[0], *_inputs(512, 0), pm.new_counters(1, "cpu")[0], pm.Layout(*layout))


def test_it_runs_only_where_switched_on_and_it_applies(pm, monkeypatch):
    model = _model()
    layer, residual = model.model.layers[0], _inputs(256, 0)[1]
    assert not pm.usable(layer, residual)  # off by default
    monkeypatch.setattr(pm, "ENABLED", True)
    assert pm.usable(layer, residual)
    assert not pm.usable(layer, residual.expand(2, 1, 256))  # two rows
    assert not pm.usable(layer, residual.float())
    assert not pm.usable(_model(hidden_size=192, num_attention_heads=3, num_key_value_heads=1).model.layers[0], _inputs(192, 0)[1])
    gemma = _model(**GEMMA_SWITCHES["gemma2"], num_hidden_layers=3)
    assert not pm.layer_fits(gemma.model.layers[0], 256)  # sandwich norms, tanh-GELU
    biased = _model(mlp_bias=True)
    assert not pm.layer_fits(biased.model.layers[0], 256)
    # the next layer is taken along only where it fits too, and while TAKE_NEXT says so
    assert pm.takes_next(layer, model.model.layers[1], residual) and not pm.takes_next(layer, None, residual)
    assert not pm.takes_next(layer, _model(qkv_bias=True).model.layers[1], residual)  # a q/k/v bias
    monkeypatch.setattr(pm, "TAKE_NEXT", False)
    assert not pm.takes_next(layer, model.model.layers[1], residual)


def test_the_fused_step_with_it_matches_the_unfused_step(pm, monkeypatch):
    import genplug
    from genplug.plugins.models.llama import fused_step, graph_step

    monkeypatch.setattr(pm, "ENABLED", True)
    calls, real = [], pm.persistent_mlp
    monkeypatch.setattr(pm, "persistent_mlp", lambda *a, **k: calls.append(k.get("next_layer") is not None) or real(*a, **k))
    model = _model(seed=2)
    prompt = torch.tensor([[5, 9, 17, 3, 44]])
    caches = [genplug.StaticCache(config=model.config, max_cache_len=12) for _ in range(2)]
    for cache in caches:
        model(prompt, past_key_values=cache)
    token, slot, position = torch.tensor([[7]]), torch.tensor(5), torch.tensor([[5]])
    valid = torch.zeros(1, 12, dtype=torch.bool)
    valid[:, :6] = True
    fused = graph_step.static_decode_step(model, token, position, slot, valid, caches[0].layers)
    # the first layer's launch takes the second's add+norm and q/k/v along; the last hands its down projection
    # to the final norm
    assert calls == [True, False]
    unfused = graph_step.static_decode_step(model, token, position, slot, valid, caches[1].layers,
                                            layer_fn=graph_step.decode_layer)
    torch.testing.assert_close(fused.float(), unfused, rtol=0.05, atol=0.05)  # the head's dtype, float32
    assert fused.argmax(-1).item() == unfused.argmax(-1).item()
    assert fused_step.persistent_mlp is pm


def test_a_launch_that_fails_switches_it_off_and_the_step_goes_on(pm, monkeypatch):
    from genplug.plugins.models.llama import graph_step

    monkeypatch.setattr(pm, "ENABLED", True)

    def broken(*args, **kwargs):
        raise RuntimeError("this Triton cannot compile it")

    monkeypatch.setattr(pm, "persistent_mlp", broken)
    import genplug

    model = _model(seed=6)
    prompt, token = torch.tensor([[5, 9, 17]]), torch.tensor([[7]])
    valid = torch.zeros(1, 8, dtype=torch.bool)
    valid[:, :4] = True

    def step():
        cache = genplug.StaticCache(config=model.config, max_cache_len=8)
        model(prompt, past_key_values=cache)
        return graph_step.static_decode_step(model, token, torch.tensor([[3]]), torch.tensor(3), valid, cache.layers)

    with pytest.warns(RuntimeWarning, match="persistent MLP launch failed and is switched off"):
        logits = step()
    assert not pm.ENABLED and torch.isfinite(logits).all()
    again = step()
    torch.testing.assert_close(logits, again)  # what the kernels it replaces compute


@pytest.mark.slow
def test_eager_loop_equals_graph_loop_with_it(pm, monkeypatch):
    import genplug
    import genplug.graph_loop as graph_loop

    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "LAST_CAPTURE_SECONDS", None)
    monkeypatch.setattr(pm, "ENABLED", True)
    calls, real = [], pm.persistent_mlp
    monkeypatch.setattr(pm, "persistent_mlp", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = _model(seed=4)
    prompt = torch.tensor([[5, 9, 17, 3, 44]])
    kw = dict(max_new_tokens=4, cache_implementation="static", pad_token_id=0)
    graph = genplug.generate(model, prompt, **kw)
    assert graph_loop.LAST_CAPTURE_SECONDS is not None and calls
    eager = genplug.generate(model, prompt, disable_compile=True, **kw)
    assert torch.equal(graph, eager)


COMPILE = r'''
import json, os, re, subprocess, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from genplug.plugins.models.llama import persistent_mlp as pm

hidden, intermediate, stages = 2048, 8192, 4
layout = pm.layout_for(hidden, intermediate, 132, 3072)  # taking the next layer's q/k/v along: 4 loops
cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

def analyse(timeline, lean):
    signature, constants = pm.compile_spec(hidden, intermediate, 3072, layout, stages, timeline, lean=lean)
    out = triton.compile(ASTSource(fn=pm._persistent_mlp_kernel, signature=signature, constexprs=constants),
                         target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ir, ptx = out.asm["ttgir"], out.asm["ptx"]
    starts = [m.start() for m in re.finditer("scf.for", ir)]
    ends = [ir.index("scf.yield", s) for s in starts]
    outside = ir[:starts[0]] + "".join(ir[e:s] for e, s in zip(ends, starts[1:] + [len(ir)]))
    waits = lambda text: text.count("ld.acquire") + text.count("griddepcontrol.wait")
    lines = ptx.splitlines()
    releases = [i for i, line in enumerate(lines) if "red.release.gpu" in line]
    stack = None
    if os.path.exists(cuobjdump):
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(out.asm["cubin"])
        found = re.search(r"STACK:(\d+)", subprocess.run([cuobjdump, "--dump-resource-usage", f.name],
                                                          capture_output=True, text=True).stdout)
        stack = int(found.group(1)) if found else None
    labels = {m.group(1): i for i, l in enumerate(lines) for m in [re.match(r"^(\$L__BB\d+_\d+):", l.strip())] if m}
    late_stores = 0  # stores after the release add within a loop's body: the release would not cover them
    for i, line in enumerate(lines):
        back = re.search(r"bra(?:\.uni)?\s+(\$L__BB\d+_\d+);", line)
        if back and back.group(1) in labels and labels[back.group(1)] < i:
            body = lines[labels[back.group(1)]:i]
            release = [j for j, l in enumerate(body) if "red.release" in l]
            late_stores += sum(1 for j, l in enumerate(body) if "st.global" in l and release and j > release[0])
    return {"buffered": [int(n) for n in re.findall(r"ttg.local_alloc.*?!ttg.memdesc<(\d+)x[\dx]+xbf16", ir)],
            "late_stores": late_stores, "bounded_waits": ptx.count("@stuck trap"),
            "loops": len(starts), "waits_in_loops": [waits(ir[s:e]) for s, e in zip(starts, ends)],
            "waits_outside": waits(outside), "shared": out.metadata.shared, "stack": stack,
            "releases": len(releases),
            "barrier_before_release": all(re.search(r"bar.sync.*red.release", lines[i]) for i in releases),
            "release_under_a_branch": any("bra" in lines[i - 1] for i in releases),
            "clock_reads": ptx.count("%globaltimer"), "l2_prefetches": ptx.count("prefetch.global.L2")}

print(json.dumps({"plain": analyse(False, False), "timeline": analyse(True, False), "lean": analyse(False, True),
                  "lean, timeline": analyse(True, True)}))
'''


def test_it_compiles_for_sm90_pipelined_with_its_waits_where_they_belong():
    """Triton's interpreter never compiles the PTX: compile the 1B shape's kernel for an H100 (no GPU needed),
    taking the next layer's q/k/v along. Each of the four loops must keep weight tiles in flight (STAGES - 1
    buffered), publish behind a CTA barrier, fit the shared memory and spill nothing. With the waits in the
    loops, every wait must stay in its loop (one hoisted into a prologue waits early and can deadlock); with
    lean loops only the output projection's wait for the previous kernel is in a loop, the three others
    come before theirs, after the L2 prefetches of the loops' first tiles."""
    from helpers.compile_for_gpu import compiled_json

    results = compiled_json(COMPILE)
    for name, result in results.items():
        assert result["loops"] == 4 and result["buffered"] == [3, 3, 3, 3], (name, result)
        if name.startswith("lean"):
            assert result["waits_in_loops"][0] and not any(result["waits_in_loops"][1:]), (name, result)
            assert result["waits_outside"] >= 3 and result["l2_prefetches"] >= 3, (name, result)
        else:
            assert all(result["waits_in_loops"]) and result["waits_outside"] == 0, (name, result)
            assert result["l2_prefetches"] == 0, (name, result)
        assert result["releases"] >= 3 and result["barrier_before_release"], (name, result)
        assert not result["release_under_a_branch"], (name, result)  # every thread reaches the barrier
        assert result["late_stores"] == 0, (name, result)  # every store is published by the release after it
        assert result["bounded_waits"] >= 3, (name, result)  # a program that never comes ends in a trap, not a hang
        assert result["shared"] <= 227 * 1024, (name, result)
        # the lean kernel keeps 16 bytes of stack under Triton 3.9's ptxas (168 registers, no .local in its PTX)
        assert result["stack"] in (0, None) or (name.startswith("lean") and result["stack"] <= 16), (name, result)
    # the timeline (bench/probes/persistent_mlp.py) reads the clock at the 8 points of STAMPS, and only it does
    assert results["plain"]["clock_reads"] == 0 and results["timeline"]["clock_reads"] >= 8, results
    assert results["lean"]["clock_reads"] == 0 and results["lean, timeline"]["clock_reads"] >= 8, results
