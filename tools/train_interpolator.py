"""Train the learned in-between network on real face capture and export it to ONNX.

    .venv/bin/pip install -e '.[train]'     # CPU torch, onnx, tqdm; the runtime never imports them
    python tools/train_interpolator.py [--recordings DIR] [--val TAKE ...] [--steps N]

The shipped model learns from every take (the default); the figures for takes it never saw come
from leave one take out (below), which trains the same way on all takes but one. ``--val`` holds
takes out of one model instead and scores it on them. From every training take it cuts
segments between keys chosen several ways (salient RDP keys at 1.5-3 keys/s, uniform keys every
0.4-0.6 s from a random start, random gaps of 0.15-1 s), each also mirrored left/right, and
sometimes hides the key after the segment (as when the model is late) so the network learns to
work with what the stream knows. The network (runtime/animate/learned.py explains its inputs and
why its output is bounded) learns, per channel and segment, a monotone warp of the phase at which
the base curve is read and a lean of that base from the monotone cubic toward the straight line;
it shapes the 52 blendshapes and the 6 eye rotations, each as a fraction of its range. Segments
over 1 s fade by 2 s to the straight line read at one learned monotone warp of the phase (--ease:
with salient keys, motion starts at the key and settles, so long segments run ahead of the
line). Two seeds are trained and averaged (--members), and as exported the learned deviation from
that line shrinks with the segment's length (full at 0 s, none at 2 s: --play-fade), because on
takes it never saw the full-size deviation was too sure of itself. Optional (off by default): a
sine-basis residual (--basis); the shrink toward the monotone cubic instead (--play-target spline).
Tried for issue 19 and kept as options, none of them better with a person left out
(docs/BENCHMARKS.md, "Second pass"): a lean toward Catmull-Rom (--catmull), each channel's share of
the face's move (--relative), one warp shared by all channels (--shared-warp), moves divided by the
largest (--scale-free), no key levels in the MLP (--no-levels), only the benchmark's key rules
(--keyings eval), the shrink toward the eased line at every length (--play-target eased).

Leave one take out: ``--loo DIR`` trains one model per take on the others and scores each take
with the model that never saw it (the pooled table the model card quotes); ``--loo-card
DIR/loo.json`` then puts that table into the card of the model trained with the same options:

    python tools/train_interpolator.py --loo /tmp/loo && python tools/train_interpolator.py --loo-card /tmp/loo/loo.json

``--loo DIR --loo-k 2`` leaves two takes out instead (one model per pair, each take scored by the
mean error of the models that never saw it): with the table for one left out, a learning curve.

Writes exported_models/interpolator.onnx and the model card interpolator.json (data, split, seed,
input/output spec, the eval table on the held-out takes and, with --loo-card, the leave-one-take-out
table). Seeded; one thread; a few minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import eval_interpolator as ev  # noqa: E402

from runtime import channels  # noqa: E402
from runtime.animate import learned as L  # noqa: E402
from runtime.animate.spline import tangents  # noqa: E402

C = L.C
OPSET = 17
# Channels left to the plain spline. None: with only a warp (no residual) the net cannot invent a
# blink between keys, but it can shape one a key caught (fast close, slower open), which is most
# of the uniform-key error. (With the old free residual, learned blinks invented the training
# person's blink rate in long segments.)
SPLINE_CHANNELS: tuple[str, ...] = ()
# Segments longer than HOLD[0] s fade to the straight line by HOLD[1] s (in training and as
# played): in leave-one-take-out runs almost all losses came from long segments, where a net
# trained on other takes adds their habits; the straight line is the best spline there with
# salient keys. (0.6, 1.0) before; training on 1-2 s segments too and shrinking as played (PLAY)
# did better on both key rules.
HOLD = (1.0, 2.0)
# As exported, the learned deviation from the straight line shrinks linearly from full in PLAY[0] s
# segments to none at PLAY[1] s: leave one take out, the full-size deviation was too sure of itself
# on the unseen take (a post-hoc shrink of the same models gained on both rules, on every seed).
# (0, 2) until issue 19: with a person left out, (0, 1) did better with salient keys for both
# people and lost fewest takes (uniform: better for one, worse for the other).
PLAY = (0.0, 1.0)
# Long segments fade not to the straight line but to the line read at one learned monotone warp
# of the phase (EASE bins): with salient keys the average long segment runs ahead of the line
# (motion starts at the key and settles), which the straight line ignores
EASE = 8
MEMBERS = 2  # seeds averaged: on unseen takes, an average is less sure of itself than one net
# Two people's exports differ in their resting values (raw: MouthClose ~0.03, EyeSquint 0.05-0.2;
# calibrated: 0): the augmented copies move half their shapes' rests, down to zero or up by this
REST_SHIFT = 0.1
# A 60 Hz take's in-betweens are thinned to 30 Hz in training, so a second of either rate weighs
# alike (and a step costs the same); the keys are still chosen on every frame
TRAIN_HZ = 30.0
PLAY_SPLINE_CHANNELS: tuple[str, ...] = ()


class Net(nn.Module):
    """Segment features -> per channel: phase warp, lean toward the line, optional residual.

    One small network shared by every channel (each channel's own keys, the segment's timing, how
    much the whole face moves, and a 4-number channel embedding) rather than one joint network over
    all channels: on held-out takes the joint one learned the training takes' habits instead.
    """

    def __init__(self, hidden: int = 64, basis: int = 6, embed: int = 4, context: int = 0,
                 spline_channels: tuple[str, ...] = (), hold: tuple[float, float] = (0.0, 0.0),
                 mix: bool = False, motion: float = 0.0, warp: int = 0, ease: int = 0,
                 catmull: bool = False, relative: bool = False, shared_warp: bool = False,
                 scale_free: bool = False, levels: bool = True) -> None:
        super().__init__()
        # > 0: long segments fade not to the straight line but to the line read at one learned
        # monotone warp of the phase (softmax weights of this many bins, shared by every channel
        # and segment), in full from hold[1] s on: after a salient key, motion starts at once and
        # settles slowly, so the average long segment runs ahead of the straight line
        self.ease = nn.Parameter(torch.zeros(ease)) if ease else None
        self.register_buffer("ebins", torch.arange(ease, dtype=torch.float32))
        # > 0: this many more outputs per channel, a monotone piecewise-linear warp of the phase
        # (softmax weights of as many equal bins) at which the base curve is read: it can move
        # the motion the keys show earlier or later, sharpen or soften it, but never invent any
        self.warp = warp
        # > 0: the residual may reach full size only where the keys themselves show at least this
        # much motion (this segment or a neighbouring one); in a still stretch it cannot invent any
        self.motion = motion
        self.basis = basis
        self.mix = mix  # one more output: how far the base curve leans from the cubic to the line
        # one more output (issue 19): how far that base then leans toward the Catmull-Rom curve of
        # the same keys (its tangents from the neighbouring keys the stream knows, clamped to the
        # range): the only candidate spline that can peak between two keys, as uniform keys need
        self.catmull = catmull and mix
        self.hold = hold  # residual fades out from hold[0] to hold[1] seconds; (0, 0): never
        # as played (the exported graph only, never in training): the learned deviation from the
        # straight line shrinks linearly from full at play[0] s to none at play[1] s; (0, 0): off
        self.play = (0.0, 0.0)
        self.play_target = "line"  # what the as-played shrink pulls toward: "line" or "spline"
        keep = torch.ones(C)
        keep[[list(L.SHAPED).index(channels.INDEX[n]) for n in spline_channels]] = 0.0
        self.register_buffer("keep", keep)  # 0: this channel plays the plain spline
        self.embed = nn.Parameter(torch.zeros(C, embed))
        # a few numbers summarising the whole face's keys, so channels can move together
        self.context = nn.Linear(L.FEATURES, context) if context else None
        # issue 19: each channel's share of the whole face's move in this segment and the two
        # beside it, and how sharply the face turns at each key (cosines): salient keys sit on
        # the corners of the whole face's curve, so a channel that made the corner moves like its
        # keys, a small one in a big move may not. From the features alone: the runtime is unchanged
        self.relative = relative
        # issue 19, toward inputs that carry from one face to another: scale_free adds each
        # channel's moves (this segment, the two beside it, both tangents) divided by the largest
        # of them, so the shape of the motion shows apart from its size; levels=False hides where
        # the keys sit in the range (a raw export rests above a calibrated one) from the MLP and
        # the face summary (the curves still use them)
        self.scale_free = scale_free
        self.levels = levels
        mask = torch.ones(L.FEATURES)
        if not levels:
            mask[:2 * C] = 0.0
        self.register_buffer("level_mask", mask, persistent=False)  # nets saved before load
        n_in = (L.BLOCKS + L.SCALARS + 3 + embed + context + (5 if relative else 0)
                + (5 if scale_free else 0))
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU())
        self.head = nn.Linear(hidden, basis + int(mix) + int(self.catmull) + warp)
        with torch.no_grad():  # start as the plain spline
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()
            if mix:
                self.head.bias[basis] = -2.0
            if self.catmull:
                self.head.bias[basis + 1] = -3.0
            self.embed.normal_(0.0, 0.1)
        self.register_buffer("freq", torch.arange(1, basis + 1, dtype=torch.float32) * math.pi)
        self.register_buffer("bins", torch.arange(warp, dtype=torch.float32))
        # issue 19: one more warp per segment, shared by every channel (their hidden states pooled,
        # weighted by how much each moves), added to each channel's own warp logits: faces move
        # together, so the timing evidence of all channels is pooled; starts at nothing
        self.shared = nn.Linear(hidden, warp) if shared_warp and warp else None
        if self.shared is not None:
            with torch.no_grad():
                self.shared.weight.zero_()
                self.shared.bias.zero_()

    def coeffs(self, f: torch.Tensor) -> torch.Tensor:
        """f [B, F] -> sine coefficients [B, K, C]."""
        b = f.shape[0]
        per = f[:, :L.BLOCKS * C].reshape(b, L.BLOCKS, C).transpose(1, 2)  # [B, C, 6]
        scal = f[:, L.BLOCKS * C:]  # [B, 5]
        face = torch.stack(  # how much the whole face moves
            [(per[:, :, 1] - per[:, :, 0]).abs().mean(1), per[:, :, 4].abs().mean(1),
             per[:, :, 5].abs().mean(1)], dim=1)
        fc = f if self.levels else f * self.level_mask  # (no extra node in the default graph)
        parts = [scal, face] + ([torch.tanh(self.context(fc))] if self.context is not None else [])
        extra = []
        if self.scale_free:
            moves = torch.stack([per[:, :, 1] - per[:, :, 0], per[:, :, 2], per[:, :, 3],
                                 per[:, :, 4], per[:, :, 5]], dim=2)  # [B, C, 5]
            extra.append(moves / (moves.abs().amax(2, keepdim=True) + 0.02))
        if self.relative:
            moves = torch.stack([per[:, :, 1] - per[:, :, 0], per[:, :, 4], per[:, :, 5]], dim=2)
            norm = moves.square().sum(1, keepdim=True).add(1e-6).sqrt()  # [B, 1, 3]
            unit = moves / norm
            extra.append(unit)
            parts += [(unit[:, :, 0] * unit[:, :, 1]).sum(1, keepdim=True),
                      (unit[:, :, 0] * unit[:, :, 2]).sum(1, keepdim=True)]
        if not self.levels:  # the move instead of the two levels, and a zero: same input count
            per = torch.cat([per[:, :, 1:2] - per[:, :, 0:1], torch.zeros_like(per[:, :, :1]),
                             per[:, :, 2:]], dim=2)
        glob = torch.cat(parts, dim=1)[:, None, :].expand(b, C, -1)
        x = torch.cat([per, glob, self.embed[None].expand(b, -1, -1)] + extra, dim=2)
        hid = self.body(x)
        out = self.head(hid).transpose(1, 2)  # [B, K, C]
        if self.shared is not None:
            d = f[:, C:2 * C] - f[:, 0:C]
            wgt = d.abs() + f[:, 4 * C:5 * C].abs() + f[:, 5 * C:6 * C].abs()
            wgt = wgt / wgt.sum(1, keepdim=True).add(1e-6)  # [B, C]
            shared = self.shared((wgt[:, :, None] * hid).sum(1))  # [B, W]
            k = self.basis + int(self.mix) + int(self.catmull)
            out = torch.cat([out[:, :k], out[:, k:k + self.warp] + shared[:, :, None],
                             out[:, k + self.warp:]], dim=1)
        return out

    def ease_weights(self) -> torch.Tensor | None:
        return torch.softmax(self.ease, dim=0) if self.ease is not None else None

    def shape(self, f: torch.Tensor, s: torch.Tensor, a: torch.Tensor | None = None,
              play: bool = False, ease: torch.Tensor | None = None) -> torch.Tensor:
        """f [B, F], s [B, P] phases in [0, 1] -> poses [B, P, C], each in [0, 1].

        ``a`` (coefficients [B, K, C]) may be given when rows repeat a segment (training);
        ``play``: also the as-played shrink (``self.play``), which training never sees; ``ease``:
        the long segments' warp weights (default: this net's own)."""
        a = self.coeffs(f) if a is None else a
        k = self.basis
        if self.mix:  # the base curve's lean toward the straight line
            lean = torch.sigmoid(a[:, k:k + 1]) * self.keep
            k += 1
        if self.catmull:  # and then toward the Catmull-Rom curve
            lean_cr = torch.sigmoid(a[:, k:k + 1]) * self.keep
            k += 1
        if self.warp:  # read the base at w(s): w(0) = 0, w(1) = 1, increasing
            p = torch.softmax(a[:, k:k + self.warp], dim=1)  # [B, W, C]
            ramps = (s[..., None] * self.warp - self.bins).clamp(0.0, 1.0)  # [B, P, W]
            w = ramps @ p
            w = w * self.keep + s[..., None] * (1.0 - self.keep)
        a = a[:, :self.basis]
        r = torch.tanh(torch.sin(s[..., None] * self.freq) @ a) * self.keep  # 0 at both keys
        if self.motion > 0 and self.basis:
            y0k, y1k = f[:, 0:C], f[:, C:2 * C]
            seen = torch.maximum(torch.maximum((y1k - y0k).abs(), f[:, 4 * C:5 * C].abs()),
                                 f[:, 5 * C:6 * C].abs())
            r = r * (seen / self.motion).clamp(max=1.0)[:, None, :]
        s = s[..., None]
        u = w if self.warp else s  # where the base curve is read
        y0, y1 = f[:, None, 0:C], f[:, None, C:2 * C]
        base = spline(f, u)  # the input is in range; the clamp guards rounding
        if self.mix:  # a convex blend of two curves in range stays in range
            base = base + lean * ((y0 + u * (y1 - y0)).clamp(0.0, 1.0) - base)
        if self.catmull:  # again a convex blend of curves in range
            base = base + lean_cr * (catmull_rom(f, u) - base)
        # r > 0 takes that fraction of the room above, r < 0 of the room below; written so that
        # float rounding cannot leave [0, 1] either (tanh may round to 1 + ulp, hence 0.9999)
        r = r * 0.9999
        out = (1.0 - (1.0 - base * (1.0 - torch.relu(-r))) * (1.0 - torch.relu(r)) if self.basis
               else base)
        # long segments: what happens inside is not an in-between (hold); as played, the learned
        # deviation also shrinks with the segment's length (play). Both blend toward the same
        # straight line, so one blend by the product of their weights does both.
        spans = [x for x in (self.hold, self.play if play else (0.0, 0.0)) if x[1] > 0]
        if spans:
            g = fade(f, spans[0])
            for x in spans[1:]:
                g = g * fade(f, x)
            u = s[..., 0]  # where the line is read: the phase, or in long segments the eased one
            p = self.ease_weights() if ease is None else ease
            if p is not None and self.hold[1] > 0:
                eased = (u[..., None] * p.shape[0] - self.ebins).clamp(0.0, 1.0) @ p
                ramp = 1.0 - fade(f, self.hold)
                if play and self.play_target == "eased":  # issue 19: the eased line at any length
                    ramp = torch.ones_like(ramp)
                u = u + ramp[:, None] * (eased - u)  # monotone, 0 -> 0, 1 -> 1
            if play and self.play[1] > 0 and self.play_target not in ("line", "eased"):
                # the as-played shrink pulls the learned deviation back toward the runtime's own
                # spline (what plays without the net), or toward the net's own lean of it to the
                # line read at the plain phase (the retiming shrinks, the lean stays: whether keys
                # sit on extremes shows in the keys, how fast a face moves is the person's);
                # then long segments fade to the line
                target = spline(f, s)
                if self.play_target == "base" and self.mix:
                    target = target + lean * ((y0 + s * (y1 - y0)).clamp(0.0, 1.0) - target)
                out = toward(out, target, fade(f, self.play), self.keep)
                g = fade(f, self.hold) if self.hold[1] > 0 else torch.ones_like(g)
            out = toward_line(out, f, u, g, self.keep)
        return out

    def forward(self, features: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """The exported graph: features [B, F], phase [P] -> pose [B, P, C]."""
        return self.shape(features, phase[None, :].expand(features.shape[0], -1), play=True)


def channel_list(text: str) -> list[str]:
    """Comma-separated channel names; ``eyes`` stands for the 6 eye rotations."""
    eyes = [channels.NAMES[i] for i in range(channels.LEFT_EYE.start, channels.COUNT)]
    out = [x for n in text.split(",") if n for x in (eyes if n == "eyes" else [n])]
    for n in out:
        if n not in channels.INDEX or channels.INDEX[n] not in L.SHAPED:
            raise argparse.ArgumentTypeError(f"{n!r} is not a channel the net shapes")
    return out


def fade(f: torch.Tensor, span: tuple[float, float]) -> torch.Tensor:
    """[B] weights: 1 for segments up to span[0] s long, falling linearly to 0 at span[1] s."""
    h = torch.exp(f[:, L.BLOCKS * C])
    return ((span[1] - h) / (span[1] - span[0])).clamp(0.0, 1.0)


def toward(out: torch.Tensor, target: torch.Tensor, g: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Blend ``out`` [B, P, C] toward ``target``, keeping ``g`` [B] of its deviation (a convex
    blend of two curves in range stays in range); channels with keep = 0 are left alone."""
    return target + (g[:, None, None] * keep + (1.0 - keep)) * (out - target)


def toward_line(out: torch.Tensor, f: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
                keep: torch.Tensor) -> torch.Tensor:
    """``toward`` the straight line between the keys, read at phases ``s`` [B, P]."""
    y0, y1 = f[:, None, 0:C], f[:, None, C:2 * C]
    return toward(out, (y0 + s[..., None] * (y1 - y0)).clamp(0.0, 1.0), g, keep)


def catmull_rom(f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The Catmull-Rom curve of the segment's keys at phases ``s`` [B, P, 1] -> [B, P, C], clamped
    to the range: tangent (y[k+1] - y[k-1]) / (t[k+1] - t[k-1]) at each key from the neighbouring
    keys in the features, one-sided where the neighbour is missing (as tools/eval_interpolator.py
    draws it at a run's ends); everything it needs is in the features, so the runtime is unchanged."""
    y0, y1 = f[:, None, 0:C], f[:, None, C:2 * C]
    d = y1 - y0
    k = L.BLOCKS * C
    hp, hn = f[:, None, k + 1:k + 2], f[:, None, k + 2:k + 3]
    rp, rn = torch.exp(f[:, None, k + 3:k + 4]), torch.exp(f[:, None, k + 4:k + 5])  # dt / h
    # tangents times h; the features' neighbour differences are already zero when missing
    m0h = hp * (d + f[:, None, 4 * C:5 * C]) / (1.0 + rp) + (1.0 - hp) * d
    m1h = hn * (f[:, None, 5 * C:6 * C] + d) / (1.0 + rn) + (1.0 - hn) * d
    s2, s3 = s * s, s * s * s
    return ((2 * s3 - 3 * s2 + 1) * y0 + (s3 - 2 * s2 + s) * m0h + (-2 * s3 + 3 * s2) * y1
            + (s3 - s2) * m1h).clamp(0.0, 1.0)


def spline(f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The runtime's monotone cubic at phases ``s`` [B, P, 1] -> [B, P, C] (in range)."""
    s2, s3 = s * s, s * s * s
    y0, y1 = f[:, None, 0:C], f[:, None, C:2 * C]
    m0h, m1h = f[:, None, 2 * C:3 * C], f[:, None, 3 * C:4 * C]
    return ((2 * s3 - 3 * s2 + 1) * y0 + (s3 - 2 * s2 + s) * m0h + (-2 * s3 + 3 * s2) * y1
            + (s3 - s2) * m1h).clamp(0.0, 1.0)


class Ensemble(nn.Module):
    """Several Nets trained from different seeds, played as one: their
    coefficients are averaged, so the ONNX graph runs the small MLPs side by side and shapes
    once. (Fusing them into one block-diagonal MLP was no faster in onnxruntime at 2 members and
    slower at 3: the wider layer costs more than the operations it saves.)"""

    def __init__(self, members: list[Net]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def play(self) -> tuple[float, float]:
        return self.members[0].play

    @play.setter
    def play(self, span: tuple[float, float]) -> None:
        for m in self.members:
            m.play = span

    def coeffs(self, f: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.coeffs(f) for m in self.members]).mean(0)

    def shape(self, f: torch.Tensor, s: torch.Tensor, a: torch.Tensor | None = None,
              play: bool = False) -> torch.Tensor:
        eases = [m.ease_weights() for m in self.members]
        ease = torch.stack(eases).mean(0) if eases[0] is not None else None
        return self.members[0].shape(f, s, self.coeffs(f) if a is None else a, play, ease)

    def forward(self, features: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return self.shape(features, phase[None, :].expand(features.shape[0], -1), play=True)


def export(net: nn.Module, path: Path) -> None:
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, L.FEATURES), torch.linspace(0, 1, 9)), str(path),
                          dynamo=False, opset_version=OPSET, input_names=list(L.INPUTS),
                          output_names=[L.OUTPUT],
                          dynamic_axes={"features": {0: "segments"}, "phase": {0: "phases"},
                                        "pose": {0: "segments", 1: "phases"}})


# data -------------------------------------------------------------------------------------------
class Segments:
    """Segment features plus every in-between frame (segment index, phase, true shapes)."""

    def __init__(self) -> None:
        self.feats: list[np.ndarray] = []
        self.seg: list[np.ndarray] = []
        self.phase: list[np.ndarray] = []
        self.target: list[np.ndarray] = []
        self.count = 0

    def add(self, t: np.ndarray, v: np.ndarray, k: np.ndarray, rng: np.random.Generator,
            p_hide_next: float = 0.15, stride: int = 1) -> None:
        kt, kv = t[k], v[k]
        m = tangents(kt, kv)
        n = len(k) - 1
        j = np.arange(n)
        has_prev = j > 0
        has_next = (j + 2 < len(k)) & (rng.random(n) >= p_hide_next)
        m1 = m[1:].copy()
        m1[~has_next] = 0.0  # the timeline's tangent when the next key is not known yet
        jp, jn = np.maximum(j - 1, 0), np.minimum(j + 2, len(k) - 1)
        f = L.features(kt[1:] - kt[:-1], kv[:-1], kv[1:], m[:-1], m1, kt[j] - kt[jp], kv[jp], has_prev,
                       kt[jn] - kt[j + 1], kv[jn], has_next)
        inside = np.ones(len(t), dtype=bool)
        inside[k] = False
        inside[: k[0]] = inside[k[-1] + 1:] = False
        idx = np.flatnonzero(inside)
        if stride > 1:  # a 60 Hz take's in-betweens at 30 Hz: every second of capture weighs alike
            idx = idx[int(rng.integers(stride))::stride]
        sj = np.searchsorted(k, idx) - 1
        self.feats.append(f)
        self.seg.append(sj + self.count)
        self.phase.append(((t[idx] - kt[sj]) / (kt[sj + 1] - kt[sj])).astype(np.float32))
        self.target.append(L.to_unit(v[idx]).astype(np.float32))
        self.count += n

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(np.concatenate(self.feats)), torch.from_numpy(np.concatenate(self.seg)),
                torch.from_numpy(np.concatenate(self.phase)), torch.from_numpy(np.concatenate(self.target)))


def random_keys(t: np.ndarray, rng: np.random.Generator, lo: float = 0.15, hi: float = 1.0) -> np.ndarray:
    gaps = rng.uniform(lo, hi, int((t[-1] - t[0]) / lo) + 2)
    idx = np.searchsorted(t, t[0] + np.cumsum(gaps))
    return np.unique(np.r_[0, idx[idx < len(t) - 1], len(t) - 1])


def variants(run: ev.Run, rng: np.random.Generator, augment: int,
             speed: tuple[float, float] = (0.8, 1.25), rest_shift: float = 0.0):
    """The run as captured and ``augment`` more faces like it: played ``speed`` times as fast, each
    shape's excursions from its rest value scaled by 0.75-1.33 (another face's range), clipped.
    ``rest_shift`` > 0: each copy also moves half its shapes' resting values, down by up to the
    whole rest (a calibrated export's zero) or up by up to ``rest_shift`` (a raw export's offsets)."""
    yield run.times, run.values
    n = channels.SHAPES  # blendshapes only: a wider eye turn is not another face
    rest = np.percentile(run.values[:, :n], 5, axis=0)
    for _ in range(augment):
        rate = math.exp(rng.uniform(math.log(speed[0]), math.log(speed[1])))
        gain = np.exp(rng.uniform(math.log(0.75), math.log(1.33), n))
        to = rest
        if rest_shift > 0:
            move = rng.random(n) < 0.5
            to = np.where(move, np.clip(rest + rng.uniform(-rest, rest_shift), 0.0, 1.0), rest)
        v = run.values.copy()
        v[:, :n] = np.clip(to + gain * (v[:, :n] - rest), 0.0, 1.0)
        yield run.times[0] + (run.times - run.times[0]) / rate, v


def build(runs: list[ev.Run], rng: np.random.Generator, augment: int = 0,
          speed: tuple[float, float] = (0.8, 1.25), rest_shift: float = 0.0,
          train_hz: float = 0.0, keyings: str = "all") -> Segments:
    """``train_hz`` > 0: in-between frames of faster takes are thinned to about that rate (the
    keys are still chosen on every frame), so a 60 Hz take weighs per second as a 30 Hz one."""
    data = Segments()
    for r in runs:
        dt = float(np.median(np.diff(r.times))) if len(r.times) > 1 else 1.0
        stride = max(1, int(round(1.0 / (dt * train_hz)))) if train_hz > 0 else 1
        for t, v0 in variants(r, rng, augment, speed, rest_shift):
            add_keyings(data, t, v0, rng, stride, keyings)
    return data


def add_keyings(data: Segments, t: np.ndarray, v0: np.ndarray, rng: np.random.Generator,
                stride: int = 1, which: str = "all") -> None:
    """Segments of one (possibly augmented) run, keyed several ways, as captured and mirrored.

    ``which`` "eval": only the two rules the benchmark judges (salient RDP at 2 keys/s, uniform
    every 0.5 s from a random start), each drawn three times as often so a step sees as many
    segments of those rules as of all the others (issue 19: does the net gain by learning only
    the keyings it is judged on?)."""
    for mirror in (False, True):
        v = v0[:, channels.MIRROR] * channels.MIRROR_SIGN if mirror else v0
        if which == "eval":
            keyings = [ev.salient_keys(t, v, 2.0)] * 3
            for _ in range(3):
                off = int(np.searchsorted(t, t[0] + rng.uniform(0, 0.5)))
                if off < len(t) - 2:
                    keyings.append(np.unique(np.r_[0, off + ev.uniform_keys(t[off:], 0.5)]))
            for k in keyings:
                if len(k) >= 2:
                    data.add(t, v, k, rng, stride=stride)
            continue
        keyings = [ev.salient_keys(t, v, r) for r in (1.0, 1.5, 2.0, 2.5, 3.0)]
        for step in (0.4, 0.5, 0.6):
            off = int(np.searchsorted(t, t[0] + rng.uniform(0, step)))
            if off >= len(t) - 2:  # a run shorter than the offset
                continue
            keyings.append(np.unique(np.r_[0, off + ev.uniform_keys(t[off:], step)]))
        keyings += [random_keys(t, rng) for _ in range(2)] + [random_keys(t, rng, 0.3, 3.0)]
        for k in keyings:
            if len(k) >= 2:
                data.add(t, v, k, rng, stride=stride)


# training ---------------------------------------------------------------------------------------
def progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="step", mininterval=2.0)
    except ImportError:  # print every tenth instead
        class Plain:
            n = 0

            def update(self, k: int) -> None:
                self.n += k
                if self.n % max(total // 10, 1) == 0:
                    print(f"step {self.n}/{total}", file=sys.stderr)

            def set_postfix_str(self, s: str) -> None:
                pass

            def close(self) -> None:
                pass

        return Plain()


def train(data: Segments, steps: int, batch: int, lr: float, hidden: int, basis: int, context: int,
          spline_channels: tuple[str, ...], hold: tuple[float, float], huber: float,
          seed: int, mix: bool = False, motion: float = 0.0,
          warp: int = 0, ease: int = 0, embed: int = 4,
          catmull: bool = False, relative: bool = False,
          shared_warp: bool = False, scale_free: bool = False,
          levels: bool = True) -> tuple[Net, list[float]]:
    torch.manual_seed(seed)
    feats, seg, phase, target = data.tensors()
    # frames are stored segment by segment: a step takes whole segments, so the network runs once
    # per segment and every frame of it counts
    start = torch.searchsorted(seg, torch.arange(len(feats) + 1))
    net = Net(hidden, basis, embed=embed, context=context, spline_channels=spline_channels,
              hold=hold, mix=mix, motion=motion, warp=warp, ease=ease, catmull=catmull,
              relative=relative, shared_warp=shared_warp, scale_free=scale_free, levels=levels)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                # >= 2 warm-up steps: OneCycleLR divides by their count
                                                pct_start=max(0.05, 2.0 / steps))
    gen = torch.Generator().manual_seed(seed)
    bar = progress(steps)
    losses, run = [], 0.0
    for step in range(steps):
        j = torch.randint(0, len(feats), (batch,), generator=gen)
        n = start[j + 1] - start[j]
        local = torch.repeat_interleave(torch.arange(batch), n)
        i = start[j][local] + torch.arange(len(local)) - (torch.cumsum(n, 0) - n)[local]
        f = feats[j]
        pred = net.shape(f[local], phase[i, None], net.coeffs(f)[local])[:, 0]
        err = pred - target[i]
        if huber > 0:  # robust: rare events between keys (a twitch) teach no average bump
            loss = torch.nn.functional.huber_loss(pred, target[i], delta=huber)
        else:
            loss = (err ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        mse = float((err.detach() ** 2).mean())
        run = 0.98 * run + 0.02 * mse if step else mse
        if step % 100 == 0:
            bar.set_postfix_str(f"rmse {math.sqrt(run):.4f}")
            losses.append(math.sqrt(run))
        bar.update(1)
    bar.close()
    return net.eval(), losses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=Path, default=ev.DEFAULT_RECORDINGS)
    ap.add_argument("--val", action="append", default=[],
                    help="hold this take out and score the model on it (file stem); repeatable "
                         "(default: none, the model learns from every take)")
    ap.add_argument("--out", type=Path, default=L.DEFAULT_MODEL)
    ap.add_argument("--steps", type=int, default=3000, help="at least 10")
    ap.add_argument("--batch", type=int, default=128, help="segments per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=16,
                    help="hidden width of the shared MLP (16: leave one take out, 64 and 32 were "
                         "surer of the training takes and did worse on the unseen one)")
    ap.add_argument("--basis", type=int, default=0,
                    help="sine coefficients of a free residual (0: none, the model only retimes)")
    ap.add_argument("--embed", type=int, default=4, help="per-channel embedding size (0: none)")
    ap.add_argument("--context", type=int, default=8, help="whole-face summary size (0: none)")
    ap.add_argument("--spline-channels", type=lambda x: [n for n in x.split(",") if n],
                    default=list(SPLINE_CHANNELS),
                    help="comma-separated channels left to the spline (default: none)")
    ap.add_argument("--play-spline-channels", type=channel_list, default=list(PLAY_SPLINE_CHANNELS),
                    help="as exported only (training still learns them): comma-separated channels "
                         "that play the monotone cubic (eyes: the 6 eye rotations; default: none)")
    ap.add_argument("--hold", type=float, nargs=2, default=HOLD, metavar=("FROM", "TO"),
                    help="segments FROM..TO seconds long fade to the straight line (0 0: never)")
    ap.add_argument("--play-fade", type=float, nargs=2, default=PLAY, metavar=("FROM", "TO"),
                    help="as exported (not in training), the learned deviation from the straight "
                         "line shrinks linearly from full in FROM-second segments to none at TO "
                         "seconds (0 0: off)")
    ap.add_argument("--play-target", choices=("line", "spline", "base", "eased"), default="line",
                    help="what the as-played shrink pulls the learned deviation toward: the "
                         "straight line, the runtime's monotone cubic, or the net's own lean of "
                         "that cubic toward the line at the plain phase (base: the retiming "
                         "shrinks, the lean stays); long segments still fade to the line; eased: "
                         "the line read at the long segments' learned ease, at every length")
    ap.add_argument("--huber", type=float, default=0.0, help="Huber loss delta (0: squared error)")
    ap.add_argument("--mix", action=argparse.BooleanOptionalAction, default=True,
                    help="also learn a per-channel lean of the base curve toward the straight line")
    ap.add_argument("--catmull", action=argparse.BooleanOptionalAction, default=False,
                    help="with --mix: also learn a per-channel lean of that base toward the "
                         "Catmull-Rom curve of the same keys (clamped to the range; issue 19)")
    ap.add_argument("--keyings", choices=("all", "eval"), default="all",
                    help="training keys: all (RDP 1-3 keys/s, uniform 0.4-0.6 s, random gaps) or "
                         "eval (only the benchmark's two rules, RDP 2 keys/s and uniform 0.5 s)")
    ap.add_argument("--relative", action=argparse.BooleanOptionalAction, default=False,
                    help="also feed each channel its share of the whole face's move (this segment "
                         "and the two beside it) and the face's turn at each key (issue 19)")
    ap.add_argument("--shared-warp", action=argparse.BooleanOptionalAction, default=False,
                    help="with --warp: add one segment-wide warp, pooled from every channel's "
                         "hidden state by how much it moves, to each channel's own (issue 19)")
    ap.add_argument("--scale-free", action=argparse.BooleanOptionalAction, default=False,
                    help="also feed each channel its moves divided by the largest of them (the "
                         "shape of the motion apart from its size; issue 19)")
    ap.add_argument("--levels", action=argparse.BooleanOptionalAction, default=True,
                    help="--no-levels: the MLP never sees where the keys sit in the range, only "
                         "how they move (exports rest at different values; issue 19)")
    ap.add_argument("--motion", type=float, default=0.0,
                    help="residual scaled down where the keys show less motion than this (0: off)")
    ap.add_argument("--augment", type=int, default=2,
                    help="extra time-warped, amplitude-scaled copies of every training run")
    ap.add_argument("--speed", type=float, nargs=2, default=(0.8, 1.25), metavar=("MIN", "MAX"),
                    help="the augmented copies play MIN..MAX times as fast (log-uniform)")
    ap.add_argument("--rest-shift", type=float, default=REST_SHIFT,
                    help="augmented copies also move half their shapes' resting values, down to "
                         "zero or up by up to this much (another export's offsets; 0: off)")
    ap.add_argument("--train-hz", type=float, default=TRAIN_HZ,
                    help="thin faster takes' in-between frames to about this rate in training, "
                         "so every second of capture weighs alike (0: every frame)")
    ap.add_argument("--ease", type=int, default=EASE,
                    help="bins of one learned monotone warp of the line that long segments fade "
                         "to (0: the plain straight line)")
    ap.add_argument("--warp", type=int, default=8,
                    help="bins of a learned monotone phase warp of the base curve (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", type=int, default=MEMBERS,
                    help="train this many nets (seeds seed, seed+1, ...) and average them")
    ap.add_argument("--loo-card", type=Path, metavar="LOO_JSON",
                    help="put this leave-one-take-out result (DIR/loo.json of a --loo run with the "
                         "same options) into the model card")
    ap.add_argument("--loo-k", type=int, default=1, metavar="K",
                    help="with --loo: leave K takes out per model (one model per K-subset; each "
                         "take scored by the mean error of the models that never saw it)")
    ap.add_argument("--save-nets", action="store_true",
                    help="also save the trained nets beside --out (.pt), for --reuse-nets")
    ap.add_argument("--reuse-nets", action="store_true",
                    help="screening only: load the nets saved beside --out instead of training "
                         "(what changes only as played: --play-fade, --spline-channels); the card "
                         "then describes nets trained with the saved options")
    ap.add_argument("--loo-folds", type=int, default=0, metavar="K",
                    help="with --loo: K models instead of one per take, fold i leaving out takes "
                         "i, i+K, ... (sorted by path, so each fold holds several people's takes); "
                         "each take scored by its fold's model")
    ap.add_argument("--lopo", type=Path, metavar="DIR",
                    help="leave one person out: one model per person (the folder a take lies in), "
                         "trained on everyone else, written to DIR/<person>.onnx; each take scored "
                         "by the model that never saw its person; table printed and written to "
                         "DIR/lopo.json (--out untouched)")
    ap.add_argument("--lopo-card", type=Path, metavar="LOPO_JSON",
                    help="put this leave-one-person-out result (DIR/lopo.json of a --lopo run with "
                         "the same options) into the model card; it decides the card's verdict")
    ap.add_argument("--loo", type=Path, metavar="DIR",
                    help="leave one take out instead: one model per take, trained on the others, "
                         "written to DIR/<take>.onnx; each take scored by the model that never saw "
                         "it, pooled table printed and written to DIR/loo.json (--out untouched; "
                         "--loo-k 2: one model per pair, DIR/<take>__<take>.onnx)")
    a = ap.parse_args(argv)
    if a.steps < 10:
        ap.error("--steps must be at least 10")
    for name, (lo, hi) in (("--hold", a.hold), ("--play-fade", a.play_fade)):
        if hi > 0 and not 0 <= lo < hi:
            ap.error(f"{name} needs 0 <= FROM < TO (or 0 0: off)")
    torch.set_num_threads(1)
    if a.lopo:
        return leave_person_out(a, list(sys.argv[1:] if argv is None else argv))
    if a.loo:
        return leave_one_out(a, list(sys.argv[1:] if argv is None else argv))
    loo = None
    if a.loo_card:
        loo = json.loads(a.loo_card.read_text())
        if loo.get("k", 1) != 1:
            ap.error(f"{a.loo_card} leaves {loo['k']} takes out; the card quotes one left out")
        if loo.get("options") != resolved(a):
            ap.error(f"{a.loo_card} was made with options {loo.get('options')}, not these "
                     f"({resolved(a)})")
    lopo = None
    if a.lopo_card:
        lopo = json.loads(a.lopo_card.read_text())
        if lopo.get("options") != resolved(a):
            ap.error(f"{a.lopo_card} was made with options {lopo.get('options')}, not these "
                     f"({resolved(a)})")
    val = a.val
    rng = np.random.default_rng(a.seed)

    paths = ev.find_takes(a.recordings)
    unknown = sorted(set(val) - {p.stem for p in paths})
    if unknown:  # a typo would otherwise train on the take it meant to hold out
        ap.error(f"--val {', '.join(unknown)}: no such take in {a.recordings} "
                 f"(takes: {', '.join(p.stem for p in paths)})")
    train_paths = [p for p in paths if p.stem not in val]
    val_paths = [p for p in paths if p.stem in val]
    if not train_paths:
        print(f"no training takes in {a.recordings}", file=sys.stderr)
        return 2
    runs = [r for p in train_paths for r in ev.runs_of(p)]
    t0 = time.perf_counter()
    data = build(runs, rng, a.augment, tuple(a.speed), a.rest_shift, a.train_hz, a.keyings)
    n_frames = sum(len(x) for x in data.seg)
    print(f"train takes {[p.stem for p in train_paths]}, val {[p.stem for p in val_paths]}: "
          f"{data.count} segments, {n_frames} in-between frames ({time.perf_counter() - t0:.1f} s)",
          file=sys.stderr)
    t0 = time.perf_counter()
    nets = []
    a.out.parent.mkdir(parents=True, exist_ok=True)
    saved = a.out.with_suffix(".pt")
    if a.reuse_nets and saved.is_file():  # screening what only changes as played: no retraining
        state = torch.load(saved)
        curve = state["curve"]
        for sd in state["nets"]:
            m = Net(a.hidden, a.basis, embed=a.embed, context=a.context, hold=tuple(a.hold),
                    mix=a.mix, motion=a.motion, warp=a.warp, ease=a.ease, catmull=a.catmull,
                    relative=a.relative, shared_warp=a.shared_warp,
                    scale_free=a.scale_free, levels=a.levels)
            keep = m.keep.clone()
            m.load_state_dict(sd)
            m.keep.copy_(keep)  # these options' channels left to the spline, not the saved ones
            m.keep[[list(L.SHAPED).index(channels.INDEX[n]) for n in a.spline_channels]] = 0.0
            nets.append(m.eval())
        print(f"reusing the nets of {saved} (trained with {state['trained_with']})", file=sys.stderr)
    else:
        for k in range(a.members):
            m, curve = train(data, a.steps, a.batch, a.lr, a.hidden, a.basis, a.context,
                             tuple(a.spline_channels), tuple(a.hold), a.huber, a.seed + k, a.mix,
                             a.motion, a.warp, a.ease, a.embed, a.catmull,
                             a.relative, a.shared_warp, a.scale_free, a.levels)
            nets.append(m)
        if a.save_nets:
            torch.save({"nets": [m.state_dict() for m in nets], "curve": curve,
                        "trained_with": resolved(a), "seconds": time.perf_counter() - t0}, saved)
    for m in nets:
        m.play = tuple(a.play_fade)
        m.play_target = a.play_target
        # as played only: these channels fall back to the spline (the nets learned them anyway)
        m.keep[[list(L.SHAPED).index(channels.INDEX[n]) for n in a.play_spline_channels]] = 0.0
    net = nets[0] if len(nets) == 1 else Ensemble(nets).eval()
    train_s = time.perf_counter() - t0
    if a.reuse_nets and saved.is_file():  # the card quotes the training, not the reloading
        train_s = torch.load(saved).get("seconds")  # None: saved before it was recorded

    a.out.parent.mkdir(parents=True, exist_ok=True)
    card_path = a.out.with_suffix(".json")
    old = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card_path.unlink(missing_ok=True)  # the old card describes the old model: the runtime would refuse
    export(net, a.out)
    sess_check(net, a.out)
    learned = L.LearnedInterpolator(a.out)
    scores = ev.evaluate(val_paths, learned) if val_paths else []
    train_scores = ev.evaluate(train_paths, learned)
    minutes = sum(float(r.times[-1] - r.times[0]) for r in runs) / 60.0
    card = model_card(a, net, train_paths, val_paths, data, n_frames, train_s, curve, scores,
                      train_scores, minutes, loo, old, lopo)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    if scores:
        print(ev.table(scores))
    print(json.dumps(card["eval"]["validation"]["summary"] if scores else {}))
    return 0


def model_options(argv: list[str]) -> list[str]:
    """The options that make the model: argv minus where data and results go."""
    rest, skip = [], False
    drop = ("--loo", "--val", "--out", "--loo-card", "--recordings", "--loo-k", "--loo-folds",
            "--lopo", "--lopo-card")
    for x in argv:
        if skip:
            skip = False
            continue
        if x in drop:
            skip = True
            continue
        if not x.startswith(tuple(d + "=" for d in drop)):
            rest.append(x)
    return rest


def resolved(a) -> dict:
    """Every option that shapes the model, as parsed (so defaults count too)."""
    skip = ("recordings", "val", "out", "loo", "loo_card", "loo_k", "loo_folds", "lopo",
            "lopo_card", "save_nets", "reuse_nets")
    return json.loads(json.dumps({k: v for k, v in sorted(vars(a).items()) if k not in skip},
                                 default=str))


def leave_one_out(a, argv: list[str]) -> int:
    """Train a model per take (``--loo-k`` 2: per pair of takes, ...) on the other takes, same
    options, and score each take with the models that never saw it."""
    rest = model_options(argv) + ["--recordings", str(a.recordings)]
    paths = ev.find_takes(a.recordings)
    if not 1 <= a.loo_k < len(paths):
        print(f"--loo-k {a.loo_k}: needs 1 <= K < {len(paths)} (the takes in {a.recordings})",
              file=sys.stderr)
        return 2
    a.loo.mkdir(parents=True, exist_ok=True)
    seen: dict[str, list[ev.TakeScore]] = {p.stem: [] for p in paths}
    if a.loo_folds:
        if not 2 <= a.loo_folds <= len(paths) or a.loo_k != 1:
            print(f"--loo-folds {a.loo_folds}: needs 2 <= K <= {len(paths)} and --loo-k 1",
                  file=sys.stderr)
            return 2
        splits = [tuple(paths[i::a.loo_folds]) for i in range(a.loo_folds)]
    else:
        splits = list(itertools.combinations(paths, a.loo_k))
    for n, out in enumerate(splits):
        model = a.loo / ((f"fold{n}" if a.loo_folds else "__".join(p.stem for p in out)) + ".onnx")
        main(rest + [x for p in out for x in ("--val", p.stem)] + ["--out", str(model)])
        for p in out:
            seen[p.stem] += ev.evaluate([p], L.LearnedInterpolator(model), progress=False)
    scores = [mean_score(s) for s in seen.values()]
    tot = ev.pooled(scores)
    result = {"k": a.loo_k, "folds": a.loo_folds,
              "summary": ev.summary(scores),
              "per_person_percent": {who: [round(ev.gain(ev.pooled(ss), r), 2) for r in ev.RULES]
                                     for who, ss in ev.people(scores).items()},
              "learned_vs_best_spline_percent": {r: round(ev.gain(tot, r), 2) for r in ev.RULES},
              "per_take_percent": {s.name: [round(ev.gain(s.sums, r), 1) for r in ev.RULES]
                                   for s in scores},
              "per_take_columns": list(ev.RULES),
              "options": resolved(a)}
    (a.loo / "loo.json").write_text(json.dumps(result, indent=2) + "\n")
    print(ev.table(scores))
    print(json.dumps(result["learned_vs_best_spline_percent"] | {"per_take": result["per_take_percent"]}))
    return 0


def leave_person_out(a, argv: list[str]) -> int:
    """Train a model per person on everyone else's takes, same options, and score each take
    with the model that never saw its person (``DIR/lopo.json``)."""
    rest = model_options(argv) + ["--recordings", str(a.recordings), "--save-nets"]
    paths = ev.find_takes(a.recordings)
    who = sorted({ev.person_of(p) for p in paths})
    if len(who) < 2:
        print(f"--lopo needs takes of two people or more in {a.recordings} (one folder each)",
              file=sys.stderr)
        return 2
    a.lopo.mkdir(parents=True, exist_ok=True)
    scores: list[ev.TakeScore] = []
    for person in who:
        out = [p for p in paths if ev.person_of(p) == person]
        model = a.lopo / f"{person}.onnx"
        main(rest + [x for p in out for x in ("--val", p.stem)] + ["--out", str(model)])
        scores += ev.evaluate(out, L.LearnedInterpolator(model), progress=False)
    result = lopo_result(scores, resolved(a))
    (a.lopo / "lopo.json").write_text(json.dumps(result, indent=2) + "\n")
    print(ev.table(scores))
    print(json.dumps({k: result[k] for k in ("per_person_percent", "verdict")}))
    return 0


def lopo_result(scores: list[ev.TakeScore], options: dict) -> dict:
    """Leave one person out, judged by the issue's rule: with the person left out, learned at
    least 5% below the best spline pooled over that person's takes for both key rules, and worse
    by more than 1% on none of them; rotation channels (where a take moves them) never worse than
    the monotone cubic that plays without the net."""
    per_person, misses = {}, []
    for who, ss in ev.people(scores).items():
        tot = ev.pooled(ss)
        per_person[who] = [round(ev.gain(tot, r), 2) for r in ev.RULES]
        for r, g in zip(ev.RULES, per_person[who]):
            if g < 5.0:
                misses.append(f"{who} pooled {r} {g:+.2f}% (< +5%)")
        for s in ss:
            for r in ev.RULES:
                g = ev.gain(s.sums, r)
                if g < -1.0:
                    misses.append(f"{who}/{s.name} {r} {g:+.1f}% (< -1%)")
    rot = {}
    for s in scores:
        for g in ("eyes", "head"):
            vals = [ev.group_gain(s, r, g, "monotone_cubic") for r in ev.RULES]
            if any(v is not None for v in vals):
                rot[f"{s.name} {g}"] = [None if v is None else round(v, 1) for v in vals]
                misses += [f"{s.name} {g} {r} {v:+.1f}% vs the cubic" for r, v in zip(ev.RULES, vals)
                           if v is not None and v < -0.05]
    grp = ev.pooled_groups(scores)
    return {
        "summary": ev.summary(scores),
        "per_person_percent": per_person,
        "per_take_percent": {f"{s.person}/{s.name}": [round(ev.gain(s.sums, r), 1) for r in ev.RULES]
                             for s in scores},
        "per_take_columns": list(ev.RULES),
        "rotation_vs_monotone_cubic_percent": rot,
        "eyes_pooled_rmse": {r: {m: round(grp[(r, m, "eyes")].rmse, 5) for m in ev.METHODS}
                             for r in ev.RULES if (r, "learned", "eyes") in grp},
        "verdict": "met" if not misses else "not met: " + "; ".join(misses),
        "options": options,
    }


def mean_score(scores: list[ev.TakeScore]) -> ev.TakeScore:
    """One take scored by several models, as one score: each sum is the models' mean (with one
    model, that model's score)."""
    if len(scores) == 1:
        return scores[0]
    k = len(scores)
    first = scores[0]
    out = ev.TakeScore(first.name, first.frames, first.seconds, dict(first.keys), person=first.person)
    for key in first.sums:
        parts = [s.sums[key] for s in scores]
        out.sums[key] = ev.Sums(sum(x.sq for x in parts) / k, sum(x.vel for x in parts) / k,
                                round(sum(x.over for x in parts) / k), first.sums[key].n)
        out.by_length[key] = sum(s.by_length[key] for s in scores) / k
    return out


def sess_check(net: Net, path: Path) -> None:
    """Refuse to ship an export that disagrees with the network it came from."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    f = torch.rand(4, L.FEATURES, generator=g)
    p = torch.rand(23, generator=g)
    with torch.no_grad():
        want = net(f, p).numpy()
    got = sess.run(None, {"features": f.numpy(), "phase": p.numpy()})[0]
    err = float(np.abs(got - want).max())
    if err > 1e-5:
        raise SystemExit(f"ONNX export differs from torch by {err}")


def loo_block(loo: dict) -> dict:
    """The model card's leave-one-take-out table, from a --loo run's loo.json."""
    s, cols = loo["summary"], loo["per_take_columns"]
    worse = [f"{take} with {rule} keys ({v:+.1f}%)" for take, vals in loo["per_take_percent"].items()
             for rule, v in zip(cols, vals) if v < 0]
    k = loo.get("folds") or 0
    how = (f"{k} models, fold i leaving out takes i, i+{k}, ... (sorted by path, so each fold holds "
           f"several people's takes), each trained on the rest with these options; each take scored "
           f"by its fold's model, pooled over all {s['takes']} takes ({s['frames']} frames); "
           f"`tools/train_interpolator.py --loo DIR --loo-folds {k}` runs the same" if k else
           f"one model per take, each `tools/train_interpolator.py --val TAKE` (these options) on "
           f"the other takes; each take scored by the model that never saw it, pooled over all "
           f"{s['takes']} takes ({s['frames']} frames); `tools/train_interpolator.py --loo DIR` "
           f"runs the same")
    return {
        "how": how,
        "per_person_percent": loo.get("per_person_percent", {}),
        "rmse_salient": {m: round(v, 5) for m, v in s["rmse"].items()},
        "rmse_uniform": {m: round(v, 5) for m, v in s["rmse_uniform"].items()},
        "learned_vs_best_spline_percent": loo["learned_vs_best_spline_percent"],
        "per_take_percent": loo["per_take_percent"],
        "per_take_columns": cols,
        "worse_than_best_spline_on": "; ".join(worse) or "none: every take is better with both rules",
    }


def lopo_block(lopo: dict) -> dict:
    """The model card's leave-one-person-out table, from a --lopo run's lopo.json."""
    s = lopo["summary"]
    return {
        "how": "one model per person (the folder a take lies in), trained with these options on "
               "everyone else's takes; each take scored by the model that never saw its person, "
               f"{s['takes']} takes ({s['frames']} frames); `tools/train_interpolator.py --lopo DIR`",
        "rule": "learned at least 5% below the best spline pooled over the left-out person's takes "
                "for both key rules, worse by more than 1% on none of them; rotation channels of "
                "a take that moves them never worse than the monotone cubic",
        "per_person_percent": lopo["per_person_percent"],
        "per_take_percent": lopo["per_take_percent"],
        "per_take_columns": lopo["per_take_columns"],
        "rotation_vs_monotone_cubic_percent": lopo["rotation_vs_monotone_cubic_percent"],
        "verdict": lopo["verdict"],
    }


def summarize_card(card: dict) -> str:
    """One line on an earlier model card's results (for the next card's ``previous_model``)."""
    val = card.get("eval", {}).get("validation", {}).get("learned_vs_best_spline_percent", {})
    loo = card.get("leave_one_take_out", {})
    g = loo.get("learned_vs_best_spline_percent", {})
    parts = [card.get("model", {}).get("architecture", "?").split(" (")[0]]
    if val:
        parts.append("validation " + " / ".join(f"{v:+.1f}%" for v in val.values()))
    if g:
        parts.append("leave-one-take-out " + " / ".join(f"{v:+.2f}%" for v in g.values())
                     + f" (worse on: {loo.get('worse_than_best_spline_on', '?')})")
    return f"{card.get('created', '?')}: " + ", ".join(parts)


def model_card(a, net, train_paths, val_paths, data, n_frames, train_s, curve, scores,
               train_scores, minutes: float, loo: dict | None = None,
               old: dict | None = None, lopo: dict | None = None) -> dict:
    def per_take(ss):
        return {s.name: {rule: {m: s.sums[(rule, m)].rmse for m in ev.METHODS} for rule in ev.RULES}
                for s in ss}

    val_sum = ev.summary(scores) if scores else {}
    gains = {rule: ev.gain(ev.pooled(scores), rule) for rule in ev.RULES} if scores else {}
    loo_g = loo["learned_vs_best_spline_percent"] if loo else {}
    # the target, on every held-out figure there is (and there must be one); with a
    # leave-one-person-out table, that table's verdict (the product meets new faces)
    met = bool(gains or loo_g) and all(g >= 5.0 for g in (*gains.values(), *loo_g.values()))
    if lopo:
        met = lopo["verdict"] == "met"
    loo_worse = [v for vals in loo["per_take_percent"].values() for v in vals if v < 0] if loo else []

    def pct(g: dict) -> str:
        return " / ".join(f"{v:+.1f}%" for v in g.values())

    card = {
        "name": "keyframeface in-between interpolator",
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "file": a.out.name,
        "data": {
            "recordings": "Live Link Face CSV takes (shared/data/recordings), by person: "
                          + ", ".join(f"{w} ({n} takes)" for w, n in sorted(
                              {w: sum(ev.person_of(p) == w for p in train_paths + val_paths)
                               for w in {ev.person_of(p) for p in train_paths + val_paths}}.items()))
                          + " (alexdjulin: MIT, raw exports at 30 Hz; animavr: MIT for individuals "
                          "and small businesses, calibrated exports at 60 Hz)",
            "train_takes": [p.stem for p in train_paths],
            "validation_takes": [p.stem for p in val_paths],
            "split": ("by take" if val_paths else
                      "none held out: the model learns from every take; the figures on takes it "
                      "never saw are leave-one-take-out (same options, all takes but one)"),
            "segments": data.count,
            "in_between_frames": n_frames,
            "keyings": "salient RDP 1/1.5/2/2.5/3 keys/s, uniform 0.4/0.5/0.6 s from a random start, "
                       "2x random gaps 0.15-1 s, 1x random gaps 0.3-3 s; each also mirrored "
                       "left/right; next key hidden 15% of the time",
            "augment": (f"{a.augment} extra copy/copies of every run, {a.speed[0]:g}-{a.speed[1]:g}x "
                        "speed, each shape's excursion from rest scaled 0.75-1.33x"
                        + (f", half the shapes' resting values moved (down to zero or up by up to "
                           f"{a.rest_shift:g})" if a.rest_shift > 0 else "")
                        if a.augment else "none"),
            "rate": (f"in-between frames of faster takes thinned to about {a.train_hz:g} Hz in "
                     "training (keys still chosen on every frame), so a second of 60 Hz capture "
                     "weighs as a second of 30 Hz" if a.train_hz > 0 else
                     "every frame of every take (a 60 Hz take weighs twice a 30 Hz one per second)"),
        },
        "training": {"seed": a.seed,
                     "loss": f"huber {a.huber}" if a.huber else "squared error",
                     "steps": a.steps, "batch": f"{a.batch} segments (all their frames)", "lr": a.lr,
                     "optimizer": "AdamW wd 1e-4, one-cycle", "threads": 1,
                     "seconds": None if train_s is None else round(train_s, 1),
                     "torch": torch.__version__,
                     "train_rmse_curve_every_100_steps": [round(x, 5) for x in curve]},
        "model": {"architecture": (
            (f"average of {a.members} seeds' coefficients of " if a.members > 1 else "")
            + f"one MLP shared by the {C} channels, {L.BLOCKS + L.SCALARS + 3 + a.embed + a.context}-"
            f"{a.hidden}-{a.hidden}-{a.basis + int(a.mix) + int(a.catmull and a.mix) + a.warp} "
            "(SiLU; inputs: the channel's "
            f"keys, segment timing, face motion, a {a.context}-d whole-face summary, a {a.embed}-d "
            "channel embedding); outputs: "
            + "; ".join(x for x in (
                f"{a.basis} sine coefficients of a tanh-bounded residual" if a.basis else "",
                "a sigmoid lean of the base curve from the monotone cubic toward the straight line"
                if a.mix else "",
                "a sigmoid lean of that base toward the Catmull-Rom curve of the same keys (clamped "
                "to the range)" if a.catmull and a.mix else "",
                f"{a.warp} softmax bin weights of a monotone phase warp at which the base curve is "
                "read (it retimes the motion the keys show, never invents any)" if a.warp else "")
                if x)
            + (f"; segments longer than {a.hold[0]} s fade by {a.hold[1]} s to the straight line"
               + (f", read at one learned monotone warp of the phase ({a.ease} softmax bins shared "
                  "by all channels)" if a.ease else "") if a.hold[1] > 0 else "")
            + ("; as played, the learned deviation from the "
               + {"spline": "monotone cubic", "base": "net's own lean of the monotone cubic toward "
                  "the straight line (read at the plain phase)",
                  "eased": "straight line read at the long segments' learned ease"}.get(
                      a.play_target, "straight line")
               + f" shrinks linearly from full in {a.play_fade[0]} s segments to none at "
               f"{a.play_fade[1]} s (not in training)" if a.play_fade[1] > 0 else "")),
                  "parameters": sum(p.numel() for p in net.parameters()), "opset": OPSET},
        "spline_channels": list(a.spline_channels),
        "played_on_the_spline": list(a.play_spline_channels),
        "hold_fade_seconds": list(a.hold),
        "play_fade_seconds": list(a.play_fade),
        "features": {"version": L.FEATURE_VERSION, "count": L.FEATURES,
                     "layout": "y0, y1, m0*h, m1*h, y0-y_prev, y_next-y1 for the 58 shaped channels "
                               "(52 blendshapes, then the 6 eye rotations; each as a fraction of "
                               "its range, rotations (x + 1) / 2); then "
                               "log h, has_prev, has_next, log(dt_prev/h)*has_prev, "
                               "log(dt_next/h)*has_next"},
        "inputs": {"features": ["segments", L.FEATURES], "phase": ["phases"]},
        "outputs": {"pose": ["segments", "phases", C],
                    "range": "[0, 1] by construction (the base curves stay in range at any phase; "
                             "convex blends of them; the residual is a tanh fraction of the room "
                             "to the bound)",
                    "channels": "the 52 ARKit blendshapes in canonical order, then LeftEyeYaw, "
                                "LeftEyePitch, LeftEyeRoll, RightEyeYaw, RightEyePitch, "
                                "RightEyeRoll, each as a fraction of its range (the runtime maps "
                                "them back); head rotation keeps the spline"},
        "eval": {
            "rule": "tools/eval_interpolator.py: salient = RDP by error to 2 keys/s, uniform = "
                    "every 0.5 s; RMSE over non-key frames and live channels",
            "validation": {"summary": val_sum, "per_take": per_take(scores),
                           "learned_vs_best_spline_percent": gains},
            "train_takes_per_take": per_take(train_scores),
        },
        "default": (("learned is the default: with each person left out it is at least 5% below "
                     "the best spline pooled for both key rules and worse by more than 1% on none "
                     "of that person's takes" if lopo else
                     "learned beats the best spline by at least 5% on the held-out takes with "
                     "both key rules") if met else
                    "NOT the default: " + (lopo["verdict"].removeprefix("not met: ") if lopo else
                    "it does not beat the best spline by the 5% target on the held-out takes with "
                    "both key rules") + " (config keeps interpolator = \"spline\")"),
        "selection": "issue 19 (two people): this recipe was chosen by leaving one person out "
                     "(tools/train_interpolator.py --lopo, salient / uniform, pooled per person "
                     "alexdjulin; animavr): the issue-4 recipe (its shipped model for animavr) "
                     "+2.41/+1.33; +0.61/+4.91; + rest shift 0.1 and 30 Hz thinning +1.73/+1.58; "
                     "+0.96/+4.74; then, as played from the same nets (--reuse-nets), the shrink "
                     "0-1 s (shipped) +2.25/+1.85; +1.56/+3.71, 0-1.5 s +2.13/+1.80; "
                     "+1.31/+4.46, 0-0.75 s +2.05/+1.39; +1.63/+2.71, 0.25-1 s +1.81/+1.80; "
                     "+1.17/+4.46, 0-0.5 s +1.49/-1.05 (alexdjulin only), 0-1 s toward the cubic "
                     "+1.40/+2.75; -0.31/+3.27, 0-1 s with the eye rotations on the cubic "
                     "+1.86/+1.60; +0.86/+3.25; the issue-4 nets with the 0-1 s shrink +2.53/+1.55 "
                     "(alexdjulin; none saved for animavr). The training changes alone are a wash; "
                     "the shorter shrink is most of the gain. Chosen on the same left-out runs, "
                     "so somewhat optimistic. Before issue 19: "
                     "the design (phase warp + lean toward the line, no free residual, blinks "
                     "learned, long segments fade to the line, 2 augmented copies, two seeds, the "
                     "0-2 s shrink as played, the eye rotations, the eased line of long segments) "
                     "was chosen by earlier sessions among about 28 configurations screened on the "
                     "validation takes or compared by leave-one-take-out over all five takes; this "
                     "version learns from all five takes instead of three, with the same recipe "
                     "(learning curve: leaving two takes out, three to train on, +2.15/+3.10; "
                     "one, four to train on, +4.24/+4.73; without either range-of-motion take it "
                     "lost to the best spline on both); the version before narrowed the MLP from "
                     "64 to 16 hidden units, chosen by "
                     "leave-one-take-out among 64 / 32 / 16 / 8 (salient / uniform: +3.60/+4.74, "
                     "+3.89/+4.77, +4.24/+4.73, +4.07/+4.74; from seed 10: 64 +3.67/+4.88, 32 "
                     "+3.83/+4.83, 16 +4.02/+4.81; from seed 20: 64 +3.07/+4.31, 16 +3.24/+4.50, "
                     "where both are level with or below the best spline on alex_rom_3 salient). "
                     "Mean of the three seeds at 16 wide: +3.83/+4.68. Not kept (16 wide unless said): 1500 steps "
                     "(+4.64/+4.50) and a 4-d face summary (+4.39/+4.50), each trading uniform for "
                     "salient; no channel embedding (+3.90/+4.69), "
                     "augmented copies at 0.67-1.5x speed (64 wide: +3.39/+4.08), the shrink "
                     "pulled toward the net's own lean of the cubic to the line (+3.80/+5.00). The "
                     "tables are therefore somewhat optimistic; seed to seed, the pooled gains "
                     "move by up to a point (seeds 10 and 20 of this configuration: +4.02% / +4.81%, "
                     "+3.24% / +4.50%)",
        "limitations": f"{len({ev.person_of(p) for p in train_paths})} person(s), {minutes:.1f} "
                       "minutes of training capture, no speech; with a person left out it is only "
                       "1-2 points ahead of the best spline with salient keys and loses by more "
                       "than 1% on some of that person's takes (leave_one_person_out), so on a new "
                       "face it may be worse. Motion entirely between keys (blinks, saccades) "
                       "cannot be recovered. Head rotation is not modelled (it is zero in every "
                       "take here) and keeps the monotone cubic, so a take with head motion is "
                       "exactly as the spline plays it there; the eye rotations look like radians "
                       "(about +-0.6) where the runtime's unit is degrees / 180, and with a person "
                       "left out the net is worse than the cubic on them in two takes with uniform "
                       "keys (by 1.5% and 0.5%; playing them on the cubic instead cost 0.4-0.5 "
                       "points pooled). Times are read from the timecode, so 30 and 60 Hz takes "
                       "look alike to the net (features in seconds and phase).",
    }
    if lopo:
        card["leave_one_person_out"] = lopo_block(lopo)
    if loo:
        card["leave_one_take_out"] = loo_block(loo)
    card["targets"] = {
        "learned_5pct_below_best_spline_both_rules":
            ("met" if met else "not met")
            + (f": validation {pct(gains)}" if gains else "")
            + (f"; leave-one-take-out {pct(loo_g)}" if loo else "")
            + ("; leave one person out " + ", ".join(
                f"{w} " + " / ".join(f"{v:+.2f}%" for v in g)
                for w, g in lopo["per_person_percent"].items()) if lopo else "")
            + " (salient / uniform; positive = better than the best spline)",
        "never_worse_on_unseen_person": (
            "leave one person out, the issue's rule (5% pooled, no take worse by more than 1%, "
            "rotations never worse than the cubic): " + lopo["verdict"] if lopo else
            "untested: every take is the same person")
            + ("; leave-one-take-out it is " + (
                "better than the best spline on every take with both rules" if not loo_worse else
                f"worse than the best spline on {len(loo_worse)} take/rule pair(s) "
                f"({card['leave_one_take_out']['worse_than_best_spline_on']})") if loo else ""),
        "bounded_by_construction": "met (overshoot 0 on every take; random wild features stay in "
                                   "[0, 1])",
        "cost_per_frame_under_20us": "see docs/BENCHMARKS.md (streaming Track at 60 fps)",
    }
    if old:
        card["previous_model"] = f"the model this one replaced: {summarize_card(old)}"
    return card


if __name__ == "__main__":
    sys.exit(main())
