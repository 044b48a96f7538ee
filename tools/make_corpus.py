#!/usr/bin/env python3
"""Synthetic training pairs (text -> the answer the runtime's prompt expects) from phrase banks.

Each emotion has several *phrase families* (verbs, idioms, adjectives, speech, situations); a
sentence is composed from a subject, a phrase, an optional intensity adverb and setting, optional
quoted speech, and for sequences a connective ("then", "but suddenly", "at first ... later") and a
second beat. The answer is the runtime's own format (:func:`runtime.generate.prompt.answer`): the
feeling line, then keyframes with onset, apex and release timing and natural variation; for a
sequence, the keyframes of both beats in order with the switch where the text puts it.

Whole families are held out (``--holdout``): their pairs go to a separate file, so a model trained
on the rest can be checked on wording it has never seen. Nothing here comes from an evaluation set.

    .venv/bin/python tools/make_corpus.py --n 3000 --out /tmp/corpus --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.generate import prompt as prompts  # noqa: E402

# emotion -> family -> phrases (a phrase follows a subject: "She" + " laughs out loud")
BANKS: dict[str, dict[str, list[str]]] = {
    "joy": {
        "laugh": ["laughs out loud", "cracks up", "giggles", "chuckles warmly", "roars with laughter"],
        "smile": ["smiles", "beams", "grins widely", "breaks into a smile", "lights up"],
        "state": ["is overjoyed", "is delighted", "feels on top of the world", "is thrilled", "glows with pride"],
        "event": ["opens the perfect present", "hears the good news", "wins the raffle", "sees an old friend"],
    },
    "sadness": {
        "cry": ["cries", "weeps quietly", "sobs", "fights back tears", "wipes away a tear"],
        "posture": ["hangs their head", "stares at the floor", "slumps in the chair", "sighs heavily"],
        "state": ["is heartbroken", "feels so alone", "is crushed", "is devastated", "misses home"],
        "event": ["reads the goodbye note", "hears the dog has died", "loses the last match",
                  "packs up the empty room"],
    },
    "surprise": {
        "react": ["gasps", "jumps back", "does a double take", "blinks in disbelief", "stops dead"],
        "face": ["raises both eyebrows", "stares wide-eyed", "lets the jaw drop", "goes wide-eyed"],
        "state": ["is stunned", "is astonished", "can't believe it", "is taken aback", "is amazed"],
        "event": ["finds a surprise party", "opens the door to a crowd", "sees the snow in June"],
    },
    "fear": {
        "body": ["trembles", "freezes", "backs away slowly", "holds their breath", "shrinks into the corner"],
        "state": ["is terrified", "is scared stiff", "panics", "is frightened", "feels dread creeping in"],
        "event": ["hears footsteps behind them", "sees a shadow at the window", "feels the ground shake"],
        "speech": ["whispers that something is out there", "begs them not to leave", "screams for help"],
    },
    "anger": {
        "act": ["slams the door", "bangs the table", "clenches a fist", "glares", "storms out"],
        "speech": ["yells at the manager", "snaps at everyone", "shouts across the room", "curses loudly"],
        "state": ["is furious", "is livid", "is fuming", "loses their temper", "sees red"],
        "event": ["finds the car scratched", "gets cut off in traffic", "is lied to again"],
    },
    "disgust": {
        "react": ["gags", "wrinkles their nose", "spits it out", "recoils", "pushes the plate away"],
        "state": ["is grossed out", "is revolted", "feels sick", "is repulsed", "finds it vile"],
        "event": ["smells the rotten eggs", "finds a worm in the apple", "steps in something slimy"],
    },
    "contempt": {
        "face": ["rolls their eyes", "smirks", "sneers", "looks down their nose", "curls a lip"],
        "speech": ["scoffs at the idea", "mocks the beginner", "dismisses the plan with a wave"],
        "state": ["is unimpressed", "feels superior", "is smug", "finds them beneath notice"],
    },
    "neutral": {
        "routine": ["waits for the train", "types a report", "reads the menu", "folds the laundry"],
        "state": ["is calm", "listens quietly", "looks relaxed", "keeps a straight face"],
    },
}
SUBJECTS = ["She", "He", "The old man", "The girl", "My sister", "The captain", "Our neighbour", "The teacher",
            "I", "The boy", "Grandma", "The waiter", "They"]
ADVERBS = {"": 0, "suddenly ": 1, "really ": 1, "a little ": -2, "slightly ": -2, "completely ": 1, "quietly ": -1}
SETTINGS = ["", " at the station", " in the kitchen", " after the meeting", " in the rain", " at the party",
            " on the phone", " in class"]
CONNECTIVES = ["{a}, then {b}.", "{a}, but suddenly {b}.", "At first {a}, later {b}.", "{a}; moments later {b}.",
               "{a} before {b}.", "{a}, and then {b}."]
ALIASES = {  # words the keyframes may use for each emotion besides its own name
    "joy": ["joy", "happy", "smile", "laugh", "grin", "beam"], "sadness": ["sadness", "sad", "tears", "cry", "grief"],
    "surprise": ["surprise", "shock", "gasp", "amazed", "startled"], "fear": ["fear", "scared", "afraid", "terrified"],
    "anger": ["anger", "angry", "furious", "annoyed", "rage"], "disgust": ["disgust", "gross", "disgusted", "revolted"],
    "contempt": ["contempt", "scorn", "sneer", "smug", "disdain"], "neutral": ["neutral", "calm", "rest"],
}
ACTIONS = {"surprise": "blink", "sadness": "lookdown", "contempt": "smirk", "anger": "squint", "neutral": "blink"}


def _third_person(subject: str, phrase: str) -> str:
    if subject.lower() in ("i", "they"):  # "laughs" -> "laugh", "is" -> "am/are" (enough for short phrases)
        first, _, rest = phrase.partition(" ")
        verb = {"is": "am" if subject == "I" else "are", "has": "have", "does": "do"}.get(first)
        if verb is None:
            cut = 2 if first.endswith(("ches", "shes", "sses")) else 1 if first.endswith("s") else 0
            verb = first[: len(first) - cut]
        phrase = f"{verb} {rest}".strip()
        phrase = phrase.replace("their", "my" if subject == "I" else "their")
    return phrase


def keyframes(rng: random.Random, emotion: str, strength: int, start_gap: int | None = None) -> list[str]:
    """Onset, apex, release for one beat: "<tenths> <word> <level>" lines."""
    words = ALIASES[emotion]
    if emotion == "neutral":
        lines = [f"{rng.randint(3, 6)} neutral 0", f"{rng.randint(4, 7)} {rng.choice(words)} {rng.randint(0, 2)}"]
        if rng.random() < 0.5:
            lines.append(f"{rng.randint(3, 6)} blink 9")
        return lines
    apex = max(4, min(9, 7 + strength + rng.randint(-1, 1)))
    gap = start_gap if start_gap is not None else rng.randint(1, 4)
    out = [f"{gap} {emotion} {max(2, apex - rng.randint(2, 4))}",
           f"{rng.randint(2, 5)} {rng.choice(words)} {apex}"]
    if emotion in ACTIONS and rng.random() < 0.3:
        out[-1] += f" {ACTIONS[emotion]} {rng.randint(3, 9)}"
    out.append(f"{rng.randint(4, 7)} {rng.choice(words)} {max(2, apex - rng.randint(1, 3))}")
    return out


def beat(rng: random.Random, emotion: str, families: dict[str, list[str]], subject: str | None = None):
    family = rng.choice(sorted(families))
    phrase = rng.choice(families[family])
    verbal = not phrase.startswith(("is ", "feels ", "can't ", "finds ", "looks "))
    adverb = rng.choice(list(ADVERBS)) if emotion != "neutral" and verbal else ""
    subject = subject or rng.choice(SUBJECTS)
    text = f"{subject} {adverb}{_third_person(subject, phrase)}"
    return text, family, ADVERBS[adverb]


def pair(rng: random.Random, banks: dict[str, dict[str, list[str]]]) -> dict:
    emotions = sorted(banks)
    first = rng.choice(emotions)
    text, fam, strength = beat(rng, first, banks[first])
    if rng.random() < 0.35:  # a sequence of two beats
        second = rng.choice([e for e in emotions if e != first])
        text2, fam2, strength2 = beat(rng, second, banks[second], subject=rng.choice(["he", "she", "they"]))
        a = text[0].lower() + text[1:] if text.startswith(("At", "at")) else text
        sentence = rng.choice(CONNECTIVES).format(a=a, b=text2)
        sentence = sentence[0].upper() + sentence[1:]
        beats = [(first, strength), (second, strength2)]
        families = [f"{first}/{fam}", f"{second}/{fam2}"]
    else:
        sentence = f"{text}{rng.choice(SETTINGS)}."
        if rng.random() < 0.15:
            sentence += f' "{rng.choice(["Really?", "No way.", "Oh.", "Look at this!", "Not again."])}"'
        beats = [(first, strength)]
        families = [f"{first}/{fam}"]
    context = emotion_hint = ""
    if len(beats) == 1 and rng.random() < 0.1:  # the emotion field overrides a neutral text
        emotion_hint = rng.choice([e for e in emotions if e != "neutral"])
        beats = [(emotion_hint, 0)]
    # The runtime prompts each clause of a sequence on its own (prompts.clauses), so a sequence
    # teaches one (prompt, answer) per clause, exactly as they will be asked.
    parts = prompts.clauses(sentence) if len(beats) > 1 else [sentence]
    if len(parts) != len(beats):
        parts = [sentence] * len(beats)
    examples = []
    for i, ((emo, st), part) in enumerate(zip(beats, parts)):
        lines = keyframes(rng, emo, st, start_gap=None if i == 0 else rng.randint(1, 3))
        req = prompts.LineRequest(text=part, context=context, emotion=emotion_hint)
        examples.append({"prompt": prompts.line_part(req),
                         "answer": prompts.answer(prompts.FEELINGS[emo][0], "\n".join(lines) + "\n")[
                             len(prompts.FEEL):]})
    return {"text": sentence, "emotion": emotion_hint, "expect": [b[0] for b in beats], "families": families,
            "examples": examples}


def split_banks(holdout: list[str]) -> tuple[dict, dict]:
    """(training banks, held-out banks): each held-out "emotion/family" only in the second."""
    train: dict[str, dict[str, list[str]]] = {}
    held: dict[str, dict[str, list[str]]] = {}
    for emo, fams in BANKS.items():
        for fam, phrases in fams.items():
            (held if f"{emo}/{fam}" in holdout else train).setdefault(emo, {})[fam] = phrases
    for emo in BANKS:  # a held-out emotion still needs some family for the other beat
        held.setdefault(emo, train[emo])
    return train, held


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="training pairs")
    ap.add_argument("--heldout-n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", default="joy/state,sadness/posture,surprise/face,fear/speech,anger/event,"
                    "disgust/event,contempt/speech", help="emotion/family list kept out of training")
    ap.add_argument("--out", required=True, help="folder for train.jsonl and heldout.jsonl")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    train, held = split_banks([h for h in args.holdout.split(",") if h])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.jsonl", "w") as f:
        for _ in range(args.n):
            f.write(json.dumps(pair(rng, train)) + "\n")
    with open(out / "heldout.jsonl", "w") as f:
        n = 0
        while n < args.heldout_n:
            p = pair(rng, held)
            if any(fam in args.holdout.split(",") for fam in p["families"]):
                f.write(json.dumps(p) + "\n")
                n += 1
    print(f"wrote {args.n} training pairs and {args.heldout_n} held-out pairs to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
