"""The keyframe language: what one line of model output means.

One keyframe per line, built to cost a small model about five tokens::

    3 joy 7
    6 surprise 9 blink 9
    4 neutral 0

* the first field is the time since the previous keyframe (since the line start for the first) in
  tenths of a second: ``3`` = 0.3 s;
* then one to three ``name level`` items: a name is an expression preset (``joy``), an alias of a
  preset (``laugh``), or a raw ARKit channel (``JawOpen``; a symmetric name such as ``MouthSmile``
  means both sides); the level is one digit, 0-9, where 9 is the preset at full strength. Raw
  rotation channels (``HeadYaw``) take a signed level (``-3``).

A keyframe is the *complete* pose: the rest pose plus every item's preset scaled by its level,
clamped to each channel's range. Presets are grounded in FACS action units and live in
config.toml, so a user can tune them to a rig; the grammar is generated from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from runtime import channels

LEVEL_MAX = 9
TIME_UNIT = 0.1  # seconds per time step
MAX_ITEMS = 3

# name -> {channel (any spelling, symmetric allowed): value at level 9}
# FACS grounding (EMFACS prototypes): joy AU6+AU12; sadness AU1+AU4+AU15; surprise AU1+AU2+AU5+AU26;
# fear AU1+AU2+AU4+AU5+AU20+AU26; anger AU4+AU5+AU7+AU23; disgust AU9+AU10+AU15+AU16;
# contempt R12+R14 (one-sided smile and dimple).
DEFAULT_PRESETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "joy": {"CheekSquint": 0.7, "MouthSmile": 0.85, "EyeSquint": 0.25, "MouthDimple": 0.2},
    "sadness": {"BrowInnerUp": 0.8, "BrowDown": 0.45, "MouthFrown": 0.7, "MouthShrugLower": 0.2},
    "surprise": {"BrowInnerUp": 0.8, "BrowOuterUp": 0.85, "EyeWide": 0.8, "JawOpen": 0.55},
    "fear": {"BrowInnerUp": 0.85, "BrowOuterUp": 0.5, "BrowDown": 0.45, "EyeWide": 0.8,
             "MouthStretch": 0.65, "JawOpen": 0.3},
    "anger": {"BrowDown": 0.85, "EyeWide": 0.35, "EyeSquint": 0.55, "MouthPress": 0.65,
              "NoseSneer": 0.2},
    "disgust": {"NoseSneer": 0.75, "MouthUpperUp": 0.6, "MouthFrown": 0.45, "MouthLowerDown": 0.35,
                "BrowDown": 0.2},
    "contempt": {"MouthSmileLeft": 0.6, "MouthDimpleLeft": 0.5, "CheekSquintLeft": 0.15},
    # actions
    "blink": {"EyeBlink": 1.0},
    "wink": {"EyeBlinkLeft": 1.0, "CheekSquintLeft": 0.3, "MouthSmileLeft": 0.2},
    "smirk": {"MouthSmileRight": 0.6, "MouthDimpleRight": 0.4},
    "frown": {"MouthFrown": 0.8, "BrowDown": 0.3},
    "browraise": {"BrowInnerUp": 0.7, "BrowOuterUp": 0.8},
    "squint": {"EyeSquint": 0.8, "CheekSquint": 0.2},
    "pout": {"MouthPucker": 0.8, "MouthFunnel": 0.2},
    "open": {"JawOpen": 0.8, "MouthLowerDown": 0.3},
    "lookleft": {"EyeLookOutLeft": 0.8, "EyeLookInRight": 0.8, "LeftEyeYaw": 0.15, "RightEyeYaw": 0.15},
    "lookright": {"EyeLookInLeft": 0.8, "EyeLookOutRight": 0.8, "LeftEyeYaw": -0.15,
                  "RightEyeYaw": -0.15},
    "lookup": {"EyeLookUp": 0.8, "LeftEyePitch": -0.12, "RightEyePitch": -0.12},
    "lookdown": {"EyeLookDown": 0.8, "LeftEyePitch": 0.12, "RightEyePitch": 0.12},
    "nod": {"HeadPitch": 0.1},
    "tilt": {"HeadRoll": 0.08},
    "turn": {"HeadYaw": 0.12},
}  # fmt: skip

# Words a small model already associates with an emotion, mapped to presets. They are part of the
# grammar: letting the model say "laugh" (often copying the text's own word) instead of forcing
# "joy" was worth a lot of accuracy. A broad everyday emotion lexicon, not fitted to any prompt set.
DEFAULT_ALIASES: dict[str, str] = {
    # joy
    "happy": "joy", "smile": "joy", "laugh": "joy", "grin": "joy", "delight": "joy",
    "smiling": "joy", "laughing": "joy", "laughter": "joy", "grinning": "joy", "delighted": "joy",
    "glad": "joy", "cheerful": "joy", "cheer": "joy", "joyful": "joy", "beam": "joy", "beaming": "joy",
    "giggle": "joy", "chuckle": "joy", "pleased": "joy", "thrilled": "joy", "excited": "joy",
    "elated": "joy", "proud": "joy", "amused": "joy", "relieved": "joy", "grateful": "joy",
    "ecstatic": "joy", "glee": "joy", "love": "joy", "fun": "joy",
    # sadness
    "sad": "sadness", "cry": "sadness", "grief": "sadness", "sorrow": "sadness", "crying": "sadness",
    "tears": "sadness", "weep": "sadness", "sob": "sadness", "sobbing": "sadness", "unhappy": "sadness",
    "gloomy": "sadness", "miserable": "sadness", "heartbroken": "sadness", "lonely": "sadness",
    "depressed": "sadness", "mourn": "sadness", "disappointed": "sadness", "despair": "sadness",
    "regret": "sadness", "hopeless": "sadness", "melancholy": "sadness", "sigh": "sadness",
    "loss": "sadness",
    # surprise
    "shock": "surprise", "amazed": "surprise", "astonished": "surprise", "gasp": "surprise",
    "surprised": "surprise", "shocked": "surprise", "startled": "surprise", "stunned": "surprise",
    "wow": "surprise", "disbelief": "surprise", "speechless": "surprise", "awe": "surprise",
    "astonishment": "surprise", "unexpected": "surprise",
    # fear
    "scared": "fear", "afraid": "fear", "terror": "fear", "worried": "fear", "panic": "fear",
    "terrified": "fear", "frightened": "fear", "nervous": "fear", "anxious": "fear", "worry": "fear",
    "dread": "fear", "horror": "fear", "horrified": "fear", "trembling": "fear", "tremble": "fear",
    "alarmed": "fear", "uneasy": "fear", "fright": "fear", "danger": "fear",
    # anger
    "angry": "anger", "furious": "anger", "rage": "anger", "annoyed": "anger", "mad": "anger",
    "irritated": "anger", "frustrated": "anger", "livid": "anger", "fury": "anger", "outraged": "anger",
    "glare": "anger", "scowl": "anger", "yell": "anger", "shout": "anger", "snarl": "anger",
    "fuming": "anger", "hostile": "anger", "resentful": "anger", "indignant": "anger",
    # disgust
    "disgusted": "disgust", "gross": "disgust", "revulsion": "disgust", "revolted": "disgust",
    "nausea": "disgust", "nauseous": "disgust", "yuck": "disgust", "repulsed": "disgust",
    "gag": "disgust", "stench": "disgust", "rotten": "disgust", "vile": "disgust", "filthy": "disgust",
    # contempt
    "scorn": "contempt", "sneer": "contempt", "disdain": "contempt", "scoff": "contempt",
    "smug": "contempt", "mock": "contempt", "mocking": "contempt", "condescending": "contempt",
    "arrogant": "contempt", "dismissive": "contempt", "sarcastic": "contempt", "superior": "contempt",
    # neutral
    "calm": "neutral", "rest": "neutral", "blank": "neutral", "relaxed": "neutral",
}  # fmt: skip


_WORD = re.compile(r"[a-z]+")
# preset words that are everyday words first ("rest of the day", "open the door"): never cues
NOT_CUES = frozenset({"rest", "open", "turn", "tilt", "nod", "blink", "wink", "squint", "pout", "lookleft",
                      "lookright", "lookup", "lookdown", "browraise", "fun", "love", "loss", "danger",
                      "superior", "mock", "sick", "cheer", "warm", "still", "blank"})


class KeyframeError(ValueError):
    """A keyframe line that cannot be understood (unknown name, bad syntax)."""


@dataclass
class Keyframe:
    t: float  # seconds from the line's start
    values: np.ndarray  # float32[61], the complete pose, canonical order
    items: list[tuple[str, int]] = field(default_factory=list)
    tokens: int = 0  # model tokens that produced this keyframe, when known

    def to_json(self) -> dict:
        return {"t": round(self.t, 3), "values": channels.to_dict(self.values)}


class Language:
    """Names, presets and aliases: turns ``name level`` items into a pose."""

    def __init__(
        self,
        presets: dict[str, dict[str, float]] | None = None,
        aliases: dict[str, str] | None = None,
        allow_raw: bool = True,
    ) -> None:
        presets = DEFAULT_PRESETS if presets is None else presets
        aliases = DEFAULT_ALIASES if aliases is None else aliases
        self.preset_vectors: dict[str, np.ndarray] = {}
        for name, spec in presets.items():
            vec = np.zeros(channels.COUNT, dtype=np.float32)
            for ch, v in spec.items():
                try:
                    vec[list(channels.indices(ch))] = v
                except KeyError as e:
                    raise KeyframeError(f"preset {name!r}: {e.args[0]}") from None
            self.preset_vectors[name.lower()] = vec
        for alias, target in aliases.items():
            if target.lower() not in self.preset_vectors:
                raise KeyframeError(f"alias {alias!r} names unknown preset {target!r}")
        self.aliases = {a.lower(): t.lower() for a, t in aliases.items()}
        self.allow_raw = allow_raw
        # stems of the emotion vocabulary for cues(): drop an inflection-prone tail, keep 4+ letters
        self._stems = [(w if len(w) < 4 else w[: max(4, len(w) - 2)], self.preset(w))
                       for w in self.words if w not in NOT_CUES]
        self.rest = np.zeros(channels.COUNT, dtype=np.float32)

    @property
    def words(self) -> list[str]:
        """Every preset and alias name the grammar offers, presets first."""
        return list(self.preset_vectors) + [a for a in self.aliases if a not in self.preset_vectors]

    def cues(self, text: str) -> set[str]:
        """Presets whose name or alias the text itself uses, in any inflection ("angrily" -> anger,
        "laughing" -> joy): a word of four letters or more matches by its stem, a shorter one whole."""
        found: set[str] = set()
        for token in _WORD.findall(text.lower()):
            for stem, name in self._stems:
                if token == stem or (len(stem) >= 4 and token.startswith(stem)):
                    found.add(name)
        return found

    def preset(self, word: str) -> str:
        """Canonical preset name for a preset or alias word."""
        w = word.lower()
        return self.aliases.get(w, w)

    def item_vector(self, name: str, level: int) -> tuple[np.ndarray, bool]:
        """Contribution of one item, and whether its level had to be clamped."""
        key = self.preset(name)
        vec = self.preset_vectors.get(key)
        if vec is not None:
            clamped = not 0 <= level <= LEVEL_MAX
            lv = min(max(level, 0), LEVEL_MAX)
            return vec * np.float32(lv / LEVEL_MAX), clamped
        if not self.allow_raw:
            raise KeyframeError(f"unknown expression {name!r}")
        try:
            idx = list(channels.indices(name))
        except KeyError:
            raise KeyframeError(f"unknown expression or ARKit channel {name!r}") from None
        out = np.zeros(channels.COUNT, dtype=np.float32)
        lo = -LEVEL_MAX if idx[0] >= channels.SHAPES else 0
        clamped = not lo <= level <= LEVEL_MAX
        out[idx] = min(max(level, lo), LEVEL_MAX) / LEVEL_MAX
        return out, clamped

    def pose(self, items: list[tuple[str, int]]) -> tuple[np.ndarray, bool]:
        """Complete pose for a keyframe's items (rest + sum of items, clamped)."""
        pose = self.rest.copy()
        any_clamped = False
        for name, level in items:
            vec, clamped = self.item_vector(name, level)
            pose += vec
            any_clamped |= clamped
        out = channels.clamp(pose)
        any_clamped |= not np.array_equal(out, pose)
        return out, any_clamped

    def format_items(self, items: list[tuple[str, int]]) -> str:
        return " ".join(f"{n} {lv}" for n, lv in items)

    def format_line(self, dt_steps: int, items: list[tuple[str, int]]) -> str:
        return f"{dt_steps} {self.format_items(items)}\n"
