"""The expected-failures file: `read()` for the cffi suite (hal.conformance.abi applies it), and a pytest plugin
for the --runtime stage that marks the tests a plugin declares it fails (HAL_CONFORMANCE_EXPECTED_FAILURES) as
strict expected failures and refuses entries that name no test, so the list of known failures cannot go stale.
pytest is imported only by the plugin's hooks: the cffi suite runs without it."""
from __future__ import annotations

import os

import yaml


def read(path: str) -> dict[str, str]:
    """The expected-failures file as a mapping of test name -> reason; ValueError naming what is wrong."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"expected-failures file {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                              for k, v in data.items()):
        raise ValueError(f"expected-failures file {path}: expected a mapping of test name -> reason, "
                         "every reason a non-empty string")
    return data


def load_file(path: str) -> dict[str, str]:
    """read(), or SystemExit naming what is wrong (for the CLI)."""
    try:
        return read(path)
    except ValueError as e:
        raise SystemExit(f"hal conformance: {e}") from None


def _load(path: str) -> dict[str, str]:
    import pytest

    try:
        return read(path)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_collection_modifyitems(config, items):
    import pytest

    path = os.environ.get("HAL_CONFORMANCE_EXPECTED_FAILURES")
    if not path:
        return
    expected = _load(path)
    used = set()
    for item in items:
        for key in (item.name, getattr(item, "originalname", item.name)):
            if key in expected:
                item.add_marker(pytest.mark.xfail(reason=expected[key], strict=True))
                used.add(key)
                break
    stale = sorted(set(expected) - used)
    if stale:
        raise pytest.UsageError(f"expected-failures file {path} names tests that do not exist: "
                                f"{', '.join(stale)}")
