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

**Lines generated together** (one batch): every line being generated is its own sequence in the
KV cache (ids 1..``batch``; id 0 holds the prefix, which a new line gets with
``llama_memory_seq_cp``, shared, not recomputed) with its own grammar sampler, feeling and onset.
One thread (the batch loop) owns the llama.cpp context: each step it puts the next tokens of every
active line (a joining line's prompt, or one token each) into one ``llama_decode`` and reads each
line's logits with ``llama_get_logits_ith``. On a CPU one forward pass over eight sequences costs
little more than over one (the weights are read once per step), so avatars sharing a model no
longer take turns. A line joins at the next step; a cancelled line, or one whose decoding fails,
leaves the batch alone (its sequence removed), and the others go on. Each line is a generator
(:meth:`LlamaBackend._decode`) that yields the tokens to evaluate and receives their logits: the
same decision code as one line alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.generate import beats
from runtime.generate import prompt as prompts
from runtime.generate.models import cache_root
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
        root = cache_root()
        if root is None:
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
        return cls(root / f"prefix-{h.hexdigest()[:24]}.bin")

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

    def __init__(self, llama_cpp, vocab, text: str, n_vocab: int, counts: dict[str, int] | None = None) -> None:
        self.lib = llama_cpp
        self.counts = counts if counts is not None else {"checks": 0, "full_checks": 0}
        self.smpl = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
        if not self.smpl:
            raise GenerationError("llama.cpp rejected the keyframe grammar")
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_arr = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        self._all = (llama_cpp.llama_token_data * n_vocab)()
        self._all_np = np.ctypeslib.as_array(self._all)
        self._all_arr = llama_cpp.llama_token_data_array(data=self._all, size=n_vocab, selected=-1, sorted=False)

    def allows(self, token: int) -> bool:
        self.counts["checks"] += 1
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._one_arr.size, self._one_arr.selected, self._one_arr.sorted = 1, -1, False
        self.lib.llama_sampler_apply(self.smpl, ctypes.byref(self._one_arr))
        return math.isfinite(self._one[0].logit)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` with every token the grammar rejects set to -inf (a new array)."""
        self.counts["full_checks"] += 1
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


@contextlib.contextmanager
def sequences_in_one_cache(llama_cpp, n_seq_max: int):
    """While a context is made, ask llama.cpp for ``n_seq_max`` sequences in one unified KV cache
    (``Llama()`` has no argument for either): the lines of a batch share the prefix's cells."""
    lib = getattr(llama_cpp, "llama_cpp", None)
    if n_seq_max <= 1 or lib is None or "n_seq_max" not in dict(lib.llama_context_params._fields_):
        yield
        return
    with _PATCH_LOCK:
        default = lib.llama_context_default_params

        def params():
            p = default()
            p.n_seq_max = n_seq_max
            if "kv_unified" in dict(lib.llama_context_params._fields_):
                p.kv_unified = True
            return p

        lib.llama_context_default_params = params
        try:
            yield
        finally:
            lib.llama_context_default_params = default


_END = object()  # a line's last message from the batch loop
_ORDER = itertools.count()


class _Seq:
    """One line's sequence in the KV cache, with its own grammar sampler."""

    __slots__ = ("id", "n_past", "grammar")

    def __init__(self, seq_id: int, grammar: _Grammar) -> None:
        self.id, self.n_past, self.grammar = seq_id, 0, grammar


class _Job:
    """One line in the batch: its program (a generator: tokens out, logits in) and its messages."""

    def __init__(self, program: Callable[[_Seq, _Job], Generator[list[int], np.ndarray, None]],
                 cancel: threading.Event | None, sink: Callable[[object], None] | None = None) -> None:
        self.make = program
        self.cancel = cancel
        self.out: queue.SimpleQueue = queue.SimpleQueue()  # (piece, tokens), then _END or an exception
        self.put = sink or self.out.put  # called on the batch loop's thread
        self.abandoned = False  # the consumer stopped reading
        self.seq: _Seq | None = None
        self.program: Generator[list[int], np.ndarray, None] | None = None
        self.pending: list[int] = []
        self.stats: dict[str, float] = {}
        self.trace: list | None = None
        self.started = False  # it has emitted a piece
        self.order = next(_ORDER)
        self.stepped = time.monotonic()  # when a step last took its tokens
        self.admitted: float | None = None  # when it got its sequence

    def emit(self, piece: str, tokens: int) -> None:
        self.started = True
        if self.trace is not None:
            self.trace.append((piece, self.seq.n_past if self.seq else -1))
        self.put((piece, tokens))

    @property
    def stopped(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())


@dataclass
class _Early:
    """A line's first feeling, decided before the model read the line (LlamaBackend._early)."""

    feeling: str
    t0: float  # when the line came in (before it was cut into beats)
    onset: str | None = None  # its onset line, handed over at once (keyframes.onset)
    tokens: int = 0  # the onset's tokens
    sent_s: float | None = None  # seconds from t0 to the onset leaving


class LlamaBackend:
    """One loaded model; ``stream`` may be called from many threads at once: up to ``batch`` lines
    are generated together (one ``llama_decode`` per step), more wait for a free sequence."""

    concurrent = True
    PROMPT_TOKENS_PER_STEP = 32  # prompt tokens a step takes; the first line's prompt goes whole (see _step)
    HOLD_S = 0.25  # longest a playing line sits out while others wait for their first keyframe
    GATHER_S = 0.05  # a line whose onset already left waits this long before its prompt (see _step)

    def __init__(self, model_path: str | Path, grammar: str, *, n_threads: int = 0,
                 n_ctx: int = 2048, max_tokens: int = 96, lora_path: str | None = None,
                 n_gpu_layers: int = 0, system: str = prompts.SYSTEM,
                 examples: list[tuple[str, str]] | None = None, language: Language | None = None,
                 calibrate: float = 1.0, split_clauses: bool = True, clause_keyframes: int = 3,
                 max_keyframes: int = 8, emotion_prior: float = 3.0, consistent: bool = True,
                 cue_prior: float = 2.0, level_floor: int = 4, onset: bool = True,
                 feeling: FeelingModel | None = None, feeling_weight: float = 2.5,
                 beat_rules: beats.Rules = beats.DEFAULT, decide_early: float = 0.0, batch: int = 8,
                 reading: float = 1.0) -> None:
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - install problem, reported plainly
            raise GenerationError(f"llama-cpp-python is not installed: {e}") from None
        t0 = time.perf_counter()
        threads = n_threads or default_threads()
        self.lib = llama_cpp
        self.batch = max(1, batch)
        # every line's own tokens (~40 prompt, up to max_tokens generated) beside the shared prefix
        n_ctx = max(n_ctx, 1024 + self.batch * (max_tokens + 64)) if self.batch > 1 else n_ctx
        with weights_in_plain_cpu_buffers(llama_cpp, cpu_has_amx()), \
                sequences_in_one_cache(llama_cpp, self.batch + 1):
            self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=threads,
                             n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
                             lora_path=lora_path, verbose=False, seed=0)
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.grammar_text = grammar
        self.grammar_counts = {"checks": 0, "full_checks": 0}
        self._grammars: list[_Grammar] = [self._new_grammar()]  # free samplers, one per line in use
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
        self.beat_rules = beat_rules
        self.reading = reading
        self.decide_early = decide_early
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
        self._ctx = self.llm._ctx.ctx
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._n_batch = self.llm.n_batch
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._free = list(range(self.batch, 0, -1))  # sequence ids for lines; 0 is the prefix
        self._waiting: deque[_Job] = deque()
        self._active: list[_Job] = []
        self._cv = threading.Condition()
        self._closed = False
        self.trace: list | None = None  # tests: (piece, the line's KV position) as each is emitted
        self.steps = 0  # llama_decode calls of the batch loop
        self.peak_active = 0  # most lines in one step so far
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
        self._loop_thread = threading.Thread(target=self._loop, name="llama-batch", daemon=True)
        self._loop_thread.start()
        # first token of each feeling word -> its emotion (a token two emotions share decides nothing)
        self._feel_first: dict[str, int] = {}
        owners: dict[int, set[str]] = {}
        for name, words in prompts.FEELINGS.items():
            for w in words:
                t = self.llm.tokenize(f" {w}".encode(), add_bos=False, special=False)[0]
                self._feel_first[w] = t
                owners.setdefault(t, set()).add(name)
        self._feel_tokens = {t: next(iter(o)) for t, o in owners.items() if len(o) == 1}
        self._feel_names = sorted(set(self._feel_tokens.values()))
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

    def _rewind(self, seq: _Seq) -> None:
        """The line's sequence back to the state right after the prefix."""
        if self.lib.llama_memory_seq_rm(self._mem, seq.id, self.prefix_tokens, -1):
            self.rewinds["cut"] += 1
        else:  # a cache that cannot be cut (recurrent): the whole sequence again from the prefix's
            self.rewinds["restore"] += 1
            self.lib.llama_memory_seq_rm(self._mem, seq.id, -1, -1)
            self.lib.llama_memory_seq_cp(self._mem, 0, seq.id, -1, -1)
        seq.n_past = self.prefix_tokens

    def _line_ids(self, req: LineRequest) -> list[int]:
        """The line's part of the prompt after the prefix (which holds the turn's opening)."""
        part = prompts.line_part(req, self.template)
        return self.llm.tokenize(part[len(self._open):].encode("utf-8"), add_bos=False, special=True)

    def _onset_ids(self, grammar: _Grammar, emotion: str,
                   intensity: float | None = None) -> tuple[str, list[int]] | None:
        """The onset line for ``emotion`` and its tokens, fed through the grammar; None (grammar
        reset) if the grammar refuses it, and the model writes the first line itself."""
        text = prompts.onset_line(emotion, intensity)
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=False)
        for t in ids:
            if not grammar.allows(t):
                grammar.reset()
                return None
            grammar.accept(t)
        return text, ids

    def _new_grammar(self) -> _Grammar:
        return _Grammar(self.lib, self.vocab, self.grammar_text, self.n_vocab, self.grammar_counts)

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
    def _expression_token(self, grammar: _Grammar, greedy: int, logits: np.ndarray, keep: str) -> int | None:
        """Where a line's expression word may start: the greedy token when it is another time digit
        or an action (blink, look ...), else the likeliest allowed word start of the clause's
        emotion ``keep``. Checked token by token; None lets the caller fall back to the full mask."""
        presets = self._presets_of(greedy)
        if self.piece(greedy).strip().isdigit() or (presets and not presets & set(EMOTIONS)):
            if grammar.allows(greedy):
                return greedy
        for t in sorted(self._starts.get(keep, ()), key=lambda t: -logits[t]):
            if grammar.allows(t):
                return t
        return None

    def _level_token(self, grammar: _Grammar, greedy: int, logits: np.ndarray, line: str,
                     intensity: float | None) -> int | None:
        """An emotion's level is at least ``level_floor`` (a level-2 sadness reads as nothing) and,
        when the line's intensity is known, within its range (:func:`prompt.level_range`). Neutral
        and actions keep any level."""
        m = _LEVEL_POS.match(line)
        if m is None or self.language.preset(m.group(1)) not in EMOTIONS[:-1]:
            return None
        lo, hi = prompts.level_range(intensity, self.level_floor)
        if lo <= int(self.piece(greedy).strip()) <= hi and grammar.allows(greedy):
            return greedy
        for t in sorted(self._levels, key=lambda t: -logits[t]):
            if lo <= int(self.piece(t).strip()) <= hi and grammar.allows(t):
                return t
        return None

    def _hint(self, req: LineRequest) -> str | None:
        w = req.emotion.strip().lower()
        if not w:
            return None
        name = self.language.preset(w.split()[0])
        return name if name in self.language.preset_vectors else None

    # -- decoding ---------------------------------------------------------------------------------
    def _feeling_mass(self, logits: np.ndarray) -> dict[str, float]:
        """Probability per emotion of the word after "They feel" (first tokens of FEELINGS words)."""
        lg = logits.astype(np.float64)
        ids = np.fromiter(self._feel_tokens, dtype=np.int64)
        p = np.exp(lg[ids] - lg[ids].max())
        p /= p.sum()
        mass: dict[str, float] = {}
        for t, pt in zip(ids.tolist(), p.tolist()):
            name = self._feel_tokens[t]
            mass[name] = mass.get(name, 0.0) + pt
        return mass

    def _told(self, req: LineRequest, calibrated: bool) -> dict[str, float]:
        """Each emotion's score from what the request tells without the keyframe model: priors for
        its ``emotion`` hint, for emotion words the text (or, half as much, the context) uses itself,
        and the feeling model's reading of the words."""
        hint = self._hint(req)
        cues = self.language.cues(req.text) if calibrated else set()
        context_cues = self.language.cues(req.context) if calibrated else set()
        score = {}
        for name in self._feel_names:
            s = self.emotion_prior if name == hint else 0.0
            s += self.cue_prior * ((name in cues) + 0.5 * (name in context_cues))
            if calibrated and req.prior:
                s += self.feeling_weight * req.prior.get(name, math.log(1e-4))
            score[name] = s
        return score

    def _sure(self, told: dict[str, float]) -> str | None:
        """The emotion ``told`` favours by at least ``decide_early`` over every other, else None."""
        if self.decide_early <= 0:
            return None
        first, second = sorted(told.values(), reverse=True)[:2]
        return max(told, key=told.__getitem__) if first - second >= self.decide_early else None

    def _feel(self, req: LineRequest, calibrated: bool, logits: np.ndarray,
              told: dict[str, float]) -> tuple[str, str]:
        """Decide the emotion where the answer says "They feel ...": the model's probabilities per
        emotion, divided by its content-free preference (calibration), plus what the request tells."""
        mass = self._feeling_mass(logits)
        # In what a character says the feeling model reads better than this small model (which
        # takes sarcasm at its word); a stage direction names its feeling, which the model reads well
        weight = self.reading if req.spoken else 1.0
        score = {}
        for name, m in mass.items():
            s = math.log(max(m, 1e-12))
            if calibrated and self.cf_log:
                s -= self.calibrate * self.cf_log.get(name, 0.0)
            score[name] = weight * s + told[name]
        best = max(score, key=score.__getitem__)
        word = max(prompts.FEELINGS[best], key=lambda w: logits[self._feel_first[w]])
        return best, word

    def _decode(self, seq: _Seq, req: LineRequest, keyframes: int, budget: int,
                emit: Callable[[str, int], None], *, calibrated: bool = True, decided: str | None = None,
                sent: str | None = None,
                cancel: threading.Event | None = None) -> Generator[list[int], np.ndarray, None]:
        """Generate one clause: the feeling word, then keyframe lines (emitted as (piece, tokens)).
        Yields the tokens to evaluate next; the batch loop sends back the logits after the last.
        ``decided``: the clause's feeling, decided before the model reads it (:meth:`_early`);
        ``sent``: its onset line, already handed over."""
        self._rewind(seq)
        grammar = seq.grammar
        grammar.reset()
        line_ids = self._line_ids(req)
        if decided is not None:
            # the line's prompt is evaluated once, together with the feeling line and the onset
            chosen, word = decided, prompts.FEELINGS[decided][0]
        else:
            told = self._told(req, calibrated)
            logits = yield line_ids
            line_ids = []
            chosen, word = self._feel(req, calibrated, logits, told)
        # the feeling line is ours, not the model's: it goes into the context, never to the parser
        feel_ids = line_ids + self.llm.tokenize(f" {word}.\n".encode(), add_bos=False, special=False)
        lines = 0
        onset = self._onset_ids(grammar, chosen, req.intensity) if self.onset else None
        if sent is not None and (onset is None or onset[0] != sent):
            # (cannot happen with the shipped grammar) the onset left, so the model must see it
            log.warning("onset %r already sent but not accepted by the grammar", sent)
            onset = sent, self.llm.tokenize(sent.encode(), add_bos=False, special=False)
        if onset is not None:
            # The first keyframe leaves now, before the model evaluates it with the feeling line.
            if sent is None:
                emit(onset[0], len(onset[1]))
            lines = 1
            if lines >= keyframes or (cancel is not None and cancel.is_set()):
                return
            feel_ids = feel_ids + onset[1]
        logits = yield feel_ids
        line = ""
        for _ in range(budget):
            if cancel is not None and cancel.is_set():
                return
            tok = int(np.argmax(logits))
            pick = None
            if self.consistent and _NAME_POS.match(line):
                pick = self._expression_token(grammar, tok, logits, chosen)
            elif self.level_floor and self.piece(tok).strip().isdigit():
                pick = self._level_token(grammar, tok, logits, line, req.intensity)
            if pick is not None:
                tok = pick
            elif not grammar.allows(tok):
                masked = grammar.mask(logits)
                if not np.isfinite(masked).any():
                    return
                tok = int(np.argmax(masked))
            if self.lib.llama_vocab_is_eog(self.vocab, tok):
                return
            grammar.accept(tok)
            text = self.piece(tok)
            line += text
            if "\n" in text:
                lines += 1
                line = line.rsplit("\n", 1)[1]
                if lines >= keyframes:  # this clause has its share; the line ended cleanly
                    emit(text, 1)
                    return
            emit(text, 1)
            logits = yield [tok]

    def _line(self, seq: _Seq, job: _Job, subs: list[LineRequest], each: int,
              early: _Early | None = None) -> Generator[list[int], np.ndarray, None]:
        """One line, clause by clause, on its own sequence: whole keyframe lines out, times continuing.
        ``early``: the first clause's feeling decided, and perhaps its onset sent, before it got here."""
        cancel = job.cancel
        t0 = early.t0 if early else time.perf_counter()
        n = early.tokens if early else 0
        first = early.sent_s if early else None
        budget = self.max_tokens
        line, line_tokens = "", 0

        def piece(text: str, tokens: int) -> None:
            nonlocal n, first, line, line_tokens
            n += tokens
            line += text
            line_tokens += tokens
            if "\n" in line:
                if first is None:
                    first = time.perf_counter() - t0
                done, line = line.rsplit("\n", 1)
                job.emit(done + "\n", line_tokens)
                line_tokens = 0

        for k, sub in enumerate(subs):
            # Whole lines only: a clause cut off mid-line (budget, cancel) drops its partial line
            # instead of gluing it to the next clause's first line.
            line, line_tokens = "", 0
            first_clause = k == 0 and early is not None
            yield from self._decode(seq, sub, each, budget, piece, calibrated=self.calibrate > 0,
                                    decided=early.feeling if first_clause else None,
                                    sent=early.onset if first_clause else None, cancel=cancel)
            budget = self.max_tokens - n
            if budget <= 0 or (cancel is not None and cancel.is_set()):
                break
        job.stats = {"tokens": n, "seconds": time.perf_counter() - t0,
                     "first_keyframe_s": first if first is not None else float("nan"),
                     "clauses": len(subs), "decided_early": early is not None}

    def _early(self, req: LineRequest, job: _Job, t0: float) -> _Early | None:
        """A line's first feeling when what the request tells makes it plain, with its onset handed
        over at once: the face starts before the line waits for a place in the batch (and for the
        steps of the lines already in it) and before the model reads it. Later clauses are read by
        the model: they are generated while the face already moves. ``t0``: when the line came in."""
        if self.calibrate <= 0:
            return None
        try:
            told = self._told(req, True)
            # in speech with the model's reading off (feeling.reading = 0) it would not change the
            # decision: what the request tells decides, however close
            feeling = (max(told, key=told.__getitem__)
                       if req.spoken and req.prior and self.reading <= 0 < self.decide_early
                       else self._sure(told))
        except Exception as e:  # only the head start is lost: the batch loop decides (or fails) the line
            log.warning("early feeling decision failed: %s: %s", type(e).__name__, e)
            return None
        if feeling is None:
            return None
        early = _Early(feeling, t0)
        if self.onset and not job.stopped:
            early.onset = prompts.onset_line(feeling, req.intensity)
            early.tokens = len(self.llm.tokenize(early.onset.encode(), add_bos=False, special=False))
            job.emit(early.onset, early.tokens)
            early.sent_s = time.perf_counter() - t0
        return early

    def _content_free(self) -> dict[str, float]:
        """log p(emotion) after "They feel", averaged over content-free inputs."""
        total: dict[str, float] = {}

        def program(seq: _Seq, job: _Job):
            for text in CONTENT_FREE:
                self._rewind(seq)
                logits = yield self._line_ids(LineRequest(text))
                for k, v in self._feeling_mass(logits).items():
                    total[k] = total.get(k, 0.0) + v / len(CONTENT_FREE)

        for _ in self._run(_Job(program, None)):
            pass
        return {k: math.log(max(v, 1e-6)) for k, v in total.items()}

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        """Yield (text, tokens) pieces as the model writes them; keyframe times continue across clauses."""
        return self._line_job(req, cancel, None)

    def _line_job(self, req: LineRequest, cancel: threading.Event | None,
                  sink: Callable[[object], None] | None) -> Iterator[tuple[str, int]]:
        t0 = time.perf_counter()
        parts = beats.plan(req, self.feeling, split=self.split_clauses, rules=self.beat_rules)
        # one beat: a few keyframes (onset, apex, settle); several: an even share each, so each beat
        # gets about the same time and the switch lands where the text puts it
        each = min(self.max_keyframes, self.clause_keyframes + 1) if len(parts) == 1 else max(
            2, min(self.clause_keyframes, self.max_keyframes // len(parts)))
        early: list[_Early | None] = [None]
        job = _Job(lambda seq, job: self._line(seq, job, parts, each, early[0]), cancel, sink)
        job.trace = self.trace
        early[0] = self._early(parts[0], job, t0)
        if sink is not None:
            self._submit(job)
            return
        for piece in self._run(job):
            if cancel is not None and cancel.is_set():
                continue  # queued before the cancel reached the batch loop: dropped, as if never made
            yield piece
        self.stats = job.stats

    def start(self, req: LineRequest, cancel: threading.Event | None,
              sink: Callable[[object], None]) -> None:
        """Start a line without a thread to wait on it: ``sink`` gets each ``(piece, tokens)``, then
        ``None`` at the end or the exception that ended it, on the batch loop's own thread (the model
        process sends them from there: no thread hop per piece)."""
        def put(item: object) -> None:
            sink(None if item is _END else item)

        for _ in self._line_job(req, cancel, put):
            pass

    def _submit(self, job: _Job) -> None:
        job.trace = self.trace
        with self._cv:
            if self._closed:
                raise GenerationError("the model backend is closed")
            self._waiting.append(job)
            self._cv.notify()

    # -- the batch loop ---------------------------------------------------------------------------
    def _run(self, job: _Job) -> Iterator[tuple[str, int]]:
        """Hand ``job`` to the batch loop and yield its pieces until it ends (raising its error)."""
        self._submit(job)
        try:
            while True:
                item = job.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.abandoned = True  # a consumer that stopped early frees its sequence at the next step

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._active and not self._closed:
                    self._cv.wait()
                if self._closed:
                    for job in [*self._active, *self._waiting]:
                        self._end(job, GenerationError("the model backend was closed"))
                    self._waiting.clear()
                    return
                joining = [self._waiting.popleft() for _ in range(min(len(self._waiting), len(self._free)))]
            try:
                for job in joining:
                    self._admit(job)
                self.peak_active = max(self.peak_active, len(self._active))
                idle = self._step()
                if idle:
                    with self._cv:
                        if not self._waiting and not self._closed:
                            self._cv.wait(idle)
            except Exception as e:  # a bug in the loop itself: end every line, keep serving
                log.exception("batch loop step failed")
                for job in [*self._active, *(j for j in joining if j not in self._active and j.seq is None)]:
                    self._end(job, GenerationError(f"generation failed: {e}"))

    def _admit(self, job: _Job) -> None:
        seq_id = self._free.pop()
        grammar = self._grammars.pop() if self._grammars else self._new_grammar()
        job.seq = _Seq(seq_id, grammar)
        self.lib.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        self.lib.llama_memory_seq_cp(self._mem, 0, seq_id, -1, -1)  # the prefix, shared
        job.seq.n_past = self.prefix_tokens
        job.admitted = time.monotonic()
        self._active.append(job)
        try:
            job.program = job.make(job.seq, job)
        except Exception as e:
            self._end(job, e)
            return
        self._advance(job, None)

    def _advance(self, job: _Job, logits: np.ndarray | None) -> None:
        """Run the line's program to its next evaluation; end the line if it is done or fails."""
        try:
            nxt = next(job.program) if logits is None else job.program.send(logits)
        except StopIteration:
            self._end(job)
            return
        except Exception as e:  # this line's own failure: only it ends
            log.error("line failed in the batch: %s: %s", type(e).__name__, e)
            self._end(job, e if isinstance(e, GenerationError) else GenerationError(f"{type(e).__name__}: {e}"))
            return
        if not nxt:
            self._end(job, GenerationError("a line asked to evaluate nothing"))
            return
        job.pending = list(nxt)

    def _end(self, job: _Job, error: BaseException | None = None) -> None:
        if job.program is not None:
            program, job.program = job.program, None
            with contextlib.suppress(Exception):
                program.close()
        if job in self._active:
            self._active.remove(job)
        if job.seq is not None:
            self.lib.llama_memory_seq_rm(self._mem, job.seq.id, -1, -1)
            self._free.append(job.seq.id)
            self._grammars.append(job.seq.grammar)
            job.seq = None
        try:
            job.put(error if error is not None else _END)
        except Exception as e:  # a sink that cannot take it (a closed pipe): the line is over anyway
            log.debug("line's end not delivered: %s", e)

    def _step(self) -> float:
        """One ``llama_decode`` over the next tokens of every active line. Returns how long to wait
        for more lines when every active one sits out (0: a step ran, or nothing is active)."""
        for job in list(self._active):
            if job.stopped:
                self._end(job)
        if not self._active:
            return 0.0
        plan: list[tuple[_Job, int, int]] = []  # (job, tokens taken, batch row of its logits or -1)
        # Every generating line advances one token. Prompts (several tokens) cost in proportion, so
        # a step takes about one line's prompt: lines that have no keyframe yet first, oldest first.
        # Eight lines said at once then get their first keyframes one after another, not all at
        # the end of one long step; a line alone gets its whole prompt at once.
        now = time.monotonic()
        active = self._active
        if any(not j.started and len(j.pending) > 1 for j in active):
            # While lines wait for their first keyframe, the ones already playing (their onset
            # buffers ~0.5 s of face) sit out, for at most HOLD_S: every token of a step costs.
            active = [j for j in active if not j.started or now - j.stepped > self.HOLD_S]
        # A line whose onset left before it got here (decided early) buffers ~0.5 s of face, so its
        # prompt waits GATHER_S: lines said at the same moment arrive over a few ms (each is read
        # by the feeling model first), and one that still needs the model's reading for its first
        # keyframe must not queue behind a step of the others' prompts (~170 ms each).
        gathering = [j for j in active if j.started and j.stepped <= j.admitted
                     and now - j.admitted < self.GATHER_S]
        if gathering:
            active = [j for j in active if j not in gathering]
            if not active:
                return self.GATHER_S - max(now - j.admitted for j in gathering)
        singles = [j for j in active if len(j.pending) == 1]
        multi = sorted((j for j in active if len(j.pending) > 1), key=lambda j: (j.started, j.order))
        if multi and not multi[0].started:
            # A line waiting for its first keyframe takes a step's prompt alone: a step costs about
            # linearly in its tokens on a CPU, so the others' prompts (even part of one) would only
            # delay it, and the next such line gets the next step.
            multi = multi[:1]
        room = self._n_batch - len(singles)
        for job in singles:
            plan.append((job, 1, -1))
        budget = self.PROMPT_TOKENS_PER_STEP
        for k, job in enumerate(multi):
            take = min(len(job.pending), room, len(job.pending) if k == 0 else budget)
            if take <= 0:
                break
            plan.append((job, take, -1))
            room -= take
            budget -= take
        while plan:
            b = self._batch
            i = 0
            for k, (job, take, _) in enumerate(plan):
                pos = job.seq.n_past
                for j in range(take):
                    b.token[i] = job.pending[j]
                    b.pos[i] = pos + j
                    b.n_seq_id[i] = 1
                    b.seq_id[i][0] = job.seq.id
                    b.logits[i] = 0
                    i += 1
                if take == len(job.pending):  # its last pending token: the line decides next
                    b.logits[i - 1] = 1
                    plan[k] = (job, take, i - 1)
            b.n_tokens = i
            ret = self.lib.llama_decode(self._ctx, b)
            self.steps += 1
            if ret == 0:
                break
            # Only the line that cannot fit fails: on "no KV slot" (1) llama.cpp restored the cache,
            # so the one using the most is dropped and the step retried without it.
            if ret == 1 and len(plan) > 1:
                worst = max(plan, key=lambda p: (p[0].seq.n_past + p[1], p[1]))
                plan = [(j, t, -1) for j, t, _ in plan if j is not worst[0]]
                self._end(worst[0], GenerationError("the model's context is full; line ended"))
                continue
            for job, _, _ in plan:
                self._end(job, GenerationError(f"llama_decode failed ({ret})"))
            return 0.0
        for job, take, row in plan:
            job.seq.n_past += take
            job.stepped = now
            del job.pending[:take]
            if row >= 0:
                ptr = self.lib.llama_get_logits_ith(self._ctx, row)
                logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)
                self._advance(job, logits)
        return 0.0

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._loop_thread.is_alive() and threading.current_thread() is not self._loop_thread:
            self._loop_thread.join(5)
        if self._loop_thread.is_alive():  # still inside a step: its buffers must outlive it
            log.warning("model batch loop did not stop within 5 s; leaving its buffers")
            return
        for g in self._grammars:
            g.close()
        self._grammars = []
        if self._batch is not None:
            self.lib.llama_batch_free(self._batch)
            self._batch = None
