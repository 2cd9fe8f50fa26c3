"""The executor's two clocks, each one object chosen once: what they charge, without running a model."""
from __future__ import annotations

import types

from hal.plan.execute import _VirtualClock, _WallClock


def _stage(speed: float) -> types.SimpleNamespace:
    synced = []
    return types.SimpleNamespace(speed=speed, clock=0.0, sync=lambda: synced.append(1), synced=synced)


def test_virtual_clock_advances_each_stage_by_its_own_time():
    clock, fast, slow = _VirtualClock(), _stage(1.0), _stage(0.25)
    clock.start([fast, slow])
    out, start, end = clock.run(lambda: "y", slow)
    assert out == "y" and start == 0.0 and end == slow.clock >= 0.0 and fast.clock == 0.0
    clock.receive(fast, 5.0)  # a tensor sent at t = 5 s cannot be used earlier
    assert fast.clock == 5.0
    clock.receive(fast, 1.0)
    assert fast.clock == 5.0
    _, start, end = clock.run(lambda: None, fast, compute=False)
    assert start == 5.0 and end >= 5.0
    # The optimizers run after the pipelines: they do not move the stages' clocks, and the step adds them once.
    before = (fast.clock, slow.clock)
    opt = clock.optimizers([(0, 0, types.SimpleNamespace(optimizer=types.SimpleNamespace(step=lambda: None),
                                                         speed=0.5, clock=0.0))], [])
    assert (fast.clock, slow.clock) == before and opt >= 0.0
    step, times = clock.step_times([[fast], [slow]], 0.0, (0.0, 0.25), opt, [])
    assert times == [fast.clock, slow.clock] and step == max(times) + 0.25 + opt
    clock.start([fast, slow])
    assert fast.clock == slow.clock == 0.0


def test_wall_clock_waits_for_compute_not_for_copies_and_ignores_arrival_stamps():
    clock, st = _WallClock(), _stage(0.25)
    clock.start([st])
    _, start, end = clock.run(lambda: None, st)
    assert st.synced == [1] and 0.0 <= start <= end
    clock.run(lambda: None, st, compute=False)
    assert st.synced == [1]
    clock.receive(st, 1e9)
    assert st.clock == 0.0  # real time: arrivals happened when they happened
    events: list = []
    step, times = clock.step_times([[st], [st]], clock.t0, (clock.t0, 0.5), 0.0, events)
    assert times == [0.0, 0.0] and step >= 0.0
    assert [(e.op, e.start, e.end) for e in events] == [("allreduce", 0.0, 0.5)]
