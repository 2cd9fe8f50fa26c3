"""`hal launch` on one node: one worker per device with its environment, the checks before any start, lost
devices, configuration errors and spent restarts."""
from __future__ import annotations

import json

import pytest

from tests.launch.helpers import launch, reports, write_worker

pytestmark = [pytest.mark.needs_native, pytest.mark.timeout(120)]

PLAN = {"model": "tiny", "global_batch": 8, "seq_len": 16, "cluster": "live", "pipelines": [
    {"stages": [{"kind": "emu-fast", "device_ids": [0], "layers": [0, 2]},
                {"kind": "emu-slow", "device_ids": [1], "layers": [2, 3]},
                {"kind": "emu-slow", "device_ids": [2], "layers": [3, 4]}],
     "micro_batch_size": 1, "num_micro_batches": 8, "samples": 8}]}


def test_one_worker_per_device_with_its_environment(tmp_path):
    script = write_worker(tmp_path / "job.py")
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    r = launch(tmp_path, ["--plan", "plan.json", "job.py", "--lr", "0.1"])
    assert r.returncode == 0, r.stderr
    reps = reports(tmp_path)
    assert [rep["RANK"] for rep in reps] == ["0", "1", "2"], r.stderr
    kinds = {"emu:0": "emu-fast", "emu:1": "emu-slow", "emu:2": "emu-slow"}
    for i, rep in enumerate(reps):
        dev = f"emu:{i}"
        assert rep["LOCAL_RANK"] == str(i) and rep["WORLD_SIZE"] == "3" and rep["LOCAL_WORLD_SIZE"] == "3"
        assert rep["HAL_VISIBLE_DEVICES"] == rep["HAL_LAUNCH_DEVICE"] == dev
        assert rep["devices"] == [[dev, 0, kinds[dev]]]  # exactly its device, as hal:0
        assert rep["HAL_LAUNCH_LOCAL_INDEX"] == str(i) and rep["HAL_LAUNCH_NODE_RANK"] == "0"
        assert rep["HAL_LAUNCH_DEVICES"] == "emu:0,emu:1,emu:2" and rep["HAL_LAUNCH_LOST"] == ""
        assert rep["HAL_LAUNCH_RUN_DIR"] == str(tmp_path / "hal-run") and rep["HAL_LAUNCH_NNODES"] == "1"
        assert rep["HAL_LAUNCH_PLAN"] == str(tmp_path / "plan.json") and "HAL_LAUNCH_CLUSTER" not in rep
        assert rep["HAL_EMU_DEVICES"] == "emu-fast:1:speed=0.5;emu-slow:2:speed=0.25"
        assert rep["GROUP_RANK"] == "0" and rep["MASTER_ADDR"] == "127.0.0.1" and rep["MASTER_PORT"]
        assert rep["TORCHELASTIC_RESTART_COUNT"] == "0" and rep["TORCHELASTIC_RUN_ID"]
        assert rep["argv"] == [str(script.name), "--lr", "0.1"] and rep["name"] == "__main__"
    record = json.loads((tmp_path / "hal-run" / "launch.json").read_text())
    assert record["state"] == "succeeded" and record["restarts"] == 0 and record["lost"] == []
    assert [d["name"] for d in record["devices"]] == ["emu:0", "emu:1", "emu:2"]
    assert [(x["world_size"], x["devices"]) for x in record["rounds"]] == [(3, ["emu:0", "emu:1", "emu:2"])]
    assert (tmp_path / "hal-run" / "logs" / "node0" / "attempt_0" / "2" / "stdout.log").is_file()


def test_nproc_per_node_and_devices_through_the_hal_command(tmp_path):
    write_worker(tmp_path / "job.py")
    r = launch(tmp_path, ["launch", "--devices", "emu-slow", "--nproc-per-node", "1", "--run-dir", "run",
                          "job.py"], cli="hal.cli")
    assert r.returncode == 0, r.stderr
    (rep,) = reports(tmp_path)
    assert rep["HAL_LAUNCH_DEVICE"] == "emu:1" and rep["HAL_LAUNCH_DEVICES"] == "emu:1"
    assert rep["HAL_LAUNCH_LOCAL_INDEX"] == "0" and rep["WORLD_SIZE"] == "1"
    assert rep["HAL_LAUNCH_RUN_DIR"] == str(tmp_path / "run") and (tmp_path / "run" / "launch.json").is_file()


def test_module(tmp_path):
    write_worker(tmp_path / "mymod.py")
    r = launch(tmp_path, ["--devices", "emu:2", "-m", "mymod", "x"])
    assert r.returncode == 0, r.stderr
    (rep,) = reports(tmp_path)
    assert rep["name"] == "__main__" and rep["argv"][1:] == ["x"] and rep["argv"][0].endswith("mymod.py")
    assert rep["devices"] == [["emu:2", 0, "emu-slow"]]


def test_cluster_file_names_the_nodes_devices(tmp_path):
    write_worker(tmp_path / "job.py")
    (tmp_path / "c.yaml").write_text("name: emu\nkinds:\n  - {name: emu-fast, base: H100}\n"
                                     "  - {name: emu-slow, base: H100}\nnodes:\n  - {kind: emu-slow, devices: 2}\n")
    r = launch(tmp_path, ["--cluster", "c.yaml", "job.py"])
    assert r.returncode == 0, r.stderr
    reps = reports(tmp_path)
    assert [(x["HAL_LAUNCH_DEVICE"], x["HAL_LAUNCH_LOCAL_INDEX"]) for x in reps] == [("emu:1", "0"), ("emu:2", "1")]
    assert all(x["HAL_LAUNCH_CLUSTER"] == str(tmp_path / "c.yaml") and "HAL_LAUNCH_PLAN" not in x for x in reps)


BAD_PLAN_KIND = {**PLAN, "pipelines": [{**PLAN["pipelines"][0], "stages": [
    {"kind": "emu-slow", "device_ids": [0], "layers": [0, 2]}, *PLAN["pipelines"][0]["stages"][1:]]}]}


@pytest.mark.parametrize("case, args, files, expected", [
    ("cluster", ["--cluster", "c.yaml"], {"c.yaml": "name: t\nnodes:\n  - {name: a, kind: nope, devices: 1}\n"},
     "--cluster: c.yaml:3: nodes[0].kind: unknown kind 'nope'"),
    ("cluster-node", ["--cluster", "small-8"], {}, "expects 4 x A100, found 0 of that kind here"),
    ("plan-json", ["--plan", "p.json"], {"p.json": '{"model": "tiny",'}, "p.json:1:"),
    ("plan-fields", ["--plan", "p.json"], {"p.json": '{"model": "tiny"}'}, "missing field 'global_batch'"),
    ("plan-kind", ["--plan", "p.json"], {"p.json": json.dumps(BAD_PLAN_KIND)},
     "device 0 is node 0 emu:0: the plan expects kind 'emu-slow' there (pipeline 0 stage 0), found 'emu-fast'"),
    ("plan-techniques", ["--plan", "p.json"], {"p.json": json.dumps({**PLAN, "techniques": {"zero": 2}})},
     "it uses ZeRO-2, which hal.parallel does not run"),
    ("devices", ["--devices", "tpu"], {}, "no device matches 'tpu'"),
    ("nproc", ["--nproc-per-node", "5"], {}, "--nproc-per-node 5: node 0 has 3 selected device(s)"),
    ("nnodes", ["--nnodes", "2"], {}, "several nodes need --rdzv-endpoint"),
])
def test_bad_input_stops_before_any_worker(tmp_path, case, args, files, expected):
    write_worker(tmp_path / "job.py")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    r = launch(tmp_path, [*args, "job.py"], timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expected in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert reports(tmp_path) == [] and not (tmp_path / "hal-run").exists()


@pytest.mark.parametrize("how", ["SIGKILL", "exit 75"])
def test_a_lost_device_restarts_the_job_on_the_others(tmp_path, how):
    write_worker(tmp_path / "job.py", f"""
        import signal, time
        if RESTART == 0 and os.environ["HAL_LAUNCH_DEVICE"] == "emu:1":
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGKILL) if {how == "SIGKILL"} else sys.exit(75)
        if RESTART == 0:
            time.sleep(20)  # the others wait in the job until the launcher stops them
            sys.exit(1)
    """)
    r = launch(tmp_path, ["--monitor-interval", "0.2", "job.py"])
    assert r.returncode == 0, r.stderr
    what = "killed by SIGKILL" if how == "SIGKILL" else "exited with 75 (device lost)"
    assert (f"node 0: rank 1 (emu:1, emu-slow) {what}: device lost; restarting on 2 devices (restart 1 of 3)"
            in r.stderr), r.stderr
    second = reports(tmp_path, restart=1)
    assert [(x["HAL_LAUNCH_DEVICE"], x["HAL_LAUNCH_LOCAL_INDEX"], x["LOCAL_RANK"]) for x in second] == [
        ("emu:0", "0", "0"), ("emu:2", "2", "1")]
    assert all(x["HAL_LAUNCH_LOST"] == "emu:1" and x["HAL_LAUNCH_DEVICES"] == "emu:0,emu:2"
               and x["WORLD_SIZE"] == "2" for x in second), second
    assert len(reports(tmp_path)) == 5
    record = json.loads((tmp_path / "hal-run" / "launch.json").read_text())
    assert record["state"] == "succeeded" and record["restarts"] == 1 and record["live"] == ["emu:0", "emu:2"]
    assert [x["device"] for x in record["lost"]] == ["emu:1"]
    assert [(x["world_size"], x["devices"], x["reason"]) for x in record["rounds"]] == [
        (3, ["emu:0", "emu:1", "emu:2"], "start"), (2, ["emu:0", "emu:2"], "lost device")]


def test_the_last_device_lost_ends_the_job(tmp_path):
    write_worker(tmp_path / "job.py", "os.kill(os.getpid(), 9)\n")
    r = launch(tmp_path, ["--devices", "emu:0", "--monitor-interval", "0.2", "job.py"])
    assert r.returncode == 1, r.stderr
    assert "no device left (lost: emu:0)" in r.stderr, r.stderr
    assert len(reports(tmp_path)) == 1


def test_a_configuration_error_stops_without_restart(tmp_path):
    write_worker(tmp_path / "job.py", """
        if os.environ["RANK"] == "2":
            print("the plan needs 4 devices, found 3", file=sys.stderr)
            sys.exit(78)
    """)
    r = launch(tmp_path, ["--monitor-interval", "0.2", "job.py"])
    assert r.returncode == 2, r.stderr
    assert "rank 2 (emu:2, emu-slow) exited with 78 (configuration error); not restarting" in r.stderr
    assert "  the plan needs 4 devices, found 3" in r.stderr.splitlines(), r.stderr
    assert {x["TORCHELASTIC_RESTART_COUNT"] for x in reports(tmp_path)} == {"0"}
    record = json.loads((tmp_path / "hal-run" / "launch.json").read_text())
    assert record["state"] == "config_error" and record["exit_code"] == 2


def test_spent_restarts_fail_naming_ranks_and_logs(tmp_path):
    write_worker(tmp_path / "job.py", "sys.exit(3 if os.environ['RANK'] == '0' else 0)\n")
    r = launch(tmp_path, ["--devices", "emu-slow", "--max-restarts", "1", "--monitor-interval", "0.2", "job.py"])
    assert r.returncode == 1, r.stderr
    assert "rank 0 (emu:1, emu-slow) exited with 3; restarting on 2 devices (restart 1 of 1)" in r.stderr
    assert "rank 0 (emu:1, emu-slow) exited with 3; no restarts left (1 of 1 used)" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "failed after 1 restart: rank 0 exited with 3" in last and "hal-run/logs/node0/attempt_1" in last, last
    assert {x["TORCHELASTIC_RESTART_COUNT"] for x in reports(tmp_path)} == {"0", "1"}
    record = json.loads((tmp_path / "hal-run" / "launch.json").read_text())
    assert record["state"] == "failed" and record["lost"] == [] and record["restarts"] == 1


def test_a_missing_node_times_out(tmp_path):
    write_worker(tmp_path / "job.py")
    r = launch(tmp_path, ["--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-conf", "join_timeout=2",
                          "job.py"], timeout=40)
    assert r.returncode == 1, r.stderr
    assert "did not gather --nnodes 2 node(s) within join_timeout = 2 s" in r.stderr, r.stderr
    assert reports(tmp_path) == []
