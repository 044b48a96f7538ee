"""Local generation with llama.cpp (llama-cpp-python), constrained by the keyframe grammar.

Tokens stream out as they are sampled; the caller parses them into keyframes as each line
completes. The fixed prompt prefix is evaluated once at start-up; llama-cpp-python keeps its KV
cache and re-evaluates only the tokens after the longest common prefix, so each line costs only its
own text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from runtime.generate import prompt as prompts
from runtime.generate.prompt import LineRequest

log = logging.getLogger(__name__)


class GenerationError(RuntimeError):
    pass


def default_threads() -> int:
    # Leave a core for the frame clock and the sinks. ggml's threads spin at barriers, so a model
    # with as many threads as cores stalls badly whenever anything else runs (measured here: a
    # 4-keyframe line took 34 s with 2 threads beside a busy process, 1.8 s with 1).
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class LlamaBackend:
    """One loaded model. ``stream`` is not re-entrant: one line at a time per backend."""

    def __init__(self, model_path: str | Path, grammar: str, *, n_threads: int = 0,
                 n_ctx: int = 2048, max_tokens: int = 96, lora_path: str | None = None,
                 n_gpu_layers: int = 0, system: str = prompts.SYSTEM,
                 examples: list[tuple[str, str]] | None = None) -> None:
        try:
            from llama_cpp import Llama, LlamaGrammar
        except ImportError as e:  # pragma: no cover - install problem, reported plainly
            raise GenerationError(f"llama-cpp-python is not installed: {e}") from None
        t0 = time.perf_counter()
        threads = n_threads or default_threads()
        self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads,
                         n_threads_batch=threads, n_gpu_layers=n_gpu_layers, lora_path=lora_path,
                         verbose=False, seed=0)
        self.grammar = LlamaGrammar.from_string(grammar, verbose=False)
        self.grammar_text = grammar
        self.max_tokens = max_tokens
        self.system = system
        self.examples = examples
        self._lock = threading.Lock()
        self.prefix = prompts.prefix(system, examples)
        # Evaluate the fixed prefix now, so the first line pays only for its own tokens.
        self.llm.eval(self.llm.tokenize(self.prefix.encode("utf-8"), add_bos=True, special=True))
        self.load_seconds = time.perf_counter() - t0
        log.info("model %s loaded in %.2f s (%d threads, prefix %d tokens)", Path(model_path).name,
                 self.load_seconds, threads, self.llm.n_tokens)

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        """Yield (text, tokens) pieces as the model writes them."""
        text = prompts.build(req, self.system, self.examples)
        with self._lock:
            chunks = self.llm.create_completion(text, max_tokens=self.max_tokens, temperature=0.0,
                                                top_k=1, grammar=self.grammar, stream=True)
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    break
                piece = chunk["choices"][0]["text"]
                if piece:
                    yield piece, 1
