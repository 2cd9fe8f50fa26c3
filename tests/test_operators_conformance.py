"""The operators area of the conformance suite (hal/conformance/operators.py) against the bundled plugins: every
kernel emu declares (devices/emu/emu_ops.c) against torch's CPU kernels. `hal conformance PLUGIN.so` runs the
same tests against any plugin."""
import pytest

from hal.conformance.operators import *  # noqa: F401,F403 - the test and its parametrization.

pytestmark = pytest.mark.needs_native
