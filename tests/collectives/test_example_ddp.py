"""examples/ddp_mixed.py under torchrun (ranks on hal:0, hal:1, hal:3: one cpu and two emu ranks, two islands)
ends with the parameters, and prints the losses, of one process training the same model on the full batch on
the CPU (the example's own `train_full_batch`), with the hierarchical collectives and with HAL_COLLECTIVES=host.
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ddp_mixed.py"
STEPS, BATCH = 4, 48
TIMEOUT_S = 180


def load_example():
    spec = importlib.util.spec_from_file_location("ddp_mixed", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torchrun(save: Path, env: dict) -> str:
    """Runs the example on 3 local ranks (--standalone: the rendezvous takes a free port); returns its output.
    The whole session (torchrun and its ranks) is killed if it outlives TIMEOUT_S."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
               str(EXAMPLE), "--steps", str(STEPS), "--batch", str(BATCH), "--save", str(save)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun still running after {TIMEOUT_S} s:\n{output}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}:\n{output}"
    return output


@pytest.mark.slow
@pytest.mark.needs_native
@pytest.mark.timeout(2 * TIMEOUT_S)
@pytest.mark.parametrize("collectives", ["hierarchical", "host"])
def test_ddp_example_matches_full_batch_training_on_cpu(tmp_path, collectives):
    env = {k: v for k, v in os.environ.items() if k != "HAL_COLLECTIVES"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if collectives == "host":
        env["HAL_COLLECTIVES"] = "host"
    save = tmp_path / "params.pt"
    output = torchrun(save, env)

    for rank, line in enumerate(["hal:0 (cpu:0)", "hal:1 (emu:0, emulated)", "hal:3 (emu:2, emulated)"]):
        assert f"local rank {rank}: {line}" in output, output
    # Another rank's warning may land on the same line (the ranks share the output): the loss is its digits.
    losses = [float(v) for v in re.findall(r"^step \d+: loss ([0-9.]+)", output, re.MULTILINE)]
    reference, reference_losses = load_example().train_full_batch(STEPS, BATCH)
    assert losses == pytest.approx(reference_losses, rel=1e-5), output
    params = torch.load(save)
    expected = reference.state_dict()
    assert params.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(params[name], value, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
