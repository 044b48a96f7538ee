"""A line -> its beats: the parts that each carry one feeling, in order, each read by the feeling model.

A line is cut into sentences (:func:`runtime.text.split_sentences`) and each sentence at the
connectives that tell a sequence in a stage direction (:func:`prompt.clauses`: "laughs, then looks
worried"). In a stage direction a clause after a connective starts a new beat when the feeling model
reads another feeling in it; so does a sentence that opens with a turn word ("Wait,", "But hey,", "Now,");
any other sentence (or, in speech, clause) only when it reads another feeling with some confidence
(``change``): "Ha! You fell right in the mud! Wait, are you bleeding?" is joy, then fear, while "Keep
your ticket until the end of the journey" stays one calm beat. Otherwise a piece joins the beat
before. Each beat is one request to the keyframe model, carrying the feeling model's reading as a
prior (``LineRequest.prior``) and the line's intensity. In speech a beat is heard within its line
(:class:`Rules`): its reading mixes in the whole line's, and a feeling in passing peaks below the
line's own.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from runtime.generate import prompt as prompts
from runtime.generate.prompt import LineRequest
from runtime.text import split_sentences
from runtime.text.feeling import Feeling, FeelingModel, intensity, is_narration

_WORDS = re.compile(r"[A-Za-z0-9']+")


NARRATION = 0.2  # how much the feeling model's calm-or-not reading counts in a stage direction


def _sub(req: LineRequest, text: str, feeling: Feeling | None) -> LineRequest:
    sub = replace(req, text=text)
    if feeling is not None:
        lp = feeling.log_prior()
        if is_narration(req.text):
            # The feeling model learned from speech and reads narration with confidence but badly
            # ("Her jaw drops when the curtain reveals the prize": contempt); a stage direction
            # names its feeling for the keyframe model to read. Only whether a feeling shows at
            # all comes from the reading there ("She reads out the agenda in a flat voice").
            other = math.log(max(1.0 - feeling.probs.get("neutral", 0.0), 1e-4))
            lp = {k: NARRATION * (v if k == "neutral" else other) for k, v in lp.items()}
        sub.prior = lp
        sub.intensity = feeling.intensity
        sub.spoken = not is_narration(req.text)
    return sub


# a sentence that opens with one of these turns the line ("This soup is delicious. Wait, is that a
# cockroach?", "We lost. But hey, nobody got hurt."): like a clause after a connective, it starts a
# beat whenever it is read as another feeling, however sure the reading
_TURN = re.compile(r"(?i)^\W*(?:wait|hold on|hang on|but|now|oh no|uh[- ]oh|then|suddenly|actually|anyway|"
                   r"still|and yet|although|though|except|meanwhile|on the other hand|then again)\b")


@dataclass(frozen=True)
class Rules:
    """How a line is cut into beats and how each beat's reading is shown (config.toml [feeling]).
    Chosen on our own held-out lines and turns and GoEmotions dev (docs/BENCHMARKS.md, issue 16)."""

    change: float = 0.85  # a sentence starts a beat when read as another feeling this surely
    blend: float = 0.4  # share of the whole line's reading in each beat's (log-linear)
    keep: float = 0.7  # a beat read at least this surely keeps its own feeling whatever the blend
    aside: float = 0.5  # a beat of another feeling than the line's peaks this far below the line's own


DEFAULT = Rules()
SHORT = 3  # words: a sentence shorter than this ("Ha!", "Best.", "No way.") is read with its neighbour


def _whole_sentences(sentences: list[str]) -> list[str]:
    """Sentences with the very short ones joined to the next (the last to the one before): "Best.
    Birthday. Ever." is one exclamation, "Ha! You fell in the mud!" one laugh."""
    out: list[str] = []
    carry = ""
    for s in sentences:
        s = f"{carry} {s}" if carry else s
        carry = s if len(_WORDS.findall(s)) < SHORT else ""
        if not carry:
            out.append(s)
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def plan(req: LineRequest, feeling: FeelingModel | None, *, split: bool = True, most: int = 3,
         rules: Rules = DEFAULT, anchor: float | None = None) -> list[LineRequest]:
    """The beats of ``req`` as requests (at most ``most``; more fold into the last).

    ``rules.change``: the probability the feeling model must give a sentence's own feeling, other
    than the beat's so far, for that sentence to start a new beat. ``anchor`` (an experiment of
    tools/sim_beats.py, off in the runtime: it cost turns whose feeling changes): such a sentence
    starts one only while the whole line's own reading is below it.
    """
    if not split:
        return [_sub(req, req.text, feeling.classify(req.text, req.heard) if feeling else None)]
    if feeling is None:  # no reader of feelings: only the stage-direction connectives cut
        return [_sub(req, c, None) for c in prompts.clauses(req.text, most)]
    # (text, cuts on any change): a clause after a connective in a stage direction, or a sentence
    # after a turn word, starts a beat when it is read as another feeling at all; anything else
    # only when read as another feeling with some confidence. In speech the connectives are
    # ordinary words ("keep your ticket until the end of the journey").
    told = is_narration(req.text)
    pieces: list[tuple[str, bool]] = []
    for s in _whole_sentences(split_sentences(req.text) or [req.text]):
        cut = prompts.clauses(s, most)
        # a sentence of one clause stays whole: its "?!" is part of how it sounds
        turn = bool(pieces) and bool(_TURN.match(s))
        pieces += [(s, turn)] if len(cut) == 1 else [(c, (k > 0 and told) or turn) for k, c in enumerate(cut)]
    read: dict[tuple[str, bool], Feeling] = {}

    def classify(text: str) -> Feeling:  # each text read once (a one-sentence line: one call)
        # the whole line of speech by every reader; its parts (where the line may turn) and stage
        # directions (where the reader only tells calm from not, at a fifth of the weight) by the
        # quick one: the MPNet beside the graph costs ~25 ms a read, and lines at once queue on it
        key = (text, text != req.text or told)
        if key not in read:
            read[key] = feeling.classify(text, req.heard, quick=key[1])
        return read[key]

    groups: list[list[str]] = []
    turned: list[bool] = []  # a turn word opened this beat or one before it: the line has changed
    label = ""
    change = rules.change
    if anchor is not None:
        whole = classify(req.text)
        if whole.probs[whole.label] >= anchor:
            change = math.inf  # read surely as one feeling: only a turn word or connective cuts
    for text, after_connective in pieces:
        got = classify(text)
        new = got.label != label and (after_connective or got.probs[got.label] >= change)
        if not groups or new:
            groups.append([text])
            turned.append(after_connective or bool(turned and turned[-1]))
            label = got.label
        else:
            groups[-1].append(text)
    if len(groups) > most:
        groups = groups[: most - 1] + [[t for g in groups[most - 1:] for t in g]]
        turned = turned[:most]
    if len(groups) == 1:
        return [_sub(req, req.text, classify(req.text))]
    if told:  # a stage direction names each feeling in its order ("She gasps at the gift, then bursts
        return [_sub(req, " ".join(g), classify(" ".join(g))) for g in groups]  # into tears"): as read
    whole = classify(req.text)
    felt = [_heard_within(" ".join(g), classify(" ".join(g)), whole, rules) for g in groups]
    main = [f.intensity for f in felt if f.label == whole.label]
    if rules.aside > 0 and main and whole.label != "neutral":
        # a feeling in passing peaks below the line's own: "You got the job? That's wonderful!" is
        # joy after a flash of surprise. A beat opened by a turn word is the line changing ("...
        # Wait, why is your arm bent like that? Call an ambulance!"): it and what follows show in full.
        top = max(main) - rules.aside
        felt = [f if f.label in (whole.label, "neutral") or turn
                else replace(f, intensity=max(0.1, min(f.intensity, top))) for f, turn in zip(felt, turned)]
    return [_sub(req, " ".join(g), f) for g, f in zip(groups, felt)]


def _heard_within(text: str, own: Feeling, whole: Feeling, rules: Rules) -> Feeling:
    """A beat's reading as heard within its line: its own and the whole line's, mixed log-linearly
    ("That's beyond creepy." alone is not sure what it is; after "He's been hitting on his student."
    it is disgust). A beat read surely (``rules.keep``) keeps its own feeling: "I was so happy at the
    party, but suddenly I felt terribly sad" starts happy."""
    if rules.blend <= 0:
        return own
    b = rules.blend
    lp = {k: (1 - b) * math.log(max(v, 1e-6)) + b * math.log(max(whole.probs.get(k, 0.0), 1e-6))
          for k, v in own.probs.items()}
    top = max(lp.values())
    z = sum(math.exp(v - top) for v in lp.values())
    probs = {k: math.exp(v - top) / z for k, v in lp.items()}
    label = max(probs, key=probs.__getitem__)
    if label != own.label and own.probs[own.label] >= rules.keep:
        return own
    return Feeling(label, probs, intensity(text, probs))
