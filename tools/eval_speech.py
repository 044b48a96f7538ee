"""Measure the speech layer: mouth/voice alignment, viseme rule checks, cost per frame.

    .venv/bin/python tools/eval_speech.py [--takes 200] [--seed 0] [--json out.json] [--plot fig.png]
    .venv/bin/python tools/eval_speech.py --audio-only [--sentences 24] [--json out.json]
    .venv/bin/python tools/eval_speech.py --audio-only [--voices espeak,slt,kal,ked,rms,awb] [--no-labial |
        --labial-model FILE] [--no-closure | --closure-model FILE]
    .venv/bin/python tools/eval_speech.py --plot-audio docs/speech_from_audio.png

Alignment: sentences get TTS-like word timings that the layer has never seen the model of (every
phoneme's length drawn around its intrinsic length with log-normal noise, a per-take speaking rate
of 0.7-1.6x, random pauses, small gaps, a random start offset). With those timings supplied:

* every word that begins with p, b or m must have the lips closed (JawOpen - MouthClose <= 0.05)
  at a 60 fps frame within one frame (16.7 ms) of the word's start; the timing error is the
  distance from the word's start to the nearest closed instant, sampled at 1 kHz (0 when the lips
  are closed at the start);
* every word with a stressed open vowel (AA AE AH AO AW AY) must open the mouth
  (JawOpen - MouthClose >= 0.15) at a frame inside the word.

Rule checks: words spoken in a carrier phrase ("say WORD again") at about 165, 205 and 290 words a
minute (rates 1, 1.25, 1.75): every p/b/m closes the lips, every stressed rounded vowel (UW UH OW)
puckers (MouthPucker >= 0.3), every stressed open vowel opens, every f/v rolls the lower lip
(MouthRollLower >= 0.25).

Against a real voice (when espeak-ng is installed): see :func:`espeak_alignment`.

From the audio (``--audio``, runtime/audio: PocketSphinx + loudness): see :func:`audio_alignment`.
Voices whose phone times are exact (espeak-ng's phoneme events; festival's segment times with the
slt HTS and kal diphone voices), three rates each, the sentences above; the mouth gets the WAV and
the text (forced alignment) or the WAV alone (phone recognition, with the lips' second opinion of
runtime/audio/labial.py unless ``--no-labial``). ``--voices`` adds festival's ked diphone voice and
flite's rms and awb voices (their own segment times). Beside the p/b/m it counts false closures:
t/d/n/k/g with no p/b/m beside them whose middle frame has the lips closed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import channels as C  # noqa: E402
from runtime.animate import phonemes as ph  # noqa: E402
from runtime.animate import speech  # noqa: E402
from runtime.animate.speech import SpeechPlan, compose  # noqa: E402

FPS = 60.0
JAW, CLOSE = C.INDEX["JawOpen"], C.INDEX["MouthClose"]
PUCKER, ROLL = C.INDEX["MouthPucker"], C.INDEX["MouthRollLower"]
CLOSED, OPEN = 0.05, 0.15

SENTENCES = [
    "Maybe the big bad pop band plays at my party.",
    "Please bring me both boxes before Monday morning.",
    "Bob bought a map, but Mary paid for the boat.",
    "My mother made more muffins, perhaps a bit burnt.",
    "Peter Piper picked a peck of pickled peppers.",
    "Put the blue bowl by the bed, and move the big mirror.",
    "I'm not sure, but maybe we can meet by the pier at nine.",
    "Beware the moon, my boy; the path is bumpy and misty.",
    "The market opens at seven, so pack your bag and bring a map.",
    "Hello! My name is Max, and I make music for small games.",
    "Ten people bought popcorn, but the movie was pretty boring.",
    "Bees buzz by the pond, and bats come out after dark.",
    "We could probably build a bridge across the bay by May.",
    "Mind the gap between the platform and the train, please.",
    "Barbara's puppy barked at the mailman every morning.",
    "Pass me the pepper, and put the butter back, Ben.",
    "A man walked his pet bear past the public baths.",
    "Bright blue balloons bobbed above the busy market square.",
    "Perhaps the professor will postpone the exam, maybe not.",
    "Mom baked apple pie, but Paul ate the whole thing in minutes.",
    "Welcome back, traveller. The mountain pass is blocked by snow.",
    "Buy me a pint of milk and a pack of mints, please.",
    "The boat moved past the bay, bumping the pier twice.",
    "Patience, my friend, the best part is about to begin.",
]

WORDLIST = ("bat bee boat book boom bop map mop moon pool pop pub pie pea path bath bomb palm "
            "bubble maybe baby puppy number happy apple simple summer member problem example "
            "food fool shoe blue who you two do zoo soup move group cool rule June through "
            "book good put foot look could would should push full pull wolf woman "
            "go so no show boat coat home note phone old over open road own "
            "father car hot top stop job lot not cop watch want ball call all law saw "
            "cat hat bad sad man plan map at back black hand stand apple after "
            "cut but up bus much such love above money run some come one done "
            "now how out about house mouse down town round sound "
            "my by time like nice five light right high fly try why eye "
            "five very voice have give of off fast fun life leaf wave view "
            "see me tea key we feet meet be the a to it is in thing this that with "
            "jumping prompting embarrass umbrella keyframe lipsync avatar runtime").split()


def lips(frames: np.ndarray) -> np.ndarray:
    return frames[:, JAW] - frames[:, CLOSE]


def tts_timing(text: str, rng: np.random.Generator) -> tuple[list[dict], float]:
    """Word timings shaped like a TTS engine's, from a model the layer does not use."""
    rate = rng.uniform(0.7, 1.6)
    words, t = [], 0.0
    for tok in ph.tokenize(text):
        if tok.kind == "pause":
            t += tok.pause * rng.uniform(0.5, 1.5) / rate
            continue
        seq = ph.pronounce(tok.text)
        base = np.array([speech.DURATIONS[ph.split(p)[0]] for p in seq])
        d = base * rng.lognormal(0.0, 0.35, len(base)) / rate
        start = t
        t += float(d.sum())
        words.append({"word": tok.text, "start": round(start, 4), "end": round(t, 4)})
        t += rng.choice([0.0, rng.uniform(0.0, 0.04), rng.uniform(0.1, 0.5)], p=[0.6, 0.3, 0.1])
    return words, float(rng.uniform(0.0, 0.5))


def alignment(takes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    errors, leads, frame_ok, open_ok = [], [], [], []
    for k in range(takes):
        text = SENTENCES[k % len(SENTENCES)]
        words, offset = tts_timing(text, rng)
        plan = SpeechPlan.from_text(words=words, start=offset)
        d60 = lips(plan.render(FPS))
        t60 = np.arange(len(d60)) / FPS
        fine = lips(plan.render(1000.0))
        t1k = np.arange(len(fine)) / 1000.0
        out = np.zeros(C.COUNT, np.float32)
        ends_in_vowel = {round(p.end, 6) for p in plan.phones if ph.split(p.phoneme)[0] in ph.VOWELS}
        for w in words:
            seq = ph.pronounce(w["word"])
            start, end = w["start"] + offset, w["end"] + offset
            if seq and seq[0] in speech.BILABIALS:
                near = np.abs(t60 - start) <= 1.0 / FPS + 1e-9
                frame_ok.append(bool(d60[near].min() <= CLOSED))
                plan.sample(start, out)
                closed = np.flatnonzero(fine <= CLOSED)
                if out[JAW] - out[CLOSE] <= CLOSED:
                    errors.append(0.0)
                else:
                    errors.append(float(np.abs(t1k[closed] - start).min()) * 1000 if len(closed) else np.inf)
                if round(start, 6) in ends_in_vowel:  # a vowel runs right up to the word: when do lips meet?
                    i = int(round(start * 1000))
                    while i > 0 and fine[i - 1] <= CLOSED:
                        i -= 1
                    leads.append((t1k[i] - start) * 1000)
            if any(ph.split(p)[0] in speech.OPEN_VOWELS and ph.split(p)[1] > 0 for p in seq):
                inside = (t60 >= start) & (t60 <= end)
                open_ok.append(bool(inside.any() and d60[inside].max() >= OPEN))
    e = np.array(errors)
    le = np.array(leads)
    return {
        "takes": takes, "bilabial_word_starts": len(e),
        "closed_within_1_frame": float(np.mean(frame_ok)),
        "error_ms": {"median": float(np.median(e)), "p95": float(np.percentile(e, 95)), "max": float(e.max()),
                     "share_zero": float(np.mean(e == 0))},
        "closure_onset_after_vowel_ms": {"n": len(le), "p5": float(np.percentile(le, 5)),
                                         "median": float(np.median(le)), "p95": float(np.percentile(le, 95))},
        "open_vowel_words": len(open_ok), "opened": float(np.mean(open_ok)),
    }


def rules(rates: tuple[float, ...] = (1.0, 1.25, 1.75)) -> dict:
    counts: dict[str, list[bool]] = {"bilabials_close": [], "rounded_vowels_pucker": [], "open_vowels_open": [],
                                     "fv_roll_lower_lip": []}
    fails: dict[str, set[str]] = {k: set() for k in counts}
    for rate in rates:
        for word in WORDLIST:
            plan = SpeechPlan.from_text(f"Say {word} again.", rate=rate)
            frames = plan.render(FPS)
            d = lips(frames)
            t = np.arange(len(frames)) / FPS
            for p in plan.phones:
                if plan.words[p.word].text != word:
                    continue
                base, stress = ph.split(p.phoneme)
                seg = (t >= p.start - 1 / FPS) & (t <= p.end + 1 / FPS)
                if not seg.any():
                    continue
                checks = []
                if base in speech.BILABIALS:
                    checks.append(("bilabials_close", d[seg].min() <= CLOSED))
                if base in speech.ROUNDED_VOWELS and stress > 0:
                    checks.append(("rounded_vowels_pucker", frames[seg, PUCKER].max() >= 0.3))
                if base in speech.OPEN_VOWELS and stress > 0:
                    checks.append(("open_vowels_open", d[seg].max() >= OPEN))
                if base in ("F", "V"):
                    checks.append(("fv_roll_lower_lip", frames[seg, ROLL].max() >= 0.25))
                for name, ok in checks:
                    counts[name].append(bool(ok))
                    if not ok:
                        fails[name].add(f"{word}@{rate}")
    return {k: {"n": len(v), "pass": float(np.mean(v)) if v else None, "fails": sorted(fails[k])[:12]}
            for k, v in counts.items()}


def cost() -> dict:
    t0 = time.perf_counter()
    ph.load()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    speech.warm()  # Numba kernels: compiled, or loaded from the cache
    warm_s = time.perf_counter() - t0
    text = " ".join(SENTENCES[:8])
    t0 = time.perf_counter()
    for _ in range(5):
        plan = SpeechPlan.from_text(text)
    build_ms = (time.perf_counter() - t0) / 5 * 1000
    n = plan.frames(FPS)
    t0 = time.perf_counter()
    for _ in range(5):
        mouth = plan.render(FPS)
        w = plan.weight(FPS)
    render_us = (time.perf_counter() - t0) / 5 / n * 1e6
    expr = np.zeros((n, C.COUNT), np.float32)
    t0 = time.perf_counter()
    for _ in range(5):
        compose(expr, mouth, w)
    compose_us = (time.perf_counter() - t0) / 5 / n * 1e6
    out = np.empty(speech.K)
    frame = np.zeros(C.COUNT, np.float32)
    times = np.arange(n) / FPS
    t0 = time.perf_counter()
    for t in times:
        plan.apply_at(float(t), frame, out)
    stream_us = (time.perf_counter() - t0) / n * 1e6
    return {"dict_load_s": load_s, "kernel_warm_s": warm_s, "plan_ms": build_ms, "plan_words": len(plan.words),
            "frames": n,
            "render_us_per_frame": render_us, "compose_us_per_frame": compose_us,
            "stream_apply_at_us_per_frame": stream_us}


def _stats(x: list[float]) -> dict:
    a = np.array(x, dtype=float)
    if not len(a):
        return {"n": 0}
    return {"n": len(a), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def espeak_alignment(wpms: tuple[int, ...] = (140, 175, 220)) -> dict:
    """Against a real TTS voice: espeak-ng's word timings in, its audio as the truth.

    Truth for each bilabial the voice makes: for p/b the silent closure before the release (found
    in the audio: the run of near-silent 2 ms windows that ends at espeak's phoneme event), for m
    its phoneme span. The mouth, which sees only word timings, should have the lips closed at the
    middle of that span. The audio-visual lag is the shift that best lines up the mouth's opening
    with the audio's loudness envelope (positive: the mouth trails the voice).
    """
    from runtime import voice

    if not voice.available():
        return {"skipped": "espeak-ng not installed (apt-get install espeak-ng)"}
    err_initial, err_all, coverage, opened, vowel_offsets = [], [], [], [], []
    worst: list[tuple] = []
    for wpm in wpms:
        for text in SENTENCES:
            sp = voice.speak(text, wpm=wpm)
            x = np.frombuffer(sp.pcm, np.int16).astype(np.float64)
            sr = sp.sample_rate
            hop = sr // 500  # 2 ms windows
            rms = np.sqrt((x[: len(x) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1))
            plan = SpeechPlan.from_text(words=sp.words)
            fine = lips(plan.render(1000.0, int(sp.duration * 1000) + 1))
            t1k = np.arange(len(fine)) / 1000.0
            closed = np.flatnonzero(fine <= CLOSED)

            def error_at(t: float, fine: np.ndarray = fine, t1k: np.ndarray = t1k,
                         closed: np.ndarray = closed) -> float:
                i = min(int(round(t * 1000)), len(fine) - 1)
                if fine[i] <= CLOSED:
                    return 0.0
                return float(np.abs(t1k[closed] - t).min()) * 1000 if len(closed) else float("inf")

            names = [n for n, _ in sp.phonemes]
            for k, (name, t) in enumerate(sp.phonemes):
                if name not in ("p", "b", "m"):
                    continue
                if name == "m":
                    a, b = t, sp.phonemes[k + 1][1] if k + 1 < len(names) else t + 0.06
                else:
                    j = int(t * 500) - 1
                    i = j
                    while i > 0 and rms[i - 1] < 200 and (j - i) < 50:
                        i -= 1
                    if j - i < 3:  # no silent closure found in the audio: nothing to measure
                        continue
                    a, b = i / 500, (j + 1) / 500
                if b <= a:
                    continue
                mid = (a + b) / 2
                e = error_at(mid)
                err_all.append(e)
                if e > 1000 / FPS:
                    worst.append((e, text, wpm, name, round(a, 3), round(b, 3)))
                span = (t1k >= a) & (t1k <= b)
                coverage.append(float((fine[span] <= CLOSED).mean()) if span.any() else 0.0)
            for w in sp.words:
                seq = ph.pronounce(w["word"])
                if seq and seq[0] in speech.BILABIALS:
                    err_initial.append(error_at(w["start"]))
                if any(ph.split(p)[0] in speech.OPEN_VOWELS and ph.split(p)[1] > 0 for p in seq):
                    inside = (t1k >= w["start"]) & (t1k <= w["end"])
                    opened.append(bool(inside.any() and fine[inside].max() >= OPEN))
            # the first vowel of each word: where the mouth's plan starts it against the voice's event
            for wi, w in enumerate(plan.words):
                ours = [p.start for p in plan.phones if p.word == wi and ph.split(p.phoneme)[0] in ph.VOWELS]
                theirs = [t for n, t in sp.phonemes if w.start - 1e-3 <= t < w.end and n[0] in "aAeEiIoOuUV03@"]
                if ours and theirs:
                    vowel_offsets.append((ours[0] - theirs[0]) * 1000)
    return {"voice": "espeak-ng en-us", "wpm": list(wpms), "lines": len(wpms) * len(SENTENCES),
            "word_initial_bilabial_error_ms": _stats(err_initial),
            "word_initial_closed_share": float(np.mean(np.array(err_initial) == 0)) if err_initial else None,
            "every_bilabial_error_ms": _stats(err_all),
            "every_bilabial_closed_at_mid_share": float(np.mean(np.array(err_all) == 0)) if err_all else None,
            "every_bilabial_closed_coverage_mean": float(np.mean(coverage)) if coverage else None,
            "open_vowel_words": len(opened), "opened": float(np.mean(opened)) if opened else None,
            "first_vowel_offset_ms": {"median": float(np.median(vowel_offsets)),
                                      "p5": float(np.percentile(vowel_offsets, 5)),
                                      "p95": float(np.percentile(vowel_offsets, 95))},
            "worst_misses": sorted(worst, reverse=True)[:8]}


# -- from the audio ------------------------------------------------------------------------------
ESPEAK_BILABIALS = {"p", "b", "m"}
ESPEAK_OPEN = {"0", "A@", "O:", "V", "a", "aI", "aU", "aa", "A:"}  # lot, start, thought, strut, trap ...
FESTIVAL_BILABIALS = {"p", "b", "m"}
FESTIVAL_OPEN = {"aa", "ae", "ah", "ao", "aw", "ay"}  # festival writes schwa as "ax": not here
FESTIVAL_VOICES = {"slt": "voice_cmu_us_slt_arctic_hts", "kal": "voice_kal_diphone",
                   "ked": "voice_ked_diphone"}  # ked: festvox-kdlpc16k, a voice the lips' net never heard
FLITE_VOICES = ("rms", "awb")  # flite's clustergen voices (Debian flite): another engine, unheard in training
FESTIVAL_STRETCH = (0.8, 1.0, 1.25)  # duration factor: fast, normal, slow
ESPEAK_WPM = (140, 175, 220)


def festival_available() -> bool:
    import shutil

    return shutil.which("festival") is not None


def festival_lines(voice: str, texts: list[str], stretch: float, folder: Path) -> list[tuple[Path, list]]:
    """Synthesise ``texts`` with festival in one batch: [(wav, [(phone, start, end)])]."""
    import subprocess

    fn = FESTIVAL_VOICES[voice]
    # the diphone voice takes Duration_Stretch; the HTS one ignores it and takes hts_engine's -r
    # speed, set after the voice's file has defined its parameter list (the first call loads it)
    script = [f"({fn})"]
    if voice == "slt":
        script += [f"(set! cmu_us_slt_arctic_hts::hts_engine_params (append cmu_us_slt_arctic_hts::hts_engine_params "
                   f"'((\"-r\" {1 / stretch:.4f}))))", f"({fn})"]
    script.append(f"(Parameter.set 'Duration_Stretch {stretch})")
    for i, t in enumerate(texts):
        q = t.replace("\\", " ").replace('"', " ")
        script.append(f'(set! u (utt.synth (Utterance Text "{q}")))'
                      f'(utt.save.wave u "{folder}/{i}.wav" \'riff)(utt.save.segs u "{folder}/{i}.segs")')
    (folder / "batch.scm").write_text("\n".join(script) + "\n")
    subprocess.run(["festival", "--batch", str(folder / "batch.scm")], check=True, capture_output=True,
                   timeout=600)
    out = []
    for i in range(len(texts)):
        segs, t0 = [], 0.0
        for line in (folder / f"{i}.segs").read_text().splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[0] == "#":
                continue
            end = float(parts[0])
            segs.append((parts[2], t0, end))
            t0 = end
        out.append((folder / f"{i}.wav", segs))
    return out


def flite_line(text: str, voice: str, stretch: float, folder: Path) -> tuple[Path, list]:
    """flite speaks ``text`` to a WAV; its own segments' end times (``-psdur``) are the truth."""
    import subprocess

    wav = folder / "f.wav"
    r = subprocess.run(["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}", "-t", text,
                        "-o", str(wav), "-psdur"], capture_output=True, text=True, check=True, timeout=60)
    segs, t0 = [], 0.0
    for item in r.stdout.split():
        name, _, end = item.rpartition(":")
        segs.append((name, t0, float(end)))
        t0 = float(end)
    return wav, segs


def espeak_segments(sp) -> list[tuple[str, float, float]]:
    """espeak-ng's phoneme events -> (phone, start, end); a p/b spans its silent closure (found in
    the audio before the event, as :func:`espeak_alignment` does) up to the next event."""
    x = np.frombuffer(sp.pcm, np.int16).astype(np.float64)
    hop = sp.sample_rate // 500
    rms = np.sqrt((x[: len(x) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1))
    out = []
    ev = sp.phonemes
    for k, (name, t) in enumerate(ev):
        nxt = ev[k + 1][1] if k + 1 < len(ev) else sp.duration
        a = t
        if name in ("p", "b"):
            j = int(t * 500) - 1
            i = j
            while i > 0 and rms[i - 1] < 200 and (j - i) < 50:
                i -= 1
            if j - i >= 3:
                a = i / 500
        out.append((name, a, max(nxt, a)))
    return out


NON_BILABIAL_STOPS = {"t", "d", "n", "k", "g"}  # both synthesisers' names


def frames_for(phones: list, x16: np.ndarray) -> np.ndarray:
    """The 60 fps frames the speech layer makes from recognised ``phones`` of 16 kHz ``x16``, as
    the audio-alone path plays them (for tools that score phones without recognising again)."""
    from runtime.audio import energy, track

    an = track.Analysis(phones, energy.loudness(x16, 16000), len(x16) / 16000, "recognized", x16=x16)
    n = int(len(x16) / 16000 * FPS) + 1
    return an.plan().apply(np.zeros((n, C.COUNT), np.float32), FPS)[:n]


def _score_line(frames: np.ndarray, segs: list, bilabials: set, opens: set
                ) -> tuple[list[bool], list[bool], list[bool]]:
    """(p/b/m closed within a frame of their span, open vowels opened within a frame of theirs,
    t/d/n/k/g with no p/b/m beside them that have the lips closed at their middle: a false closure)."""
    d = lips(frames)
    t = np.arange(len(frames)) / FPS
    closed, opened, false = [], [], []
    for k, (name, a, b) in enumerate(segs):
        near = (t >= a - 1 / FPS - 1e-9) & (t <= b + 1 / FPS + 1e-9)
        if name in bilabials:
            closed.append(bool(near.any() and d[near].min() <= CLOSED))
        elif name in opens:
            opened.append(bool(near.any() and d[near].max() >= OPEN))
        elif name in NON_BILABIAL_STOPS:
            beside = {segs[k - 1][0] if k else "", segs[k + 1][0] if k + 1 < len(segs) else ""}
            if not beside & bilabials:
                i = min(int(round((a + b) / 2 * FPS)), len(d) - 1)
                false.append(bool(d[i] <= CLOSED))
    return closed, opened, false


_FEST_ARPA = {"ax": "AH0", "pau": None, "h#": None}


def festival_truth_plan(segs: list) -> SpeechPlan | None:
    """festival's own segments -> the mouth they imply (exact times; a reference JawOpen)."""
    phones = []
    for name, a, b in segs:
        p = _FEST_ARPA.get(name, name.upper())
        if p is None:
            continue
        if p in ph.VOWELS:
            p += "1"
        if p.rstrip("0123456789") not in speech.PHONEME_VISEMES:
            continue
        phones.append((p, a, b))
    return SpeechPlan.from_phones(phones) if phones else None


def loudness_jaw(db: np.ndarray, n: int) -> np.ndarray:
    """The microphone-VTuber baseline: JawOpen from loudness alone (dB above silence, smoothed
    over 50 ms), sampled at FPS."""
    from runtime.audio import energy

    lvl = np.clip((db - energy.SILENCE_DB) / (energy.REF_DB - energy.SILENCE_DB), 0.0, 1.5)
    k = np.ones(5) / 5
    lvl = np.convolve(lvl, k, mode="same")
    t = np.arange(n) / FPS
    return np.interp(t, np.arange(len(lvl)) * energy.HOP, lvl, right=0.0) * 0.5


def audio_alignment(sentences: list[str] | None = None, voices: tuple[str, ...] = ("espeak", "slt", "kal")) -> dict:
    """Mouth from the audio against the synthesiser's own phone times (see the module docstring).

    Per voice and mode ("text": WAV + text, forced alignment; "audio": WAV alone): the share of
    p/b/m with the lips closed at a 60 fps frame within one frame of the phone's span, the share of
    open vowels with the mouth open inside theirs (±1 frame), and the analysis cost per second of
    audio. For festival, also the correlation of JawOpen with the JawOpen of the mouth made from
    festival's exact segments, from the audio alone and from loudness alone."""
    import tempfile

    from runtime import voice
    from runtime.audio import align, energy, track
    from runtime.audio.wav import read_wav, resample

    sentences = sentences or SENTENCES
    align.warm()
    res: dict = {}
    for vname in voices:
        lines = []  # (samples, rate, text, segs, bilabials, opens, rate label)
        if vname == "espeak":
            if not voice.available():
                res[vname] = {"skipped": "espeak-ng not installed"}
                continue
            for wpm in ESPEAK_WPM:
                for text in sentences:
                    sp = voice.speak(text, wpm=wpm)
                    x = np.frombuffer(sp.pcm, np.int16).astype(np.float32) / 32768
                    lines.append((x, sp.sample_rate, text, espeak_segments(sp), ESPEAK_BILABIALS, ESPEAK_OPEN,
                                  f"{wpm}wpm"))
        elif vname in FLITE_VOICES:
            import shutil

            if shutil.which("flite") is None:
                res[vname] = {"skipped": "flite not installed (apt-get install flite)"}
                continue
            for stretch in FESTIVAL_STRETCH:
                for text in sentences:
                    with tempfile.TemporaryDirectory() as tmp:
                        wav, segs = flite_line(text, vname, stretch, Path(tmp))
                        x, sr = read_wav(wav)
                    lines.append((x, sr, text, segs, FESTIVAL_BILABIALS, FESTIVAL_OPEN, f"stretch{stretch}"))
        else:
            if not festival_available():
                res[vname] = {"skipped": "festival not installed (apt-get install festival festvox-us-slt-hts "
                                         "festvox-kallpc16k)"}
                continue
            for stretch in FESTIVAL_STRETCH:
                with tempfile.TemporaryDirectory() as tmp:
                    for wav, segs in festival_lines(vname, sentences, stretch, Path(tmp)):
                        x, sr = read_wav(wav)
                        lines.append((x, sr, sentences[len(lines) % len(sentences)], segs, FESTIVAL_BILABIALS,
                                      FESTIVAL_OPEN, f"stretch{stretch}"))
        out: dict = {"lines": len(lines)}
        for mode in ("text", "audio"):
            closed, opened, false, cost, audio_s, methods = [], [], [], 0.0, 0.0, {}
            by_rate: dict[str, list] = {}
            r_audio, r_loud = [], []
            for x, sr, text, segs, bil, opens, label in lines:
                t0 = time.perf_counter()
                an = track.analyse(x, sr, text if mode == "text" else None)
                plan = an.plan()
                cost += time.perf_counter() - t0
                audio_s += len(x) / sr
                methods[an.method] = methods.get(an.method, 0) + 1
                n = int(len(x) / sr * FPS) + 1
                frames = plan.apply(np.zeros((n, C.COUNT), np.float32), FPS)[:n]
                c, o, f = _score_line(frames, segs, bil, opens)
                closed += c
                opened += o
                false += f
                br = by_rate.setdefault(label, [[], [], []])
                br[0] += c
                br[1] += o
                br[2] += f
                if mode == "audio" and vname != "espeak":
                    truth = festival_truth_plan(segs)
                    if truth is not None:
                        tj = truth.apply(np.zeros((n, C.COUNT), np.float32), FPS)[:n, JAW]
                        db = energy.loudness(resample(x, sr, 16000), 16000)
                        r_audio.append(float(np.corrcoef(frames[:, JAW], tj)[0, 1]))
                        r_loud.append(float(np.corrcoef(loudness_jaw(db, n), tj)[0, 1]))
            m = {"bilabials": len(closed), "closed_within_1_frame": float(np.mean(closed)) if closed else None,
                 "open_vowels": len(opened), "opened": float(np.mean(opened)) if opened else None,
                 "tdnkg": len(false), "false_closed": float(np.mean(false)) if false else None,
                 "by_rate": {k: {"closed": float(np.mean(v[0])) if v[0] else None,
                                 "opened": float(np.mean(v[1])) if v[1] else None,
                                 "false_closed": float(np.mean(v[2])) if v[2] else None}
                             for k, v in by_rate.items()},
                 "analysis_s_per_audio_s": cost / audio_s if audio_s else None, "methods": methods}
            if r_audio:
                m["jaw_r_vs_exact_segments"] = {"from_audio": float(np.median(r_audio)),
                                                "loudness_only": float(np.median(r_loud))}
            out[mode] = m
        res[vname] = out
    return res


def plot_line(path: Path, text: str = "Maybe my big brother can help, pal; the moon is bright.") -> None:
    """One espeak-ng line: the voice's loudness, the mouth's lip gap and pucker, word starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime import voice

    sp = voice.speak(text, wpm=165)
    x = np.frombuffer(sp.pcm, np.int16).astype(np.float64) / 32768
    hop = sp.sample_rate // 200
    loud = np.sqrt((x[: len(x) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1))
    plan = SpeechPlan.from_text(words=sp.words)
    frames = plan.render(FPS)
    t = np.arange(len(frames)) / FPS
    fig, ax = plt.subplots(figsize=(12, 4.6), dpi=90)
    ax.fill_between(np.arange(len(loud)) / 200, 0, loud / loud.max(), color="0.85", label="voice loudness (espeak-ng)")
    ax.plot(t, lips(frames), lw=1.8, label="JawOpen − MouthClose (lips touch ≤ 0.05)")
    ax.plot(t, frames[:, PUCKER], lw=1.4, label="MouthPucker")
    ax.plot(t, frames[:, ROLL], lw=1.2, label="MouthRollLower")
    ax.axhline(CLOSED, color="k", lw=0.6, ls=":")
    for w in sp.words:
        ax.axvline(w["start"], color="0.5", lw=0.6)
        ax.text(w["start"] + 0.005, 1.02, w["word"], fontsize=8, rotation=30, va="bottom")
    for name, tt in sp.phonemes:
        if name in ("p", "b", "m"):
            ax.plot([tt], [-0.04], marker="^", color="crimson", ms=5)
    ax.set_xlabel("seconds (▲: p/b/m events in the voice; grey lines: word starts given to the mouth)")
    ax.set_ylim(-0.08, 1.15)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_audio_line(path: Path, text: str = "Maybe my big brother can help, pal; the moon is bright.") -> None:
    """One festival (kal) line: loudness, the lip gap from the audio with the text and without it,
    JawOpen from loudness alone, and festival's own p/b/m spans."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.audio import energy, track
    from runtime.audio.wav import read_wav, resample

    with tempfile.TemporaryDirectory() as tmp:
        (wav, segs), = festival_lines("kal", [text], 1.0, Path(tmp))
        x, sr = read_wav(wav)
    n = int(len(x) / sr * FPS) + 1
    t = np.arange(n) / FPS
    db = energy.loudness(resample(x, sr, 16000), 16000)
    fig, ax = plt.subplots(figsize=(12, 4.6), dpi=90)
    lv = np.clip((db - energy.SILENCE_DB) / (0 - energy.SILENCE_DB), 0, 1)
    ax.fill_between(np.arange(len(lv)) * energy.HOP, 0, lv, color="0.85", label="voice loudness (festival kal)")
    for label, txt, lw in (("with the text (aligned)", text, 1.8), ("audio alone (recognised)", None, 1.2)):
        frames = track.analyse(x, sr, txt).plan().apply(np.zeros((n, C.COUNT), np.float32), FPS)[:n]
        ax.plot(t, lips(frames), lw=lw, label=f"JawOpen − MouthClose, {label}")
    ax.plot(t, loudness_jaw(db, n), lw=1.0, ls="--", label="JawOpen from loudness alone")
    ax.axhline(CLOSED, color="k", lw=0.6, ls=":")
    for name, a, b in segs:
        if name in FESTIVAL_BILABIALS:
            ax.plot([a, b], [-0.04, -0.04], color="crimson", lw=3)
    ax.set_xlabel("seconds (red: festival's own p/b/m spans; dotted: lips touch below 0.05)")
    ax.set_ylim(-0.08, 1.05)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--takes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-espeak", action="store_true", help="skip the real-voice check")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="also draw one espeak-ng line to this PNG")
    ap.add_argument("--audio", action="store_true", help="also the mouth from audio (espeak-ng, festival)")
    ap.add_argument("--audio-only", action="store_true", help="only the mouth from audio")
    ap.add_argument("--sentences", type=int, default=len(SENTENCES), help="--audio: how many of the sentences")
    ap.add_argument("--plot-audio", type=Path, help="draw one festival line's mouth from audio to this PNG, exit")
    ap.add_argument("--phone-lw", type=float, default=None,
                    help="--audio: the phone recogniser's language-model weight (runtime.audio.align.PHONE_LW)")
    ap.add_argument("--labial-model", type=Path, default=None,
                    help="--audio: the lips' second opinion from this model (default exported_models/labial.json)")
    ap.add_argument("--no-labial", action="store_true",
                    help="--audio: phones as the recogniser heard them, no second opinion (the figures before it)")
    ap.add_argument("--closure-model", type=Path, default=None,
                    help="--audio: the closure detector from this model (default exported_models/closure.json)")
    ap.add_argument("--no-closure", action="store_true",
                    help="--audio: no closures put in by the detector (the figures before it)")
    ap.add_argument("--voices", default="espeak,slt,kal", help="--audio: which voices (comma-separated)")
    args = ap.parse_args()
    if args.no_closure or args.closure_model:
        from runtime.audio import closure

        closure.use(None if args.no_closure else args.closure_model)
    if args.no_labial or args.labial_model:
        from runtime.audio import labial

        labial.use(None if args.no_labial else args.labial_model)
    if args.phone_lw is not None:
        from runtime.audio import align

        align.PHONE_LW = args.phone_lw  # read when a decoder is built
    if args.plot_audio:
        plot_audio_line(args.plot_audio)
        return 0
    if args.audio_only:
        result = {"audio": audio_alignment(SENTENCES[: args.sentences], tuple(args.voices.split(",")))}
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    if args.plot:
        plot_line(args.plot)
    c = cost()  # first: it times the dictionary load
    a = alignment(args.takes, args.seed)
    r = rules()
    result = {"alignment": a, "rules": r, "cost": c}
    if not args.no_espeak:
        result["espeak"] = espeak_alignment()
    if args.audio:
        result["audio"] = audio_alignment(SENTENCES[: args.sentences], tuple(args.voices.split(",")))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = (a["closed_within_1_frame"] == 1.0 and a["opened"] == 1.0
          and all(v["pass"] == 1.0 for v in r.values() if v["pass"] is not None))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
