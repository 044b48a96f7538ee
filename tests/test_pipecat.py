"""The pipecat processor with pipecat's own frame classes and test runner (no network): TTS audio
frames of a real voice (espeak-ng) drive a real avatar (the default model) on a real frame clock,
every frame passes downstream unchanged, and an interruption interrupts the avatar."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="the pipecat extra is not installed (pip install '.[pipecat]')")

from pipecat.frames import frames as pf  # noqa: E402
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

from runtime import channels  # noqa: E402
from runtime.avatar import Avatar  # noqa: E402
from runtime.clock import FrameClock  # noqa: E402
from runtime.integrations.pipecat import AvatarProcessor  # noqa: E402
from runtime.sinks.fanout import Fanout  # noqa: E402
from tests.test_avatar import Recorder  # noqa: E402
from tests.test_protocol_audio import espeak_wav, needs_espeak, pcm_of  # noqa: E402
from tests.test_serve_audio import envelope  # noqa: E402

pytestmark = [needs_espeak, pytest.mark.model]
IX = channels.INDEX
TEXT = "Pop the big map, Bob."


@pytest.fixture
def face(backend, language):
    """A real avatar on a real 60 fps clock, recording its frames and events."""
    sink, events = Recorder(), []
    av = Avatar("pc", backend, language, Fanout([sink]), on_event=events.append)
    clock = FrameClock(60.0, lambda n, t: av.tick(n, t) is not None).start()
    yield av, sink, events
    clock.stop()
    av.close()


def tts_frames(text: str, *, stereo: bool = False, chunk: float = 0.02, pace: bool = True) -> list:
    """What a pipecat TTS service pushes for one utterance: started, 16-bit PCM chunks, text, stopped."""
    x, rate = pcm_of(espeak_wav(text))
    pcm = (x * 32767).astype("<i2")
    if stereo:
        pcm = np.repeat(pcm[:, None], 2, axis=1)
    raw, width = pcm.tobytes(), 2 * (2 if stereo else 1)
    step = int(chunk * rate) * width
    out: list = [pf.TTSStartedFrame(context_id="c1")]
    for a in range(0, len(raw), step):
        out.append(pf.TTSAudioRawFrame(raw[a:a + step], rate, 2 if stereo else 1, context_id="c1"))
        if pace:
            out.append(SleepFrame(sleep=chunk))  # a TTS engine speaking in real time
    out += [pf.TTSTextFrame(text, text_type="sentence"), pf.TTSStoppedFrame(context_id="c1")]
    return out


def wait_done(events: list, n: int = 1, timeout: float = 60.0) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = [e for e in events if e["type"] == "done"]
        if len(done) >= n:
            return done
        time.sleep(0.05)
    raise TimeoutError(f"no done event in {timeout} s: {events[-3:]}")


def mouth_closings(frames: np.ndarray) -> tuple[float, int]:
    gap = frames[:, IX["JawOpen"]] - frames[:, IX["MouthClose"]]
    return float(gap.max()), int(np.sum((gap[1:] <= 0.05) & (gap[:-1] > 0.05)))


@pytest.mark.parametrize("stereo", [False, True])
def test_tts_audio_frames_drive_the_mouth_and_pass_through_unchanged(face, stereo):
    av, sink, events = face
    proc = AvatarProcessor(av, lookahead=0.3)  # a transport's playback buffer: the analysis is ahead
    sent = tts_frames(TEXT, stereo=stereo)
    down, up = asyncio.run(run_test(proc, frames_to_send=sent))
    real = [f for f in sent if not isinstance(f, SleepFrame)]
    assert [id(f) for f in down] == [id(f) for f in real]  # the very same frames, in order
    assert all(f.audio == g.audio for f, g in zip(down, real) if isinstance(f, pf.TTSAudioRawFrame))
    assert not up and proc.lines == 1 and not proc.errors, proc.errors
    (done,) = wait_done(events)
    assert not done.get("error") and not done.get("interrupted")
    assert proc.last.done and proc.last.track.text == TEXT  # the text came after the audio: aligned to it
    opened, closings = mouth_closings(np.array(sink.frames))
    print(f"\nmouth: max open {opened:.2f}, closings {closings}, method {proc.last.track.method}, "
          f"median chunk->plan {1000 * np.median(proc.last.latency):.0f} ms")
    assert opened > 0.1  # the voice moved the mouth as it came (how well, on time: tools/bench_*audio.py)
    assert proc.last.track.duration == pytest.approx(len(pcm_of(espeak_wav(TEXT))[0]) / 22050, abs=0.01)
    final = proc.last.plan.render(60)  # the final plan, force-aligned to the text that came last
    assert proc.last.track.method == "aligned" and mouth_closings(np.nan_to_num(final))[1] >= 4


def test_an_interruption_interrupts_the_avatar(face):
    av, sink, events = face
    proc = AvatarProcessor(av)
    utterance = tts_frames("Maybe my mum made a big map of the moon.")
    sent = utterance[:41] + [pf.InterruptionFrame()] + [SleepFrame(sleep=0.3)]
    asyncio.run(run_test(proc, frames_to_send=sent))
    (done,) = wait_done(events)
    assert done.get("interrupted") is True and proc.live is None
    n = len(sink.frames)
    time.sleep(0.5)
    frames = np.array(sink.frames[n:])
    assert np.abs(frames[:, IX["JawOpen"]]).max() < 0.05  # the face went to rest and stays there
    # the avatar takes the next utterance (a new pipeline: a processor lives in one event loop)
    again = AvatarProcessor(av)
    asyncio.run(run_test(again, frames_to_send=tts_frames("Bob.", pace=False)))
    assert again.lines == 1 and not wait_done(events, 2)[1].get("interrupted")


def test_bot_started_speaking_sets_the_audio_clock(face):
    """A TTS engine faster than real time: the audio arrives at once, the transport plays it later
    and says so with BotStartedSpeakingFrame; the mouth follows the playback, not the arrival."""
    av, sink, events = face
    seen: dict[str, float] = {}

    class Noting(AvatarProcessor):
        def _look(self, frame):
            if isinstance(frame, pf.TTSAudioRawFrame):
                seen.setdefault("first_chunk", time.perf_counter())
            if isinstance(frame, pf.BotStartedSpeakingFrame):
                seen["playback"] = time.perf_counter()
            super()._look(frame)

    timed: list[tuple[float, float]] = []
    orig = sink.send
    jaw_at = IX["JawOpen"]
    sink.send = lambda frame, n, t: timed.append((time.perf_counter(), float(frame[jaw_at]))) or orig(frame, n, t)
    x, rate = pcm_of(espeak_wav(TEXT))
    utterance = tts_frames(TEXT, pace=False)
    sent = [*utterance[:-2], SleepFrame(sleep=0.8), pf.BotStartedSpeakingFrame(), SleepFrame(sleep=2.5),
            *utterance[-2:]]
    proc = Noting(av)
    asyncio.run(run_test(proc, frames_to_send=sent))
    wait_done(events)
    at, jaw = np.array([t for t, _ in timed]), np.array([j for _, j in timed])
    span = (at > seen["first_chunk"]) & (at < seen["playback"] + len(x) / rate)
    r_play = np.corrcoef(jaw[span], envelope(x, rate, at[span] - seen["playback"]))[0, 1]
    r_arrive = np.corrcoef(jaw[span], envelope(x, rate, at[span] - seen["first_chunk"]))[0, 1]
    print(f"\nr(jaw, loudness): on the playback clock {r_play:.2f}, on the arrival clock {r_arrive:.2f}")
    assert r_play > 0.3 and r_play > r_arrive + 0.2


def test_utterances_queued_back_to_back_play_one_after_the_other(face):
    av, sink, events = face
    proc = AvatarProcessor(av)
    first, second = tts_frames("Bob bought a boat.", pace=False), tts_frames("Maybe.", pace=False)
    asyncio.run(run_test(proc, frames_to_send=[*first, *second]))  # a TTS engine faster than real time
    one, two = proc.recent
    seconds = len(pcm_of(espeak_wav("Bob bought a boat."))[0]) / 22050
    assert abs((one.audio_time() - two.audio_time()) - seconds) < 0.02  # the second starts as the first ends
    done = wait_done(events, 2)
    assert not any(d.get("interrupted") or d.get("error") for d in done)


def test_text_before_the_audio_is_the_line_and_user_text_is_not(face):
    av, sink, events = face
    proc = AvatarProcessor(av, emotion="joy")
    said = []
    orig = av.say
    av.say = lambda req, speech=None: said.append(req) or orig(req, speech=speech)
    sent = [pf.TranscriptionFrame("what is that?", "user-1", "now"), pf.TextFrame("Hello there, Bob!"),
            *tts_frames("Hello there, Bob!", pace=False)[:-2], pf.TTSStoppedFrame(context_id="c1")]
    asyncio.run(run_test(proc, frames_to_send=sent))
    assert [(r.text, r.emotion) for r in said] == [("Hello there, Bob!", "joy")]
    wait_done(events)
    assert proc.last.track.text == "Hello there, Bob!"


def test_face_from_config_streams_the_mouth_to_its_sinks(backend, tmp_path):
    from runtime.integrations.pipecat import Face
    from tests.conftest import ROOT

    events: list[dict] = []
    take = tmp_path / "take.csv"
    face = Face(ROOT / "config.toml", sinks=[f"csv:{take}"], backend=backend, on_event=events.append)
    try:
        assert AvatarProcessor(face).lookahead == face.cfg.audio.lookahead  # the config's [audio] ...
        proc = AvatarProcessor(face, lookahead=0.3)  # ... unless told
        assert proc.beats == face.cfg.audio.beats and proc.lookahead == 0.3
        asyncio.run(run_test(proc, frames_to_send=tts_frames(TEXT)))
        wait_done(events)
    finally:
        face.close()
    header, *rows = take.read_text().splitlines()
    col = header.split(",").index("JawOpen")
    jaw = np.array([float(r.split(",")[col]) for r in rows])
    assert len(rows) > 60 and jaw.max() > 0.1  # the voice's mouth reached the sink
