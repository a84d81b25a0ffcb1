"""Diagnose the inductor-compiled CUDA-graph step with sampling processors (small model, logs on)."""
import time, warnings, torch, sys
sys.path.insert(0, "bench")
import gpu_decode as g
import transformers, genplug, tempfile
from pathlib import Path
torch.manual_seed(0)
hf = transformers.LlamaForCausalLM(g.one_b_config(int(sys.argv[1]) if len(sys.argv) > 1 else 2)).to(torch.bfloat16).cuda().eval()
tmp = Path(tempfile.mkdtemp()); hf.save_pretrained(tmp)
native, _ = genplug.load_model(tmp, device="cuda", dtype="bfloat16")
ids = torch.randint(3, 128000, (1, 128), device="cuda")
warnings.simplefilter("always")
for name, extra in (("sampling", g.SAMPLING), ("temp only", dict(do_sample=True, temperature=0.7)),
                    ("top_k", dict(do_sample=True, top_k=50)), ("top_p", dict(do_sample=True, top_p=0.9)),
                    ("rep", dict(repetition_penalty=1.1))):
    for i in range(2):
        t = time.perf_counter()
        genplug.generate(native, ids, max_new_tokens=64, eos_token_id=None, cache_implementation="static",
                         compile_config=genplug.CompileConfig(), **extra)
        torch.cuda.synchronize()
        print(f"{name} call {i}: {time.perf_counter() - t:.2f} s", flush=True)
