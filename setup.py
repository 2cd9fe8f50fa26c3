"""Builds HAL's native parts: CMake compiles the runtime, hal._C, the torch bridge and the device plugins into
the package (the package itself is described in pyproject.toml).

Install after torch (the native parts build against the installed torch, never a new one):
    pip install torch==2.13.0 -r requirements.txt && pip install --no-build-isolation -e .
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the whole CMake project once, for the one extension hal._C."""

    def run(self) -> None:
        # setuptools clears self.inplace while it builds (it copies the extensions back afterwards), so
        # remember whether an in-place build was asked for.
        self._inplace_requested = bool(self.inplace)
        super().run()

    def build_extension(self, ext: Extension) -> None:
        import pybind11

        # An editable install (pip install -e) copies back only the extension file from its temporary build
        # folder, so write every native output straight into the source package instead.
        if getattr(self, "editable_mode", False) or self.inplace or getattr(self, "_inplace_requested", False):
            package_dir = ROOT / "hal"
        else:
            package_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("HAL_CMAKE_BUILD_DIR", ROOT / "build" / "cmake"))
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            f"-DCMAKE_BUILD_TYPE={os.environ.get('HAL_BUILD_TYPE', 'Release')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DHAL_PYTHON_OUTPUT_DIR={package_dir}",
            f"-DHAL_PLUGIN_OUTPUT_DIR={package_dir / 'plugins'}",
        ]
        if _has("ninja"):
            configure += ["-G", "Ninja"]
        subprocess.run(configure, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)
        expected = Path(self.get_ext_fullpath(ext.name)).resolve()
        if expected.parent != package_dir:  # Editable: setuptools copies hal._C back from here.
            import shutil

            expected.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package_dir / expected.name, expected)


def _has(program: str) -> bool:
    from shutil import which

    return which(program) is not None and not os.environ.get("HAL_NO_NINJA")


# Metadata, dependencies and entry points are in pyproject.toml; this file adds the native build only.
setup(ext_modules=[CMakeExtension("hal._C")], cmdclass={"build_ext": CMakeBuild})
