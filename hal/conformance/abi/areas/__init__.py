"""The conformance areas, one module each; importing this package registers every test (case.CASES), in the
order the areas run (case.AREAS)."""
from hal.conformance.abi.areas import (  # noqa: F401
    loading, properties, memory, copies, streams, events, errors, pinned, kernels, threads, collectives,
)
