"""pytest plugin: marks the tests a plugin declares it fails (HAL_CONFORMANCE_EXPECTED_FAILURES) as strict
expected failures, and refuses entries that name no test, so the list of known failures cannot go stale."""
from __future__ import annotations

import os

import pytest
import yaml


def _load(path: str) -> dict[str, str]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise pytest.UsageError(f"expected-failures file {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                              for k, v in data.items()):
        raise pytest.UsageError(f"expected-failures file {path}: expected a mapping of test name -> reason, "
                                "every reason a non-empty string")
    return data


def load_file(path: str) -> dict[str, str]:
    """The expected-failures file as a mapping, or SystemExit naming what is wrong with it."""
    try:
        return _load(path)
    except pytest.UsageError as e:
        raise SystemExit(f"hal conformance: {e}") from None


def pytest_collection_modifyitems(config, items):
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
