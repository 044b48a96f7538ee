"""Local generation with llama.cpp (llama-cpp-python), constrained by the keyframe grammar.

Our own decode loop on top of llama.cpp, because the three things that make a 135M model useful
here all happen between two tokens:

* **prefix state reuse**: the fixed prompt prefix is evaluated once; each line rewinds the KV cache
  to it (``llama_memory_seq_rm``, no copy; models whose cache cannot be cut, such as sliding-window
  ones, restore a ``llama_state_seq_get_data`` snapshot instead) and evaluates only its own text;
* **token-first grammar check**: take the greedy token, check only that one against the grammar,
  and mask the whole vocabulary only when it is rejected (most steps need one check, not 49k);
* **calibrated feeling** (Zhao et al. 2021, contextual calibration): every answer opens with
  "They feel <word>." The word is ours to pick: the model's probabilities for the feeling words
  (happy, sad, scared ...) are summed per emotion and divided by the same model's preference on
  content-free input ("N/A"), so its bias toward whatever the examples said last stops deciding the
  emotion. Priors: the request's ``emotion`` hint, and emotion words the text (or, half as much,
  the ``context``) uses itself, in any inflection. The clause's keyframe lines then start with a
  word of that emotion (an alias such as "laugh" counts), or with an action when the model wants
  one, and an emotion's level is at least ``level_floor`` (a level-2 sadness reads as nothing).

Measured effect of each piece and the speed figures: docs/BENCHMARKS.md (issue 3 section).

* **the feeling model's reading** (runtime/text/feeling.py): a small classifier hears the feeling in
  the words of each beat (and in what the character just ``heard``); ``feeling_weight * log p`` is
  added to each emotion's score, so dialogue that names no feeling ("Please, don't hurt me") is
  read by what it means, and the line's intensity bounds the levels the keyframes may take.

A line is generated beat by beat (:func:`beats.plan`: the clauses of a stage direction, the
sentences of a turn whose feeling changes), the keyframe times continuing across beats.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.generate import beats
from runtime.generate import prompt as prompts
from runtime.generate.prompt import LineRequest
from runtime.keyframes.language import Language
from runtime.text.feeling import FeelingModel

log = logging.getLogger(__name__)

# the first expression word of a keyframe line starts after "<digits>" or "<digits> "
_NAME_POS = re.compile(r"^\d+ ?$")
# an item's level comes next: "<digits> [<name> <level> ]<name>[ ]"
_LEVEL_POS = re.compile(r"^\d+ (?:[A-Za-z]+ -?\d+ )*([A-Za-z]+) ?$")
EMOTIONS = ("joy", "sadness", "surprise", "fear", "anger", "disgust", "contempt", "neutral")
CONTENT_FREE = ("N/A", "[MASK]", "")


class PrefixCache:
    """The prefix's KV state and calibration on disk, keyed by everything that shapes them.

    A small header (JSON) then the raw state bytes: no pickle, so a cache file can only fail to
    load, never run code. Any change of model, adapter, context size, prompt, grammar, decoding
    settings, this module or llama.cpp gives another key.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    def for_backend(cls, model_path, lora_path, n_ctx: int, prefix: str, grammar: str, settings: dict) -> PrefixCache:
        root = os.environ.get("KEYFRAMEFACE_CACHE", str(Path.home() / ".cache" / "keyframeface"))
        if root.lower() in ("", "0", "off"):
            return cls(None)
        h = hashlib.sha256()
        for f in (model_path, lora_path):
            if f:
                st = os.stat(f)
                h.update(f"{Path(f).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        import llama_cpp

        for part in (str(n_ctx), prefix, grammar, json.dumps(settings, sort_keys=True),
                     getattr(llama_cpp, "__version__", "?"), Path(__file__).read_text(),
                     Path(prompts.__file__).read_text()):
            h.update(part.encode() + b"\0")
        return cls(Path(root) / f"prefix-{h.hexdigest()[:24]}.bin")

    def load(self) -> tuple[bytes, dict[str, float]] | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            data = self.path.read_bytes()
            n = int.from_bytes(data[:8], "little")
            head = json.loads(data[8:8 + n])
            state = data[8 + n:]
            if len(state) != head["state_bytes"]:
                raise ValueError("truncated")
            return state, {k: float(v) for k, v in head["calibration"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring prefix cache %s: %s", self.path, e)
            return None

    def save(self, state: bytes, calibration: dict[str, float]) -> None:
        if self.path is None:
            return
        head = json.dumps({"state_bytes": len(state), "calibration": calibration}).encode()
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(len(head).to_bytes(8, "little") + head + state)
            os.replace(tmp, self.path)  # atomic: a reader never sees half a file
            # keep the few newest states (13 MB each): other models, configs, code versions
            for old in sorted(self.path.parent.glob("prefix-*.bin"), key=lambda p: p.stat().st_mtime)[:-4]:
                old.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot write prefix cache %s: %s", self.path, e)


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


def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Intel AMX (Sapphire Rapids and later Xeons): llama.cpp then puts weights in its AMX buffers."""
    try:
        with open(cpuinfo) as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def weights_in_plain_cpu_buffers(llama_cpp, on: bool):
    """While a model loads, ask llama.cpp for no extra (repacked) weight buffers.

    On CPUs with AMX, llama.cpp (as of llama-cpp-python 0.3.36) crashes in its AMX matrix multiply
    on any batch of more than one token (ggml-org/llama.cpp#20824): the prompt's first
    evaluation segfaults. Plain CPU buffers run everywhere. ``Llama()`` has no argument for
    ``use_extra_bufts``, so its default model parameters are wrapped for the duration of the load.
    """
    lib = getattr(llama_cpp, "llama_cpp", None)  # the module llama.py takes its defaults from
    if not on or lib is None or "use_extra_bufts" not in dict(lib.llama_model_params._fields_):
        yield
        return
    log.info("CPU has AMX: loading the model without llama.cpp's extra weight buffers")
    with _PATCH_LOCK:  # two loads at once must not restore each other's defaults early
        default = lib.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = default


class LlamaBackend:
    """One loaded model. ``stream`` is not re-entrant: one line at a time per backend (a lock)."""

    def __init__(self, model_path: str | Path, grammar: str, *, n_threads: int = 0,
                 n_ctx: int = 2048, max_tokens: int = 96, lora_path: str | None = None,
                 n_gpu_layers: int = 0, system: str = prompts.SYSTEM,
                 examples: list[tuple[str, str]] | None = None, language: Language | None = None,
                 calibrate: float = 1.0, split_clauses: bool = True, clause_keyframes: int = 3,
                 max_keyframes: int = 8, emotion_prior: float = 3.0, consistent: bool = True,
                 cue_prior: float = 2.0, level_floor: int = 4, onset: bool = True,
                 feeling: FeelingModel | None = None, feeling_weight: float = 2.5,
                 beat_change: float = 0.65) -> None:
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - install problem, reported plainly
            raise GenerationError(f"llama-cpp-python is not installed: {e}") from None
        t0 = time.perf_counter()
        threads = n_threads or default_threads()
        self.lib = llama_cpp
        with weights_in_plain_cpu_buffers(llama_cpp, cpu_has_amx()):
            self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads,
                             n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
                             lora_path=lora_path, verbose=False, seed=0)
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.grammar_text = grammar
        self.grammar = _Grammar(llama_cpp, self.vocab, grammar, self.n_vocab)
        self.language = language or Language()
        self.max_tokens = max_tokens
        self.max_keyframes = max_keyframes
        self.calibrate = calibrate
        self.split_clauses = split_clauses
        self.clause_keyframes = clause_keyframes
        self.emotion_prior = emotion_prior
        self.consistent = consistent
        self.cue_prior = cue_prior
        self.level_floor = level_floor
        self.onset = onset
        self.feeling = feeling
        self.feeling_weight = feeling_weight
        self.beat_change = beat_change
        self._lock = threading.Lock()
        self._pieces: dict[int, str] = {}
        self._word_presets: dict[int, frozenset[str]] = {}
        self.stats: dict[str, float] = {}
        if lora_path and examples is None:
            # an adapter was trained on the short prompt without examples (tools/train_adapter.py)
            examples = []
            if system == prompts.SYSTEM:
                system = prompts.ADAPTER_SYSTEM
        self.template = prompts.template_for(self.llm.metadata.get("tokenizer.chat_template", ""))
        self.system = system
        self.examples = examples
        self.prefix = prompts.prefix(system, examples, self.template)
        # Evaluate the fixed prefix (and the opening of the next user turn) now, so every line pays
        # only for its own tokens. Its KV state and the calibration are kept on disk: the next
        # start restores them in milliseconds.
        self._open = prompts.user_open(self.template)
        prefix_ids = self.llm.tokenize((self.prefix + self._open).encode("utf-8"), add_bos=True, special=True)
        self._cache = PrefixCache.for_backend(model_path, lora_path, n_ctx, self.prefix + self._open, grammar, {
            "calibrate": calibrate, "emotion_prior": emotion_prior, "cue_prior": cue_prior,
            "level_floor": level_floor, "consistent": consistent, "clause_keyframes": clause_keyframes,
            "max_keyframes": max_keyframes, "words": self.language.words})
        cached = self._cache.load()
        if cached is not None and self._restore(cached[0], prefix_ids):
            self.prefix_tokens = len(prefix_ids)
            self._snapshot = cached[0]
        else:
            cached = None
            self.llm.eval(prefix_ids)
            self.prefix_tokens = self.llm.n_tokens
            # Cutting the cache back to the prefix is free; a snapshot covers caches that cannot be cut.
            self._snapshot = self._save_state()
        self.rewinds = {"cut": 0, "restore": 0}
        # first token of each feeling word -> its emotion (a token two emotions share decides nothing)
        self._feel_first: dict[str, int] = {}
        owners: dict[int, set[str]] = {}
        for name, words in prompts.FEELINGS.items():
            for w in words:
                t = self.llm.tokenize(f" {w}".encode(), add_bos=False, special=False)[0]
                self._feel_first[w] = t
                owners.setdefault(t, set()).add(name)
        self._feel_tokens = {t: next(iter(o)) for t, o in owners.items() if len(o) == 1}
        self.last_scores: dict[str, float] = {}
        self._levels = [t for t in {self.llm.tokenize(f"{sp}{d}".encode(), add_bos=False, special=False)[0]
                                    for d in range(10) for sp in ("", " ")} if self.piece(t).strip().isdigit()]
        # tokens that can start each preset's words, spaced or not (the grammar puts a space first)
        self._starts: dict[str, list[int]] = {}
        for w in self.language.words:
            name = self.language.preset(w)
            for form in (f" {w}", w):
                t = self.llm.tokenize(form.encode(), add_bos=False, special=False)[0]
                if t not in self._starts.setdefault(name, []):
                    self._starts[name].append(t)
        self.from_cache = cached is not None
        self.cf_log: dict[str, float] = {}
        if cached is not None:
            self.cf_log = cached[1]
        else:
            if calibrate:
                self.cf_log = self._content_free()
            self._cache.save(self._snapshot, self.cf_log)
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

    def _restore(self, snapshot: bytes, prefix_ids: list[int]) -> bool:
        """Load a saved prefix state; False (and a clean cache) if llama.cpp refuses it."""
        self.llm._ctx.kv_cache_clear()
        buf = (ctypes.c_uint8 * len(snapshot)).from_buffer_copy(snapshot)
        if not self.lib.llama_state_seq_set_data(self.llm._ctx.ctx, buf, len(snapshot), 0):
            log.warning("cached prefix state was refused; evaluating the prefix")
            self.llm._ctx.kv_cache_clear()
            self.llm.n_tokens = 0
            return False
        self.llm.input_ids[: len(prefix_ids)] = prefix_ids
        self.llm.n_tokens = len(prefix_ids)
        return True

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

    def _eval_line(self, req: LineRequest) -> None:
        """Evaluate the line's part of the prompt after the prefix (which holds the turn's opening)."""
        part = prompts.line_part(req, self.template)
        self.llm.eval(self.llm.tokenize(part[len(self._open):].encode("utf-8"), add_bos=False, special=True))

    def _onset_ids(self, emotion: str, intensity: float | None = None) -> tuple[str, list[int]] | None:
        """The onset line for ``emotion`` and its tokens, fed through the grammar; None (grammar
        reset) if the grammar refuses it, and the model writes the first line itself."""
        text = prompts.onset_line(emotion, intensity)
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=False)
        for t in ids:
            if not self.grammar.allows(t):
                self.grammar.reset()
                return None
            self.grammar.accept(t)
        return text, ids

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
    def _expression_token(self, greedy: int, logits: np.ndarray, keep: str) -> int | None:
        """Where a line's expression word may start: the greedy token when it is another time digit
        or an action (blink, look ...), else the likeliest allowed word start of the clause's
        emotion ``keep``. Checked token by token; None lets the caller fall back to the full mask."""
        presets = self._presets_of(greedy)
        if self.piece(greedy).strip().isdigit() or (presets and not presets & set(EMOTIONS)):
            if self.grammar.allows(greedy):
                return greedy
        for t in sorted(self._starts.get(keep, ()), key=lambda t: -logits[t]):
            if self.grammar.allows(t):
                return t
        return None

    def _level_token(self, greedy: int, logits: np.ndarray, line: str, intensity: float | None) -> int | None:
        """An emotion's level is at least ``level_floor`` (a level-2 sadness reads as nothing) and,
        when the line's intensity is known, within its range (:func:`prompt.level_range`). Neutral
        and actions keep any level."""
        m = _LEVEL_POS.match(line)
        if m is None or self.language.preset(m.group(1)) not in EMOTIONS[:-1]:
            return None
        lo, hi = prompts.level_range(intensity, self.level_floor)
        if lo <= int(self.piece(greedy).strip()) <= hi and self.grammar.allows(greedy):
            return greedy
        for t in sorted(self._levels, key=lambda t: -logits[t]):
            if lo <= int(self.piece(t).strip()) <= hi and self.grammar.allows(t):
                return t
        return None

    def _hint(self, req: LineRequest) -> str | None:
        w = req.emotion.strip().lower()
        if not w:
            return None
        name = self.language.preset(w.split()[0])
        return name if name in self.language.preset_vectors else None

    # -- decoding ---------------------------------------------------------------------------------
    def _feeling_mass(self) -> dict[str, float]:
        """Probability per emotion of the word after "They feel" (first tokens of FEELINGS words)."""
        lg = self._logits().astype(np.float64)
        ids = np.fromiter(self._feel_tokens, dtype=np.int64)
        p = np.exp(lg[ids] - lg[ids].max())
        p /= p.sum()
        mass: dict[str, float] = {}
        for t, pt in zip(ids.tolist(), p.tolist()):
            name = self._feel_tokens[t]
            mass[name] = mass.get(name, 0.0) + pt
        return mass

    def _feel(self, req: LineRequest, calibrated: bool) -> tuple[str, str]:
        """Decide the emotion where the answer says "They feel ...": the model's probabilities per
        emotion, divided by its content-free preference (calibration), plus priors for the request's
        ``emotion`` hint and for emotion words the text (or, half as much, the context) uses itself."""
        mass = self._feeling_mass()
        hint = self._hint(req)
        cues = self.language.cues(req.text) if calibrated else set()
        context_cues = self.language.cues(req.context) if calibrated else set()
        score = {}
        for name, m in mass.items():
            s = math.log(max(m, 1e-12))
            if calibrated and self.cf_log:
                s -= self.calibrate * self.cf_log.get(name, 0.0)
            if name == hint:
                s += self.emotion_prior
            s += self.cue_prior * ((name in cues) + 0.5 * (name in context_cues))
            if calibrated and req.prior:  # the feeling model's reading of the words
                s += self.feeling_weight * req.prior.get(name, math.log(1e-4))
            score[name] = s
        best = max(score, key=score.__getitem__)
        self.last_scores = score
        logits = self._logits()
        word = max(prompts.FEELINGS[best], key=lambda w: logits[self._feel_first[w]])
        return best, word

    def _decode(self, req: LineRequest, keyframes: int, budget: int, *, calibrated: bool = True,
                cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        """Generate one clause: the feeling word, then keyframe lines (yielded as (piece, tokens))."""
        self._rewind()
        self.grammar.reset()
        self._eval_line(req)
        chosen, word = self._feel(req, calibrated)
        # the feeling line is ours, not the model's: it goes into the context, never to the parser
        feel_ids = self.llm.tokenize(f" {word}.\n".encode(), add_bos=False, special=False)
        lines = 0
        onset = self._onset_ids(chosen, req.intensity) if self.onset else None
        if onset is not None:
            # The first keyframe leaves now, before the model evaluates it with the feeling line.
            yield onset[0], len(onset[1])
            lines = 1
            if lines >= keyframes or (cancel is not None and cancel.is_set()):
                return
            feel_ids = feel_ids + onset[1]
        self.llm.eval(feel_ids)
        line = ""
        for _ in range(budget):
            if cancel is not None and cancel.is_set():
                return
            logits = self._logits()
            tok = int(np.argmax(logits))
            pick = None
            if self.consistent and _NAME_POS.match(line):
                pick = self._expression_token(tok, logits, chosen)
            elif self.level_floor and self.piece(tok).strip().isdigit():
                pick = self._level_token(tok, logits, line, req.intensity)
            if pick is not None:
                tok = pick
            elif not self.grammar.allows(tok):
                masked = self.grammar.mask(logits)
                if not np.isfinite(masked).any():
                    return
                tok = int(np.argmax(masked))
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
        """log p(emotion) after "They feel", averaged over content-free inputs."""
        total: dict[str, float] = {}
        for text in CONTENT_FREE:
            self._rewind()
            self._eval_line(LineRequest(text))
            for k, v in self._feeling_mass().items():
                total[k] = total.get(k, 0.0) + v / len(CONTENT_FREE)
        return {k: math.log(max(v, 1e-6)) for k, v in total.items()}

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        """Yield (text, tokens) pieces as the model writes them; keyframe times continue across clauses."""
        parts = beats.plan(req, self.feeling, split=self.split_clauses, change=self.beat_change)
        # one beat: a few keyframes (onset, apex, settle); several: an even share each, so each beat
        # gets about the same time and the switch lands where the text puts it
        each = min(self.max_keyframes, self.clause_keyframes + 1) if len(parts) == 1 else max(
            2, min(self.clause_keyframes, self.max_keyframes // len(parts)))
        budget = self.max_tokens
        with self._lock:
            t0 = time.perf_counter()
            n = 0
            first = None
            for sub in parts:
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
