"""Shared helpers for the runtime's tests: fixture plugins compiled at test time, and a runner that executes
a snippet against hal._C in a fresh interpreter (the runtime is process-global, so every init scenario gets
its own process).

    from plugin_fixtures import fixture_plugins, run_hal   # fixture_plugins is a session fixture
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "plugins" / "fixture_plugin.c"

# variant -> compiler flags. Each lands in its own folder as libhal_plugin_<variant>.so.
VARIANTS: dict[str, list[str]] = {
    "good": [],
    "good2": ['-DFIXTURE_NAME="fixture2"'],
    "no_entry": ["-DFIXTURE_NO_ENTRY"],
    "null_table": ["-DFIXTURE_NULL_TABLE"],
    "major2": ["-DFIXTURE_MAJOR=2", "-DFIXTURE_MINOR=0", '-DFIXTURE_NAME="major2"'],
    "abi10": ["-DFIXTURE_ABI10", '-DFIXTURE_NAME="abi10"'],
    "half_ops": ["-DFIXTURE_HALF_OPS", '-DFIXTURE_NAME="halfops"'],
    "one_kernel": ["-DFIXTURE_ONE_KERNEL", '-DFIXTURE_NAME="onekernel"'],
    "newer": ["-DFIXTURE_NEWER", '-DFIXTURE_NAME="newer"'],
    "old_table": ["-DFIXTURE_OLD_TABLE", '-DFIXTURE_NAME="old"'],
    "missing_required": ["-DFIXTURE_MISSING_REQUIRED", '-DFIXTURE_NAME="missing"'],
    "init_fails": ["-DFIXTURE_INIT_FAILS", '-DFIXTURE_NAME="initfail"'],
    "bad_name": ["-DFIXTURE_BAD_NAME"],
    "ext": ["-DFIXTURE_EXT=1", '-DFIXTURE_NAME="ext"'],
    "ext_cycle": ["-DFIXTURE_EXT=2", '-DFIXTURE_NAME="extcycle"'],
    "ext_zero_size": ["-DFIXTURE_EXT=3", '-DFIXTURE_NAME="extzero"'],
    "ext_bad_name": ["-DFIXTURE_EXT=4", '-DFIXTURE_NAME="extname"'],
    "ext_twice": ["-DFIXTURE_EXT=5", '-DFIXTURE_NAME="exttwice"'],
    "abi11": ["-DFIXTURE_ABI11", "-DFIXTURE_EXT=1", '-DFIXTURE_NAME="abi11"'],
}


def _compile(out_dir: Path, variant: str, flags: list[str]) -> Path:
    target = out_dir / variant / f"libhal_plugin_{variant}.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-shared", "-fPIC", "-O1", "-fvisibility=hidden", "-I", str(ROOT / "csrc" / "include"), *flags, "-o", str(target),
           str(SOURCE), "-lpthread"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return target


@pytest.fixture(scope="session")
def fixture_plugins(tmp_path_factory) -> dict[str, Path]:
    """variant name -> path of the compiled fixture plugin; plus "not_a_library" (a text file named .so)."""
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler to build the fixture plugins")
    out = tmp_path_factory.mktemp("plugins")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {v: pool.submit(_compile, out, v, f) for v, f in VARIANTS.items()}
        paths = {v: f.result() for v, f in futures.items()}
    text = out / "text" / "libhal_plugin_text.so"
    text.parent.mkdir()
    text.write_text("this is not an ELF file\n")
    paths["not_a_library"] = text
    return paths


def hal_env(**overrides: str | None) -> dict[str, str]:
    """os.environ without any HAL_* variable, then |overrides| (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_hal(code: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 60):
    """Runs |code| in a fresh interpreter with `from hal import _C` and `emit(obj)` (prints obj as the JSON
    result) predefined; returns the emitted object. Fails the test with the output if the process fails."""
    prelude = "import json, sys\nfrom hal import _C\ndef emit(obj):\n    print('@@' + json.dumps(obj))\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env or hal_env(),
                          cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"snippet failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    results = [line[2:] for line in proc.stdout.splitlines() if line.startswith("@@")]
    assert results, f"snippet emitted nothing:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(results[-1])


def init_snippet(paths=(), dirs=(), use_env=True, configs=None) -> str:
    """Code that calls _C.init and binds `state` = {devices, plugins, errors} for emit()."""
    return f"""
_C.init(plugin_paths={[str(p) for p in paths]!r}, plugin_dirs={[str(d) for d in dirs]!r},
        use_env={use_env!r}, configs={configs or {}!r})
state = dict(devices=[_C.get_device(i).name for i in range(_C.device_count())],
             plugins=[p.name for p in _C.plugins()], errors=[list(e) for e in _C.load_errors()])
"""
