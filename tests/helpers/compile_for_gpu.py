"""Run a script that compiles Triton kernels for a GPU on this machine (no GPU needed) and prints JSON.

The test session runs Triton in interpreter mode (tests/conftest.py), which never compiles: the script runs
in a subprocess without it. Skips where this Triton build has no CUDA toolchain."""
import json
import os
import subprocess
import sys

import pytest


def compiled_json(script: str):
    """The JSON object the script printed last."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        if "ptxas" in done.stderr or "CUDA" in done.stderr and "not found" in done.stderr:
            pytest.skip("this Triton build has no CUDA toolchain: " + done.stderr[-300:])
        raise AssertionError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])
