# The two entry points of the README. Both set everything up first, so each works on a fresh machine.
#   make demo   set up, then run the main job
#   make test   set up, then run the tests (what CI runs, through .ci/run)
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check

.PHONY: setup demo test bench clean

# torch is pinned here, before anything else, so pip never resolves a plain `torch` (which would pull
# gigabytes of CUDA packages); the native parts then build against it (--no-build-isolation).
setup:
	@# iproute2 (`ip netns`) for the two-host collectives test; it skips, saying why, where it cannot be had.
	@command -v ip >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; } || echo "note: no iproute2 (ip netns)"
	@# pocl (OpenCL on the CPU) and the ICD loader: the opencl plugin's tests run on a real OpenCL implementation.
	@[ -e /usr/lib/x86_64-linux-gnu/libOpenCL.so.1 ] && ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pocl-opencl-icd ocl-icd-libopencl1 >/dev/null; } || \
	  echo "note: no OpenCL runtime (pocl): the opencl plugin has no devices and its tests skip"
	$(PIP) install -q torch==2.13.0 -r requirements.txt
	$(PIP) install -q --no-build-isolation -e .

demo: setup
	hal demo

test: setup
	$(PYTHON) -m pytest

bench: setup
	$(PYTHON) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf build hal/plugins hal/sdk hal/*.so *.egg-info
