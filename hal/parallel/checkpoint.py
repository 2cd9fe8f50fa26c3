"""Checkpoints of a training job that resume on another device mix: CPU tensors, one file, written atomically.

The runtime gathers the job's state (parameters, optimizer state, data position, RNG, plan, ...) to one rank as a
plain nested dict and calls `save`; on restart `load_latest` hands back the newest checkpoint that is complete
and intact. On disk, under `directory`:

    step-00000120/state.pt        torch.save of the state: every tensor on the CPU, contiguous, detached
    step-00000120/manifest.json   {"format", "version", "step", "created", "files": {"state.pt": {size, sha256}}}

A checkpoint is written into `.tmp-step-00000120-<random>/` (files and folder fsynced), renamed into place and
the parent fsynced, so a crash leaves either the whole checkpoint or a temp folder, which the next `save`
removes. (Saving a step that exists moves the old one aside as `.old-step-...` first; if that save is cut short
the next one puts it back.) Loading uses `torch.load(weights_only=True)`: a checkpoint holding anything but tensors, numbers,
strings, None and lists/tuples/dicts of them is refused, never executed. Python's and numpy's RNG states are
not of that kind: `rng_state()` / `set_rng_state()` turn them (and torch's CPU RNG) into a dict that is.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["save", "load_latest", "list_checkpoints", "rng_state", "set_rng_state", "CheckpointError",
           "CheckpointWarning", "FORMAT", "FORMAT_VERSION"]

FORMAT = "hal-checkpoint"
FORMAT_VERSION = 1
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_TEMP_PREFIXES = (".tmp-step-", ".old-step-")
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """No checkpoint in a directory can be used (the message lists each and why), or a save was refused."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped as corrupt or incomplete; the message names its path and what is wrong."""


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


# --- saving ---------------------------------------------------------------------------------------------------

def _to_cpu(obj: Any, where: str) -> Any:
    """|obj| with every tensor detached, on the CPU, contiguous and owning compact storage; TypeError naming
    the place (`state['layers'][0]...`) of anything weights_only loading would refuse."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu")
        if (not t.is_contiguous() or t.storage_offset() != 0
                or t.untyped_storage().nbytes() != t.numel() * t.element_size()):
            t = t.clone(memory_format=torch.contiguous_format)  # a view would save its whole storage
        return t
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, (bool, int, float, str)):  # subclasses (np.float64 is a float) pickle as themselves
        return type(obj).__mro__[[c in (bool, int, float, str) for c in type(obj).__mro__].index(True)](obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise TypeError(f"checkpoint state: {where} has a key of type {type(k).__name__} ({k!r}); "
                                "keys must be str, int, float, bool or None")
            out[k] = _to_cpu(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_to_cpu(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "shape", None) == ():
        return obj.item()  # a numpy scalar (np.float32(0.5)): its Python number
    raise TypeError(f"checkpoint state: {where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint "
                    "holds only tensors, numbers, strings, None and lists/tuples/dicts of them "
                    "(RNG states: use hal.parallel.checkpoint.rng_state())")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def save(directory: str | os.PathLike, step: int, state: dict, *, keep: int = 3) -> Path:
    """Writes |state| as the checkpoint of |step| under |directory| (created if missing) and returns its folder.

    Then keeps the newest |keep| checkpoints up to |step| (this one included), removes older ones and the temp
    folders of interrupted saves. Checkpoints of later steps (a run that was resumed from an earlier one) are
    left alone. Saving a step that exists replaces it once the new one is on disk."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step must be an int >= 0, not {step!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"checkpoint keep must be an int >= 1, not {keep!r}")
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, not {type(state).__name__}")
    cpu_state = _to_cpu(state, "state")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    name = _step_name(step)
    tmp = directory / f".tmp-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        state_path = tmp / STATE_FILE
        with open(state_path, "wb") as f:
            torch.save(cpu_state, f)
            f.flush()
            os.fsync(f.fileno())
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "step": step,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "created_unix": time.time(),
                    "torch": torch.__version__,
                    "files": {STATE_FILE: {"size": state_path.stat().st_size, "sha256": _sha256(state_path)}}}
        with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        final = directory / name
        old = None
        if final.exists():  # same step saved again: move the old one aside, then put the new one in place
            old = directory / f".old-{name}-{secrets.token_hex(4)}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _prune(directory, step, keep)
    return final


def _recover_replaced(directory: Path) -> None:
    """A save that replaced a step and crashed between its two renames left the old checkpoint as
    .old-step-N-*, with no step-N: put it back."""
    for entry in sorted(directory.iterdir()):
        m = re.match(r"^\.old-(step-\d{8,})-[0-9a-f]+$", entry.name)
        if m and entry.is_dir() and not (directory / m.group(1)).exists():
            os.rename(entry, directory / m.group(1))


def _prune(directory: Path, step: int, keep: int) -> None:
    _recover_replaced(directory)
    older = [(s, p) for s, p in _step_dirs(directory) if s < step]
    for _, path in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    for entry in directory.iterdir():
        if entry.name.startswith(_TEMP_PREFIXES) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


# --- finding and loading --------------------------------------------------------------------------------------

def _step_dirs(directory: Path) -> list[tuple[int, Path]]:
    """Every step-NNNNNNNN folder, complete or not, by step."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        m = _STEP_DIR.match(entry.name)
        if m and entry.is_dir():
            found.append((int(m.group(1)), entry))
    return sorted(found)


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints under |directory| (a manifest and a state file; contents not verified), oldest
    first. Empty when the directory does not exist."""
    return [(s, p) for s, p in _step_dirs(Path(directory))
            if (p / MANIFEST_FILE).is_file() and (p / STATE_FILE).is_file()]


def _check_manifest(path: Path, step: int) -> dict:
    """The manifest of the checkpoint at |path|; CheckpointError saying what is wrong with it."""
    mpath = path / MANIFEST_FILE
    if not mpath.is_file():
        raise CheckpointError(f"no {MANIFEST_FILE} (an incomplete checkpoint)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{MANIFEST_FILE} cannot be read: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{MANIFEST_FILE} is not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{MANIFEST_FILE} has format version {manifest.get('version')!r}, this HAL reads "
                              f"version {FORMAT_VERSION}")
    if manifest.get("step") != step:
        raise CheckpointError(f"{MANIFEST_FILE} says step {manifest.get('step')!r}, the folder step {step}")
    entry = manifest.get("files", {}).get(STATE_FILE) if isinstance(manifest.get("files"), dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or not isinstance(
            entry.get("sha256"), str):
        raise CheckpointError(f"{MANIFEST_FILE} has no size and sha256 of {STATE_FILE}")
    return entry


def _load_one(path: Path, step: int, map_location: Any) -> dict:
    entry = _check_manifest(path, step)
    spath = path / STATE_FILE
    if not spath.is_file():
        raise CheckpointError(f"no {STATE_FILE}")
    size = spath.stat().st_size
    if size != entry["size"]:
        raise CheckpointError(f"{STATE_FILE} is {size} bytes, the manifest says {entry['size']} (truncated?)")
    digest = _sha256(spath)
    if digest != entry["sha256"]:
        raise CheckpointError(f"{STATE_FILE} has sha256 {digest}, the manifest says {entry['sha256']} (corrupt)")
    try:
        state = torch.load(spath, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch refuses, the checkpoint cannot be used
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{STATE_FILE} cannot be loaded with weights_only=True "
                              f"({type(e).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{STATE_FILE} holds a {type(state).__name__}, not a dict")
    return state


def load_latest(directory: str | os.PathLike, map_location: Any = "cpu") -> tuple[int, dict] | None:
    """(step, state) of the newest checkpoint under |directory| that is complete and intact, or None when there
    is no checkpoint at all. Each newer one that is not is skipped with a CheckpointWarning naming its path and
    what is wrong; CheckpointError (listing each) when there are checkpoints and none can be used."""
    problems = []
    for step, path in reversed(_step_dirs(Path(directory))):
        try:
            return step, _load_one(path, step, map_location)
        except CheckpointError as e:
            problems.append(f"{path}: {e}")
            warnings.warn(f"skipping checkpoint {path}: {e}", CheckpointWarning, stacklevel=2)
    if not problems:
        return None
    raise CheckpointError(f"no usable checkpoint in {directory}:\n  " + "\n  ".join(problems))


# --- RNG state ------------------------------------------------------------------------------------------------

def rng_state() -> dict:
    """The process's RNG states (torch CPU, Python `random`, numpy's global RNG when numpy is installed) as a
    dict of tensors and numbers, which `save` stores and weights_only loading accepts."""
    version, internal, gauss = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}}
    try:
        import numpy as np
    except ImportError:
        return out
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    out["numpy"] = {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return out


def set_rng_state(state: dict) -> None:
    """Restores what `rng_state()` captured (the parts present: "torch", "python", "numpy"); ValueError naming
    the part that is malformed."""
    if not isinstance(state, dict):
        raise ValueError(f"RNG state must be a dict from rng_state(), not {type(state).__name__}")
    unknown = set(state) - {"torch", "python", "numpy"}
    if unknown:
        raise ValueError(f"RNG state has unknown parts {sorted(map(str, unknown))} (known: torch, python, numpy)")
    # Check every part before setting any, so a bad part leaves all RNGs as they were.
    py = np_state = None
    if "python" in state:
        p = state["python"]
        try:
            internal = tuple(int(x) for x in p["state"].tolist())
            py = (int(p["version"]), internal, None if p["gauss"] is None else float(p["gauss"]))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"RNG state['python'] is malformed ({type(e).__name__}: {e})") from None
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            raise ValueError("RNG state has a numpy part and numpy is not installed") from None
        n = state["numpy"]
        try:
            keys = n["keys"].cpu().numpy()
            if keys.min() < 0 or keys.max() > 0xFFFFFFFF:
                raise ValueError("keys out of the uint32 range")
            np_state = (str(n["name"]), keys.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                        float(n["cached_gaussian"]))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"RNG state['numpy'] is malformed ({type(e).__name__}: {e})") from None
    t = None
    if "torch" in state:
        t = state["torch"]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
            raise ValueError("RNG state['torch'] must be the uint8 tensor of torch.get_rng_state()")
        t = t.cpu()
    before = rng_state()
    try:
        if py is not None:
            random.setstate(py)
        if np_state is not None:
            np.random.set_state(np_state)
        if t is not None:
            torch.set_rng_state(t)
    except (ValueError, TypeError, RuntimeError) as e:
        set_rng_state(before)  # all or nothing
        raise ValueError(f"RNG state cannot be restored ({type(e).__name__}: {e})") from None
