"""The closure detector (runtime/audio/closure.py): p/b/m the phone recogniser did not hear at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.audio import align, closure, labial, resample
from runtime.audio.align import TimedPhone

MODEL = Path(__file__).resolve().parents[1] / "exported_models" / "closure.json"
FRAME = 1 / 60
# Not a sentence of tools/eval_speech.py nor of the training text (random cmudict sentences):
# p/b/m at the line's start (espeak-ng's WAV starts at the closure) and inside vowels
LINE = "Bob may pay me by Monday, maybe a bit more."


def _fake(threshold: float = 0.5, min_frames: int = 2, rename: bool = False) -> closure.Detector:
    n = closure.nfeat()
    net = {"mean": [0.0] * n, "std": [1.0] * n, "w1": [[0.0]] * n, "b1": [0.0], "w2": [0.0], "b2": 0.0}
    return closure.Detector({"members": [net], "threshold": threshold, "min_frames": min_frames,
                             "rename": rename})


def _p(n: int, on: list[tuple[int, int]]) -> np.ndarray:
    p = np.zeros(n, np.float32)
    for a, b in on:
        p[a:b] = 0.99
    return p


def test_a_closure_heard_inside_a_vowel_cuts_a_b_into_it() -> None:
    phones = [TimedPhone("AA1", 0.10, 0.40), TimedPhone("T", 0.40, 0.46)]
    out = closure.insert(phones, _p(60, [(20, 26)]), _fake())
    assert [q.phone for q in out] == ["AA1", "B", "AA1", "T"]
    b = out[1]
    assert b.start == pytest.approx(0.195) and b.end == pytest.approx(0.255)
    assert out[0].end == b.start and out[2].start == b.end  # the vowel is cut, nothing overlaps


def test_a_closure_in_the_silence_before_a_phrase_is_put_there() -> None:
    phones = [TimedPhone("AY1", 0.12, 0.30)]  # the recogniser starts at the release
    out = closure.insert(phones, _p(40, [(3, 11)]), _fake())
    assert [q.phone for q in out] == ["B", "AY1"] and out[0].end <= 0.12 + 1e-9


def test_what_the_detector_leaves_alone() -> None:
    phones = [TimedPhone("M", 0.10, 0.18), TimedPhone("AA1", 0.18, 0.40), TimedPhone("N", 0.40, 0.48)]
    p = _p(60, [(12, 16), (42, 47)])  # over a recognised M; over a recognised N
    assert closure.insert(phones, p, _fake()) == phones  # the N is the second opinion's to judge
    assert [q.phone for q in closure.insert(phones, p, _fake(rename=True))] == ["M", "AA1", "M"]
    short = _p(60, [(25, 26)])  # one frame: under min_frames
    assert closure.insert(phones, short, _fake()) == phones
    assert closure.insert(phones, _p(60, [(20, 30)]) * 0.5, _fake(threshold=0.6)) == phones


def test_a_run_still_open_at_a_streams_last_frame_waits() -> None:
    p = _p(30, [(25, 30)])
    assert closure.runs(p, 0.5, 2, complete=False) == []
    assert closure.runs(p, 0.5, 2, complete=True) == [(25, 30)]


def _espeak_line(text: str):
    from runtime import voice

    if not voice.available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    sp = voice.speak(text, wpm=175)
    x = np.frombuffer(sp.pcm, np.int16).astype(np.float32) / 32768
    return resample(x, sp.sample_rate, align.RATE), sp


def test_streamed_frames_are_the_whole_clips_frames() -> None:
    """A stream computes each frame once, when 80 ms after it is in; it must reach the same verdicts
    as the whole clip, or the live mouth and the final one would differ."""
    det = closure.detector()
    assert det is not None  # the shipped model, exported_models/closure.json
    x16, _ = _espeak_line(LINE)
    whole = closure.Frames().update(x16, det, complete=True)
    f = closure.Frames()
    seen = []
    for i in range(0, len(x16), 1600):
        p = f.update(x16[: i + 1600], det, complete=i + 1600 >= len(x16))
        seen.append(len(p))
    assert seen[0] < seen[-1] == len(whole)  # it grows with the audio ...
    assert len(f.update(x16[:4000], det, complete=False)) == len(whole)  # ... and never shrinks
    np.testing.assert_allclose(f.p, whole, atol=1e-5)
    assert (whole > det.threshold).any()  # it hears closures in this line at all


def test_without_the_text_the_detector_shuts_the_lips_the_recogniser_left_open() -> None:
    """espeak-ng's first p/b/m starts with its silent closure (no lead-in) and its m often sounds to
    the recogniser like a vowel: no consonant for the second opinion to rename. The detector puts
    closures there, in a whole clip and in a stream, and not over the voice's t/d/n/k/g."""
    x16, sp = _espeak_line(LINE)
    det = closure.detector()
    heard = labial.relabel(x16, align.recognize(x16, second_pass=False))
    ours = closure.closures(x16, heard, model=det)
    events = [t for n, t in sp.phonemes if n in ("p", "b", "m")]

    def found(phones: list) -> int:  # p/b/m of the voice with a recognised/put-in one within a frame
        closes = [(q.start, q.end) for q in phones if q.phone in ("P", "B", "M")]
        return sum(any(a - 0.05 - FRAME <= t <= b + FRAME for a, b in closes) for t in events)

    assert found(ours) > found(heard), (found(heard), found(ours), len(events))
    new = [q for q in ours if q not in heard]
    put_in = [q for q in new if q.phone == "B"]
    assert put_in and {q.phone for q in new if q.phone != "B"} <= {q.phone for q in heard}  # and cut vowels
    stops = [t for n, t in sp.phonemes if n in ("t", "d", "n", "k", "g")]
    assert not any(q.start <= t <= q.end for q in put_in for t in stops)

    def streamed() -> list:
        stream = align.PhoneStream()
        for i in range(0, len(x16), 1600):
            stream.feed(x16[i: i + 1600])
        return stream.close()

    live = streamed()
    closure.use(None)
    try:
        without = streamed()
    finally:
        closure.use(MODEL)
    assert found(live) > found(without), (found(without), found(live))


def test_a_broken_closure_model_turns_the_detector_off_with_a_log_line(tmp_path: Path, caplog) -> None:
    phones = [TimedPhone("AA1", 0.10, 0.30)]
    x = np.zeros(8000, np.float32)
    bad = tmp_path / "closure.json"
    try:
        for text in ('{"members": [{"mean": [0.0]', json.dumps({"members": [{"mean": [0.0], "std": [1.0],
                     "w1": [[0.0]], "b1": [0.0], "w2": [0.0], "b2": 0.0}], "threshold": 0.9, "min_frames": 2})):
            bad.write_text(text)  # cut short; the wrong shape
            closure.use(bad)
            with caplog.at_level("ERROR", logger="runtime.audio.closure"):
                assert closure.closures(x, phones) == phones
            assert "is not a model" in caplog.text and closure.detector() is None
            caplog.clear()
    finally:
        closure.use(MODEL)
    assert closure.detector() is not None  # the shipped model again, for the tests after this one
