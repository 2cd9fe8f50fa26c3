"""The suite's hand-written ABI declaration (hal/conformance/abi/ffi.py) against the shipped headers: a C
program compiled against csrc/include prints every struct's size and every field's offset, and each must
equal cffi's."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hal.conformance.abi.ffi import GROUPS, OPTIONAL_ENTRIES, REQUIRED_ENTRIES, ffi

REPO = Path(__file__).resolve().parents[2]
STRUCTS = ["hal_plugin_init_args_t", "hal_device_properties_t", "hal_tensor_t", "hal_value_t", "hal_op_t",
           "hal_kernel_arg_t", "hal_comm_unique_id_t", "hal_comm_config_t", "hal_plugin_api_t"]


def test_sizes_and_offsets_match_the_headers(tmp_path):
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler")
    lines, expected = [], []
    for struct in STRUCTS:
        lines.append(f'printf("%zu\\n", sizeof({struct}));')
        expected.append((f"sizeof({struct})", ffi.sizeof(struct)))
        for field, _ in ffi.typeof(struct).fields:
            lines.append(f'printf("%zu\\n", offsetof({struct}, {field}));')
            expected.append((f"{struct}.{field}", ffi.offsetof(struct, field)))
    source = tmp_path / "layout.c"
    source.write_text('#include <stddef.h>\n#include <stdio.h>\n#include "hal/hal.h"\nint main(void) {\n  '
                      + "\n  ".join(lines) + "\n  return 0;\n}\n")
    subprocess.run([compiler, "-std=c11", f"-I{REPO / 'csrc' / 'include'}", str(source), "-o", str(tmp_path / "layout")],
                   check=True)
    got = [int(x) for x in subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True,
                                          check=True).stdout.split()]
    wrong = [f"{what}: cffi {want}, C {have}" for (what, want), have in zip(expected, got) if want != have]
    assert not wrong and len(got) == len(expected), wrong


def test_required_and_optional_entries_follow_plugin_h():
    text = (REPO / "csrc" / "include" / "hal" / "plugin.h").read_text()
    required = text[text.index("// --- Required (ABI 1.0) ---"):text.index("// --- Optional (ABI 1.0)")]
    assert all(f" {e};" in required for e in REQUIRED_ENTRIES)
    assert not any(f" {e};" in required for e in OPTIONAL_ENTRIES)
    assert all(e in OPTIONAL_ENTRIES for entries in GROUPS.values() for e in entries)
