"""The whole face takes part: each channel is brought along by its strongest neighbour.

Real faces do not move one blendshape at a time: a cheek squint brings the nose and upper lip, a
brow's inner raise its outer part, an opening jaw JawForward and the lower lip. ``W`` (from
``tools/measure_coupling.py``, see :mod:`runtime.animate.capture`) holds the regression slope of a
channel on each neighbour it correlates with in both recorded people. A frame's channel j is
raised toward ``gain * max_k W[j, k] * x[k]`` when it is below that (never lowered, so a pose the
line set is kept), by at most ``cap``. The lips and jaw speech shapes (:data:`SPOKEN`), the eyelids'
blink and the gaze are never raised: speech, blinks and gaze own them. One 52 x 52 multiply and a max per frame.
"""

from __future__ import annotations

import numpy as np

from runtime import channels
from runtime.animate import capture

N = channels.SHAPES
# the lips and jaw that speech shapes sound by sound: coupling them to each other made a talking
# mouth move twice as fast as captured speech; JawForward, which speech never shapes, stays coupled
SPOKEN = ("JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRollLower", "MouthRollUpper",
          "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft",
          "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "MouthStretchLeft",
          "MouthStretchRight", "TongueOut")
FOLLOW_SPEECH = ("JawForward", "JawLeft", "JawRight", "MouthLeft", "MouthRight", "CheekPuff")


class Coupling:
    def __init__(self, gain: float = 0.5, cap: float = 0.25, weights: np.ndarray | None = None,
                 symmetric: bool = False) -> None:
        w = capture.load()["W"] if weights is None else weights
        if symmetric:  # a symmetric rig: the left side's links mirrored onto the right, averaged
            m = channels.MIRROR[:N]
            w = 0.5 * (w + w[np.ix_(m, m)])
        self.gain = float(gain)
        self.cap = np.float32(cap)
        w = np.clip(w, 0.0, None)  # only positive links bring along
        spoken = [channels.INDEX[n] for n in SPOKEN]
        w[spoken] = 0.0
        # and speech's shapes never bring an expression along (a smile at every "f"), only the
        # jaw's and lips' own small neighbours that speech does not shape
        expressive = [j for j in range(N) if channels.NAMES[j] not in FOLLOW_SPEECH]
        w[np.ix_(expressive, spoken)] = 0.0
        self.W = (w * self.gain).astype(np.float32)
        self.on = self.gain > 0.0 and bool(self.W.any())

    def apply(self, frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """frames float32[61] or [n, 61] -> coupled (in place into ``out`` if given)."""
        x = np.asarray(frames, dtype=np.float32)
        res = x.copy() if out is None else out
        if out is not None and out is not x:
            res[...] = x
        if not self.on:
            return res
        s = x[..., :N]
        pred = (self.W * s[..., None, :]).max(axis=-1)  # [.., 52]: the strongest neighbour's pull
        res[..., :N] = s + np.clip(pred - s, 0.0, self.cap)
        return res
