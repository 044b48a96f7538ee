"""The feeling a listener hears in a spoken line: a small text classifier run by onnxruntime.

Three fine-tuned MiniLMs in one ONNX graph (tools/train_feeling.py, tools/ensemble_feeling.py; card:
exported_models/feeling.json: the geometric mean of their readings) and, beside it, a fine-tuned
MPNet of another vocabulary (feeling_mpnet.onnx, 4-bit; mixed in by the card's ``with``,
tools/mix_feeling.py) read the line and, when given, what was just said to the character
(``heard``), and give a probability for each of the eight emotions the face knows. The keyframe
model then starts from that reading: the backend adds ``weight * log p`` to its own calibrated
scores for the feeling word (runtime/generate/llama.py), so the words' meaning decides what the
language model alone heard mostly from emotion words.

Intensity comes from the line too: how sure the reading is, and how the line is said (exclamation
marks, "?!", words in capitals, short outbursts) against hedges ("a bit", "kind of"), so "MY
sword?!" reaches further than "I'm a bit cross", and a calm statement stays near rest.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.text.wordpiece import WordPiece

log = logging.getLogger(__name__)

# the backend's emotion names, in the model's output order
LABELS = ("joy", "sadness", "surprise", "fear", "anger", "disgust", "contempt", "neutral")
MAX_TOKENS = 64

_CAPS = re.compile(r"\b[A-Z]{2,}\b")
_HEDGE = re.compile(r"(?i)\b(?:a (?:bit|little)|kind of|kinda|sort of|somewhat|slightly|a tad|i guess|maybe|"
                    r"not (?:too|very|that)|mildly|fairly)\b")
_BOOST = re.compile(r"(?i)\b(?:so|very|really|totally|absolutely|completely|never|ever|how dare|"
                    r"what the|oh my god|get out)\b")


@dataclass
class Feeling:
    label: str
    probs: dict[str, float]
    intensity: float  # 0 (barely) .. 1 (as strong as a line gets)

    def log_prior(self, floor: float = 1e-4) -> dict[str, float]:
        return {k: math.log(max(v, floor)) for k, v in self.probs.items()}


def intensity(text: str, probs: dict[str, float]) -> float:
    """How far the face should go, 0..1: the reading's confidence and how the line is delivered."""
    top = max(probs, key=probs.__getitem__)
    if top == "neutral":
        return 0.0
    sure = 1.0 - probs.get("neutral", 0.0)
    marks = text.count("!") + 1.5 * text.count("?!") + 0.5 * text.count("!!")
    caps = len([w for w in _CAPS.findall(text) if w not in ("I", "OK", "TV")])
    words = max(1, len(re.findall(r"[A-Za-z']+", text)))
    x = 0.35 + 0.35 * sure + 0.12 * min(marks, 3) + 0.12 * min(caps, 2) + 0.06 * len(_BOOST.findall(text))
    if words <= 3 and marks:
        x += 0.1  # an outburst: "Get out!", "MY sword?!"
    x -= 0.25 * len(_HEDGE.findall(text))
    return float(min(1.0, max(0.1, x)))


_QUOTED = re.compile(r"[\"\u201c][^\"\u201d]*[\"\u201d]|(?<![A-Za-z])'[^']*'(?![A-Za-z])")
_SPEAKER = frozenset("i i'm i'll i've i'd me my mine myself we we're we'll we've us our ours you you're you'll "
                     "you've you'd your yours yourself ya y'all don't let's please hey oh ah ahh ugh".split())
_THIRD = frozenset("he she they it his her their its".split())
# what only someone speaking opens with, or says: a discourse marker first ("Sure, that works.",
# "Yeah, pancakes again."), or a spoken contraction ("His toy's still under the porch.")
_MARKER = frozenset("yeah yes yep yup nope no okay ok sure well so hm hmm um uh huh wow look listen right fine "
                    "alright man dude god gosh great thanks sorry please anyway actually honestly seriously".split())
_SPOKEN = re.compile(r"(?i)\b\w+(?:n't|'re|'ll|'ve|'d|'m)\b|\b\w+'s\s+(?:not|been|gonna|got|still|just|all|"
                     r"never|always|a|an|the|so|too|fine|right|over|here|there|back|gone)\b|"
                     r"\b(?:gonna|wanna|gotta|kinda|sorta|musta|y'know|ain't)\b")
_DIRECTION = re.compile(r"^\s*(?:\([^)]*\)|[A-Z][A-Z]+\s*\([^)]*\)\s*:)")  # "(laughing) ...", "MARIA (sighs):"


def is_narration(text: str) -> bool:
    """A stage direction ("He stares at the floor, heartbroken") rather than what a character says.
    The feeling model learned from speech; narration names its feeling in its own words, which the
    keyframe model and the emotion-word cues read well, so the feeling model counts less there."""
    if _DIRECTION.match(text):
        return True
    outside = _QUOTED.sub(" ", text)
    if "?" in outside or "!" in outside:  # asked or exclaimed: someone is speaking
        return False
    words = re.findall(r"[a-z']+", outside.lower())
    if not words or any(w in _SPEAKER for w in words) or words[0] in _MARKER or _SPOKEN.search(outside):
        return False
    first = re.findall(r"[A-Za-z']+", outside)
    if words[0] in _THIRD:
        return True
    # "Maria waves ...", "The old man sighs ...": a name or noun phrase, then a verb in -s
    return len(first) >= 2 and first[0][0].isupper() and any(
        w.endswith("s") and not w.endswith("ss") and "'" not in w for w in first[1:3])


class FeelingModel:
    """The exported classifier (one model, or several merged by tools/ensemble_feeling.py: the same
    inputs and output). ``classify`` is thread-safe; ~8 ms a line on one core for the graph, ~25 ms
    more where the MPNet under ``with`` reads too (MELD: 23 ms a line on average)."""

    def __init__(self, model_path: str | Path, vocab_path: str | Path, threads: int = 1,
                 providers: list[str] | None = None, heard_words: int = 4) -> None:
        import onnxruntime as ort

        # heard is read only for replies this short ("Okay.", "Really?"): a longer line carries its
        # own feeling, and a feeling heard from the other speaker must not leak into it (measured
        # in docs/BENCHMARKS.md); 0 = never
        self.heard_words = heard_words
        # the card's log-prior shift per emotion: training balanced the classes, dialogue is mostly
        # neutral (chosen on GoEmotions' dev split and our own held-out lines)
        card_path = Path(model_path).with_suffix(".json")
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        bias = card.get("bias", {})
        self.bias = np.array([float(bias.get(k, 0.0)) for k in LABELS], dtype=np.float64)
        # readers of another vocabulary (an MPNet beside MiniLMs) cannot share one graph: the card's
        # "with" names them, each read on its own and mixed in by the weighted mean of log-probabilities
        self.others: list[tuple[FeelingModel, float]] = []
        # and only where the graph is unsure (its top reading, shifted, below this): where it is sure
        # the mix seldom changes the label, and the MPNet costs ~25 ms a read (8 lines at once wait)
        self.mix_below = 1.01
        for other in card.get("with", []):
            try:
                weight = float(other["weight"])
                self.mix_below = float(card.get("mix_below", 1.01))
                sub = FeelingModel(card_path.parent / other["model"], card_path.parent / other["vocab"], threads,
                                   providers, heard_words)
            except Exception as e:  # noqa: BLE001  (a reader short is a weaker reading, not a dead line)
                log.error("feeling model %s: its card's reader %s cannot load (%s): read without it",
                          Path(model_path).name, other.get("model") if isinstance(other, dict) else other, e)
                continue
            sub.bias[:] = 0.0
            self.others.append((sub, weight))

        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(model_path), opts, providers=providers or ["CPUExecutionProvider"])
        self.tok = WordPiece(vocab_path)
        # an MPNet-based model takes no token types: feed only what the graph asks for
        self._inputs = {i.name for i in self.sess.get_inputs()}
        self._lock = threading.Lock()
        self.load_seconds = time.perf_counter() - t0
        log.info("feeling model %s on %s (%.0f ms)", Path(model_path).name, self.sess.get_providers(),
                 1000 * self.load_seconds)

    def _raw(self, text: str, heard: str, wait: bool = True) -> np.ndarray | None:
        """The graph's probabilities; None, without waiting, when ``wait`` is False and another
        line is being read."""
        ids, types = self.tok.encode(text, heard, MAX_TOKENS)
        feed = {"input_ids": ids[None], "attention_mask": np.ones_like(ids)[None], "token_type_ids": types[None]}
        feed = {k: v for k, v in feed.items() if k in self._inputs}
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            return self.sess.run(None, feed)[0][0].astype(np.float64)
        finally:
            self._lock.release()

    def _shifted(self, p: np.ndarray) -> np.ndarray:
        q = p * np.exp(self.bias)
        return q / q.sum()

    def probs(self, text: str, heard: str = "", quick: bool = False) -> dict[str, float]:
        """``quick``: the graph alone, without the readers under ``with`` (a fifth of the cost with
        the shipped MPNet): for the parts of a line, where only a change of feeling is looked for."""
        if len(text.split()) > self.heard_words:
            heard = ""
        p = self._raw(text, heard)
        assert p is not None  # waited for
        if self.others and not quick and self._shifted(p).max() < self.mix_below:
            # a reader busy with another line is not waited for: lines at once (8 NPCs) would queue
            # ~25 ms each behind it, and their first keyframes with them; they read as the graph alone
            got = [(sub._raw(text, heard, wait=False), w) for sub, w in self.others]
            if all(q is not None for q, _ in got):
                logp = (1.0 - sum(w for _, w in got)) * np.log(np.maximum(p, 1e-9))
                for q, w in got:
                    logp += w * np.log(np.maximum(q, 1e-9))
                p = np.exp(logp - logp.max())
                p /= p.sum()
        if self.bias.any():
            p = self._shifted(p)
        return {k: float(v) for k, v in zip(LABELS, p)}

    def classify(self, text: str, heard: str = "", quick: bool = False) -> Feeling:
        p = self.probs(text, heard, quick)
        return Feeling(max(p, key=p.__getitem__), p, intensity(text, p))


_DEFAULT: FeelingModel | None = None
_DEFAULT_LOCK = threading.Lock()
EXPORTED = Path(__file__).resolve().parent.parent.parent / "exported_models"


def default_paths() -> tuple[Path, Path]:
    return EXPORTED / "feeling.onnx", EXPORTED / "feeling_vocab.txt"


def load(model_path: str | Path | None = None, vocab_path: str | Path | None = None) -> FeelingModel | None:
    """The shipped model (loaded once per process) or the one at ``model_path`` (its vocabulary beside
    it unless given); None, with a log line, when the file is missing."""
    global _DEFAULT
    shipped = model_path is None
    m, v = default_paths() if shipped else (Path(model_path), Path(vocab_path) if vocab_path
                                            else Path(model_path).with_name("feeling_vocab.txt"))
    if not m.exists():
        log.error("feeling model %s not found: lines are read by the keyframe model alone", m)
        return None
    if not shipped:
        return FeelingModel(m, v)
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = FeelingModel(m, v)
        return _DEFAULT
