"""Import cost: `import genplug` + loading every plugin, against `import torch` alone.

Each measurement is a fresh interpreter (median of several). Target (issue 2): genplug ≤ 1.5 × torch + 100 ms.
Run: python bench/import_time.py
"""

import statistics
import subprocess
import sys
import time

TORCH = "import torch"
GENPLUG = "import genplug; genplug.get_plugin_manager().registries"


def measure(code: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    measure("pass", 1)
    base = measure("pass")
    torch_s = measure(TORCH)
    genplug_s = measure(GENPLUG)
    budget = 1.5 * torch_s + 0.100
    print(f"interpreter start      {base * 1000:8.1f} ms")
    print(f"import torch           {torch_s * 1000:8.1f} ms")
    print(f"import genplug+plugins {genplug_s * 1000:8.1f} ms")
    print(f"ratio genplug/torch    {genplug_s / torch_s:8.2f}x   (budget 1.5x torch + 100 ms = {budget * 1000:.0f} ms: "
          f"{'OK' if genplug_s <= budget else 'OVER'})")


if __name__ == "__main__":
    main()
