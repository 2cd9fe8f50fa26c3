"""Builds HAL: CMake compiles the runtime, hal._C and the device plugins into the package.

Install after torch (the native parts build against the installed torch, never a new one):
    pip install torch==2.13.0 -r requirements.txt && pip install --no-build-isolation -e .
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the whole CMake project once, for the one extension hal._C."""

    def build_extension(self, ext: Extension) -> None:
        import pybind11

        # An editable install (pip install -e) copies back only the extension file from its temporary build
        # folder, so write every native output straight into the source package instead.
        if getattr(self, "editable_mode", False) or self.inplace:
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


setup(
    name="hal",
    version="0.1.0",
    description="A hardware abstraction layer for heterogeneous accelerators, with a torch backend",
    python_requires=">=3.11",
    packages=find_packages(include=["hal", "hal.*"]),
    package_data={"hal": ["_C.pyi", "py.typed", "plugins/*.so", "plugins/skeleton/*.so", "*.so", "plan/presets/*.yaml", "plan/presets/clusters/*.yaml"]},
    ext_modules=[CMakeExtension("hal._C")],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["numpy", "PyYAML", "cffi", "rich", "matplotlib"],
    entry_points={
        "console_scripts": ["hal = hal.cli:main"],
        # `import torch` alone makes hal:N available (torch calls this; it never raises, it warns).
        "torch.backends": ["hal = hal.torch:_autoload"],
    },
    zip_safe=False,
)
