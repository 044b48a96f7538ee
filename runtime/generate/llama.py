"""Local generation with llama.cpp (llama-cpp-python), constrained by the keyframe grammar.

Our own decode loop on top of llama.cpp, because the three things that make a 135M model useful
here all happen between two tokens:

* **prefix state reuse**: the fixed prompt prefix is evaluated once; each line rewinds the KV cache
  to it (``llama_memory_seq_rm``, no copy; models whose cache cannot be cut, such as sliding-window
  ones, restore a ``llama_state_seq_get_data`` snapshot instead) and evaluates only its own text;
* **token-first grammar check**: take the greedy token, check only that one against the grammar,
  and mask the whole vocabulary only when it is rejected (most steps need one check, not 49k);
* **calibrated expression choice** (Zhao et al. 2021, contextual calibration): where a keyframe
  line's first expression word starts, the model's probabilities are summed per preset (an alias
  counts for its preset) and divided by the same model's preference on content-free input ("N/A"),
  so its bias toward whatever the examples said last stops deciding the emotion. An ``emotion`` hint
  from the request adds a prior there too.

A line that tells a sequence is generated clause by clause (:func:`prompt.clauses`), the keyframe
times continuing across clauses.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.generate import prompt as prompts
from runtime.generate.prompt import LineRequest
from runtime.keyframes.language import Language

log = logging.getLogger(__name__)

# the first expression word of a keyframe line starts after "<digits>" or "<digits> "
_NAME_POS = re.compile(r"^\d+ ?$")
EMOTIONS = ("joy", "sadness", "surprise", "fear", "anger", "disgust", "contempt", "neutral")
CONTENT_FREE = ("N/A", "[MASK]", "")


class GenerationError(RuntimeError):
    pass


def default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 2
    # Leave a core for the frame clock and the sinks. ggml's threads spin at barriers, so a model
    # with as many threads as cores stalls badly whenever anything else runs (measured here: a
    # 4-keyframe line took 34 s with 2 threads beside a busy process, 1.8 s with 1).
    return max(1, min(4, cores - 1))


class _Grammar:
    """llama.cpp's grammar sampler, asked about one token first and the whole vocabulary only if needed."""

    def __init__(self, llama_cpp, vocab, text: str, n_vocab: int) -> None:
        self.lib = llama_cpp
        self.smpl = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
        if not self.smpl:
            raise GenerationError("llama.cpp rejected the keyframe grammar")
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_arr = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        self._all = (llama_cpp.llama_token_data * n_vocab)()
        self._all_np = np.ctypeslib.as_array(self._all)
        self._all_arr = llama_cpp.llama_token_data_array(data=self._all, size=n_vocab, selected=-1, sorted=False)
        self.full_checks = 0
        self.checks = 0

    def allows(self, token: int) -> bool:
        self.checks += 1
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._one_arr.size, self._one_arr.selected, self._one_arr.sorted = 1, -1, False
        self.lib.llama_sampler_apply(self.smpl, ctypes.byref(self._one_arr))
        return math.isfinite(self._one[0].logit)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` with every token the grammar rejects set to -inf (a new array)."""
        self.full_checks += 1
        self._all_np["id"] = np.arange(len(logits), dtype=np.int32)
        self._all_np["logit"] = logits
        self._all_np["p"] = 0.0
        self._all_arr.size, self._all_arr.selected, self._all_arr.sorted = len(logits), -1, False
        self.lib.llama_sampler_apply(self.smpl, ctypes.byref(self._all_arr))
        out = np.full(len(logits), -np.inf, dtype=np.float32)
        out[self._all_np["id"]] = self._all_np["logit"]
        return out

    def accept(self, token: int) -> None:
        self.lib.llama_sampler_accept(self.smpl, token)

    def reset(self) -> None:
        self.lib.llama_sampler_reset(self.smpl)

    def close(self) -> None:
        if self.smpl:
            self.lib.llama_sampler_free(self.smpl)
            self.smpl = None


class LlamaBackend:
    """One loaded model. ``stream`` is not re-entrant: one line at a time per backend (a lock)."""

    def __init__(self, model_path: str | Path, grammar: str, *, n_threads: int = 0,
                 n_ctx: int = 2048, max_tokens: int = 96, lora_path: str | None = None,
                 n_gpu_layers: int = 0, system: str = prompts.SYSTEM,
                 examples: list[tuple[str, str]] | None = None, language: Language | None = None,
                 calibrate: float = 1.0, split_clauses: bool = True, clause_keyframes: int = 3,
                 max_keyframes: int = 8, emotion_prior: float = 3.0, consistent: bool = True) -> None:
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - install problem, reported plainly
            raise GenerationError(f"llama-cpp-python is not installed: {e}") from None
        t0 = time.perf_counter()
        threads = n_threads or default_threads()
        self.lib = llama_cpp
        self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads,
                         n_threads_batch=threads, n_gpu_layers=n_gpu_layers, lora_path=lora_path,
                         verbose=False, seed=0)
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.grammar_text = grammar
        self.grammar = _Grammar(llama_cpp, self.vocab, grammar, self.n_vocab)
        self.language = language or Language()
        self.max_tokens = max_tokens
        self.max_keyframes = max_keyframes
        self.system = system
        self.examples = examples
        self.calibrate = calibrate
        self.split_clauses = split_clauses
        self.clause_keyframes = clause_keyframes
        self.emotion_prior = emotion_prior
        self.consistent = consistent
        self._lock = threading.Lock()
        self._pieces: dict[int, str] = {}
        self._word_presets: dict[int, frozenset[str]] = {}
        self.stats: dict[str, float] = {}
        self.template = prompts.template_for(self.llm.metadata.get("tokenizer.chat_template", ""))
        self.prefix = prompts.prefix(system, examples, self.template)
        # Evaluate the fixed prefix now, so every line pays only for its own tokens.
        self.llm.eval(self.llm.tokenize(self.prefix.encode("utf-8"), add_bos=True, special=True))
        self.prefix_tokens = self.llm.n_tokens
        # Cutting the cache back to the prefix is free; a snapshot covers caches that cannot be cut.
        self._snapshot = self._save_state()
        self.rewinds = {"cut": 0, "restore": 0}
        self.cf_log: dict[str, float] = {}
        if calibrate:
            self.cf_log = self._content_free()
        self.load_seconds = time.perf_counter() - t0
        log.info("model %s loaded in %.2f s (%d threads, prefix %d tokens, calibration %s)",
                 Path(model_path).name, self.load_seconds, threads, self.prefix_tokens,
                 {k: round(v, 2) for k, v in self.cf_log.items()})

    # -- KV state ---------------------------------------------------------------------------------
    def _save_state(self) -> bytes:
        ctx = self.llm._ctx.ctx
        size = self.lib.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = self.lib.llama_state_seq_get_data(ctx, buf, size, 0)
        return bytes(buf[:n])

    def _rewind(self) -> None:
        """Back to the state right after the prefix."""
        if self.llm._ctx.kv_cache_seq_rm(0, self.prefix_tokens, -1):
            self.llm.n_tokens = self.prefix_tokens
            self.rewinds["cut"] += 1
            return
        self.rewinds["restore"] += 1
        self.llm._ctx.kv_cache_clear()
        buf = (ctypes.c_uint8 * len(self._snapshot)).from_buffer_copy(self._snapshot)
        if not self.lib.llama_state_seq_set_data(self.llm._ctx.ctx, buf, len(self._snapshot), 0):
            raise GenerationError("could not restore the prefix state")
        self.llm.n_tokens = self.prefix_tokens

    def _logits(self) -> np.ndarray:
        ptr = self.lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    # -- tokens -----------------------------------------------------------------------------------
    def piece(self, token: int) -> str:
        s = self._pieces.get(token)
        if s is None:
            s = self.llm.detokenize([token]).decode("utf-8", errors="replace")
            self._pieces[token] = s
        return s

    def _presets_of(self, token: int) -> frozenset[str]:
        """Presets whose words (or aliases) this token can begin; empty for digits and spaces."""
        got = self._word_presets.get(token)
        if got is None:
            stem = self.piece(token).strip().lower()
            if not stem or not stem.isalpha():
                got = frozenset()
            else:
                got = frozenset(self.language.preset(w) for w in self.language.words if w.lower().startswith(stem))
            self._word_presets[token] = got
        return got

    # -- the choice of expression -----------------------------------------------------------------
    def _preset_mass(self, masked: np.ndarray) -> tuple[dict[str, float], dict[str, list[int]]]:
        """Probability per preset among word-starting tokens the grammar allows, and their tokens."""
        allowed = np.flatnonzero(np.isfinite(masked))
        words = [t for t in allowed.tolist() if self._presets_of(t)]
        if not words:
            return {}, {}
        lg = masked[words].astype(np.float64)
        p = np.exp(lg - lg.max())
        p /= p.sum()
        mass: dict[str, float] = {}
        tokens: dict[str, list[int]] = {}
        for t, pt in zip(words, p.tolist()):
            presets = self._presets_of(t)
            for name in presets:  # a token shared by several words counts for each, split evenly
                mass[name] = mass.get(name, 0.0) + pt / len(presets)
                tokens.setdefault(name, []).append(t)
        return mass, tokens

    def _choose_word(self, masked: np.ndarray, hint: str | None,
                     keep: str | None = None) -> tuple[int, str] | None:
        """The calibrated first token of the expression word and its preset, or None to keep the
        greedy token. ``keep``: the emotion this clause already chose; later lines stay with it."""
        mass, tokens = self._preset_mass(masked)
        if not mass:
            return None
        emo = {k: v for k, v in mass.items() if k in EMOTIONS}
        act = sum(v for k, v in mass.items() if k not in EMOTIONS)
        if hint is None and (not emo or act > sum(emo.values())):
            return None  # the model wants an action here (blink, look ...): leave it alone
        if keep is not None and keep in tokens:
            cands = [t for t in tokens[keep] if self._presets_of(t) == {keep}] or tokens[keep]
            return max(cands, key=lambda t: masked[t]), keep
        score = {}
        for name, m in emo.items():
            s = math.log(max(m, 1e-12))
            if self.cf_log:
                s -= self.calibrate * self.cf_log.get(name, min(self.cf_log.values()))
            if hint is not None and name == hint:
                s += self.emotion_prior
            score[name] = s
        if hint is not None and hint not in score and hint in tokens:
            score[hint] = math.log(max(mass[hint], 1e-12)) + self.emotion_prior
        best = max(score, key=score.__getitem__)
        cands = [t for t in tokens[best] if self._presets_of(t) == {best}] or tokens[best]
        return max(cands, key=lambda t: masked[t]), best

    def _hint(self, req: LineRequest) -> str | None:
        w = req.emotion.strip().lower()
        if not w:
            return None
        name = self.language.preset(w.split()[0])
        return name if name in self.language.preset_vectors else None

    # -- decoding ---------------------------------------------------------------------------------
    def _decode(self, req: LineRequest, keyframes: int, budget: int, *, calibrated: bool = True,
                cancel: threading.Event | None = None, stop_at_name: bool = False):
        """Generate one clause. Yields (piece, tokens); with ``stop_at_name`` returns the masked
        logits at the first expression position instead (for calibration)."""
        self._rewind()
        self.grammar.reset()
        part = prompts.line_part(req, self.template).encode("utf-8")
        self.llm.eval(self.llm.tokenize(part, add_bos=False, special=True))
        hint = self._hint(req)
        chosen: str | None = None
        line = ""
        lines = 0
        for _ in range(budget):
            if cancel is not None and cancel.is_set():
                return
            logits = self._logits()
            tok = int(np.argmax(logits))
            at_name = bool(_NAME_POS.match(line))
            if at_name or not self.grammar.allows(tok):
                masked = self.grammar.mask(logits)
                if not np.isfinite(masked).any():
                    return
                tok = int(np.argmax(masked))
                if at_name and not self.piece(tok).strip().isdigit():
                    if stop_at_name:
                        yield masked
                        return
                    if calibrated:
                        pick = self._choose_word(masked, hint, chosen if self.consistent else None)
                        if pick is not None:
                            tok, chosen = pick
            if self.lib.llama_vocab_is_eog(self.vocab, tok):
                return
            self.grammar.accept(tok)
            text = self.piece(tok)
            line += text
            if "\n" in text:
                lines += 1
                line = line.rsplit("\n", 1)[1]
                if lines >= keyframes:  # this clause has its share; the line ended cleanly
                    yield text, 1
                    return
            yield text, 1
            self.llm.eval([tok])

    def _content_free(self) -> dict[str, float]:
        """log p(preset) at the first expression position, averaged over content-free inputs."""
        total: dict[str, float] = {}
        for text in CONTENT_FREE:
            for item in self._decode(LineRequest(text), 1, 8, stop_at_name=True):
                if not isinstance(item, np.ndarray):
                    continue
                mass, _ = self._preset_mass(item)
                for k, v in mass.items():
                    total[k] = total.get(k, 0.0) + v / len(CONTENT_FREE)
        return {k: math.log(max(v, 1e-6)) for k, v in total.items() if k in EMOTIONS}

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        """Yield (text, tokens) pieces as the model writes them; keyframe times continue across clauses."""
        parts = prompts.clauses(req.text) if self.split_clauses else [req.text]
        # one beat: a few keyframes (onset, apex, settle); several: an even share each, so each beat
        # gets about the same time and the switch lands where the text puts it
        each = min(self.max_keyframes, self.clause_keyframes + 1) if len(parts) == 1 else max(
            2, min(self.clause_keyframes, self.max_keyframes // len(parts)))
        budget = self.max_tokens
        with self._lock:
            t0 = time.perf_counter()
            n = 0
            first = None
            for clause in parts:
                sub = LineRequest(text=clause, context=req.context, emotion=req.emotion, id=req.id)
                # Whole lines only: a clause cut off mid-line (budget, cancel) drops its partial line
                # instead of gluing it to the next clause's first line.
                line, line_tokens = "", 0
                for piece, tokens in self._decode(sub, each, budget, calibrated=self.calibrate > 0,
                                                  cancel=cancel):
                    n += tokens
                    line += piece
                    line_tokens += tokens
                    if "\n" in line:
                        if first is None:
                            first = time.perf_counter() - t0
                        done, line = line.rsplit("\n", 1)
                        yield done + "\n", line_tokens
                        line_tokens = 0
                budget = self.max_tokens - n
                if budget <= 0 or (cancel is not None and cancel.is_set()):
                    break
            self.stats = {"tokens": n, "seconds": time.perf_counter() - t0,
                          "first_keyframe_s": first if first is not None else float("nan"),
                          "clauses": len(parts)}

    def close(self) -> None:
        self.grammar.close()
