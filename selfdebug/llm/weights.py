"""New weights for a running engine: staged on disk, then loaded in place by vLLM.

Why a directory: the engine actor and vLLM's engine core are two processes (AsyncLLM runs
the core in a background process; with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` the model
runs inside that core). `collective_rpc`'s arguments cross that boundary with msgpack,
which turns tensors into plain lists, so ``reload_weights(weights_iterator=...)`` cannot
be called from the actor. ``reload_weights(weights_path=DIR)`` can: the core reads
``DIR/*.safetensors`` with the model's own loader (HF names, stacked q/k/v handled).

Each engine actor stages into its own directory, named by its Ray actor id, which stays
the same when Ray restarts the actor: a restarted replica finds the marker of the weights
it had last loaded and loads them again instead of coming back with the original ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MARKER = "SELFDEBUG_LOADED"  # the directory whose weights this replica runs


def staging_dir(actor_id: str) -> Path:
    root = Path(os.environ.get("SELFDEBUG_WEIGHTS_STAGING") or tempfile.gettempdir())
    return root / "selfdebug-weights" / actor_id


def check_weights_dir(path: str | os.PathLike) -> str:
    """An absolute ``save_pretrained`` directory with weight files, or a clear error."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"weights directory not found: {p}")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise FileNotFoundError(f"{p} has no *.safetensors or *.bin weight files "
                                "(write it with model.save_pretrained)")
    return str(p)


def write_state(state: dict, dest: Path) -> str:
    """HF-named CPU tensors → ``dest/model.safetensors``; returns ``dest``.

    Tensors sharing storage (tied embeddings) are copied: safetensors refuses shared ones.
    """
    import torch
    from safetensors.torch import save_file

    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"reload_weights: not tensors: {bad[:5]}")
    dest.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    tensors = {}
    for name, t in state.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        tensors[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    tmp = dest / "model.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, dest / "model.safetensors")
    return str(dest)


def mark_loaded(staging: Path, source: str) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    (staging / MARKER).write_text(source)


def last_loaded(staging: Path) -> str | None:
    """The weights directory this replica last loaded, if it still exists."""
    marker = staging / MARKER
    if not marker.is_file():
        return None
    source = marker.read_text().strip()
    return source if source and Path(source).is_dir() else None


def remove(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
