"""The conformance suite (hal/conformance/suite.py) against every device of the bundled plugins: cpu:0 and
every emu device. `hal conformance PLUGIN.so` runs the same tests against any plugin."""
import pytest

from hal.conformance.suite import *  # noqa: F401,F403 - the tests, their fixture and parametrization.

pytestmark = pytest.mark.needs_native
