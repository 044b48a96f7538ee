"""The avatar's two threads with a scripted model: late keys, a dying model, a hung model."""

import threading
import time

import numpy as np
import pytest

from runtime import channels
from runtime.avatar import Avatar
from runtime.generate.prompt import LineRequest
from runtime.keyframes.language import Language
from runtime.sinks.base import Sink
from runtime.sinks.fanout import Fanout


class Recorder(Sink):
    scheme = "memory"

    def __init__(self):
        super().__init__()
        self.frames = []

    def send(self, frame, number, t):
        self.frames.append(frame.copy())


class Scripted:
    """A backend that writes given text pieces with given delays (seconds) before each."""

    def __init__(self, pieces, fail_after=None, hang=False):
        self.pieces = pieces
        self.fail_after = fail_after
        self.hang = hang

    def stream(self, req, cancel=None):
        for i, (delay, text) in enumerate(self.pieces):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("model died")
            end = time.monotonic() + delay
            while time.monotonic() < end:
                if cancel is not None and cancel.is_set():
                    return
                time.sleep(0.005)
            yield text, 1
        while self.hang and not (cancel is not None and cancel.is_set()):
            time.sleep(0.01)


def run(avatar, frames_max=600):
    """Drive ticks by hand (1/60 s of real time each) until the avatar is idle."""
    events = []
    for n in range(frames_max):
        avatar.tick(n, n / 60)
        time.sleep(1 / 60)
        if n > 5 and avatar.idle:
            break
    return events


def make(backend, **kw):
    sink = Recorder()
    events = []
    av = Avatar("a", backend, Language(), Fanout([sink]), on_event=events.append, **kw)
    return av, sink, events


def test_line_plays_keys_as_they_arrive_and_returns_to_rest():
    av, sink, events = make(Scripted([(0.05, "2 joy 9\n"), (0.4, "3 surprise 9\n")]))
    av.say(LineRequest("hi"))
    run(av)
    frames = np.array(sink.frames)
    smile = frames[:, channels.INDEX["MouthSmileLeft"]]
    assert smile.max() > 0.8
    assert np.abs(np.diff(frames, axis=0)).max() < 0.15  # no pop, even with the late second key
    assert (frames[-1] == 0).all()
    assert [e["type"] for e in events] == ["keyframe", "keyframe", "done"]
    av.close()


def test_model_that_dies_ends_the_line_and_the_next_line_works():
    av, sink, events = make(Scripted([(0.0, "2 anger 9\n"), (0.0, "3 anger 9\n")], fail_after=1))
    av.say(LineRequest("first"))
    run(av)
    assert events[-1]["type"] == "done" and "model died" in events[-1]["error"]
    av.backend = Scripted([(0.0, "2 joy 9\n")])
    av.say(LineRequest("second"))
    run(av)
    assert events[-1] == {"type": "done", "id": "a-2", "avatar": "a"}
    assert (sink.frames[-1] == 0).all()
    av.close()


def test_hung_model_times_out_gracefully():
    av, sink, events = make(Scripted([(0.0, "2 fear 9\n")], hang=True), timeout=0.5)
    av.say(LineRequest("stuck"))
    t0 = time.monotonic()
    run(av)
    assert time.monotonic() - t0 < 3
    assert "timed out" in events[-1]["error"]
    assert (sink.frames[-1] == 0).all()
    av.close()


def test_tick_never_waits_on_a_slow_model():
    gate = threading.Event()

    class Blocked:
        def stream(self, req, cancel=None):
            gate.wait(5)
            yield "2 joy 5\n", 1

    av, sink, _ = make(Blocked())
    av.say(LineRequest("x"))
    t0 = time.perf_counter()
    for n in range(60):
        av.tick(n, n / 60)
    assert time.perf_counter() - t0 < 0.5
    gate.set()
    av.close()


def test_too_many_lines_is_an_error_not_a_wait():
    import queue

    av, _, _ = make(Scripted([(1.0, "2 joy 5\n")]), max_lines=2)
    with pytest.raises(queue.Full):
        for _ in range(5):
            av.say(LineRequest("x"))
    av.close()


def test_spoken_line_closes_the_lips_on_time_and_waits_for_the_words():
    from runtime.animate.speech import SpeechPlan

    words = [{"word": "bob", "start": 0.5, "end": 0.8}, {"word": "bought", "start": 0.85, "end": 1.2},
             {"word": "apples", "start": 1.3, "end": 2.6}]
    plan = SpeechPlan.from_text("Bob bought apples.", words=words)
    av, sink, events = make(Scripted([(0.0, "1 joy 9\n")]))
    times = []
    original = sink.send

    def send(frame, number, t):
        times.append(av.current.t if av.current is not None else None)
        original(frame, number, t)

    sink.send = send
    av.say(LineRequest("Bob bought apples."), speech=plan)
    run(av)
    frames = np.array(sink.frames)
    gap = frames[:, channels.INDEX["JawOpen"]] - frames[:, channels.INDEX["MouthClose"]]
    for start in (0.5, 0.85):  # the frame played at each b-word's start has the lips together
        i = next(i for i, t in enumerate(times) if t is not None and abs(t - start) < 0.5 / 60)
        assert gap[i] <= 0.05
    line_t = [t for t in times if t is not None]
    assert max(line_t) >= plan.duration - 1 / 60  # the line lasted as long as its words
    assert frames[:, channels.INDEX["MouthSmileLeft"]].max() > 0.5  # smiling while talking
    assert events[-1]["type"] == "done"
    av.close()


# -- a line that arrives in chunks -------------------------------------------------------------------
class Echo:
    """Writes two keys per request, joy for a text with "Ha", fear otherwise; records the requests."""

    def __init__(self):
        self.reqs = []

    def stream(self, req, cancel=None):
        self.reqs.append(req)
        name = "joy" if "Ha" in req.text else "fear"
        yield f"2 {name} 7\n", 1
        yield f"3 {name} 9\n", 1


def tick_until(av, pred, start=0, seconds=5.0):
    n = start
    end = time.monotonic() + seconds
    while not pred() and time.monotonic() < end:
        av.tick(n, n / 60)
        n += 1
        time.sleep(1 / 240)
    return n


def test_chunked_line_generates_each_sentence_as_it_completes_and_times_continue():
    backend = Echo()
    av, sink, events = make(backend)
    line = av.say(LineRequest("Ha! You", heard="Guess what I did.", context="a farm"), chunked=True,
                  chunk_timeout=None)
    n = tick_until(av, lambda: len(backend.reqs) == 1)
    time.sleep(0.1)
    assert [r.text for r in backend.reqs] == ["Ha!"]  # "You" is not a sentence yet
    assert av.feed(line, " fell in the mud! Wait, are you") == ["You fell in the mud!"]
    n = tick_until(av, lambda: len(backend.reqs) == 2, n)
    assert av.current is line and not line.ended  # the face holds while the text is still coming
    assert av.feed(line, " bleeding?", final=True) == ["Wait, are you bleeding?"]
    tick_until(av, lambda: av.idle, n)
    assert [r.text for r in backend.reqs] == ["Ha!", "You fell in the mud!", "Wait, are you bleeding?"]
    assert all(r.heard == "Guess what I did." and r.context == "a farm" and r.id == line.req.id
               for r in backend.reqs)
    keys = [e for e in events if e["type"] == "keyframe"]
    times = [k["t"] for k in keys]
    assert times == sorted(times) and len(times) == 6 and times[2] > times[1]  # one timeline
    assert times == [0.2, 0.5, 0.7, 1.0, 1.2, 1.5]
    assert events[-1] == {"type": "done", "id": line.req.id, "avatar": "a"}
    assert line.req.text == "Ha! You fell in the mud! Wait, are you bleeding?"
    frames = np.array(sink.frames)
    smile = frames[:, channels.INDEX["MouthSmileLeft"]]
    wide = frames[:, channels.INDEX["EyeWideLeft"]]
    assert smile.max() > 0.5 and wide.max() > 0.5 and np.argmax(smile) < np.argmax(wide)  # joy, then fear
    with pytest.raises(ValueError):
        av.feed(line, "more")
    av.close()


def test_chunked_line_without_its_last_chunk_is_abandoned_and_returns_to_rest():
    av, sink, events = make(Echo())
    line = av.say(LineRequest("Ha! And then", id="x"), chunked=True, chunk_timeout=0.3)
    tick_until(av, lambda: av.idle and line.reported, seconds=5)
    done = [e for e in events if e["type"] == "done"]
    assert done == [{"type": "done", "id": "x", "avatar": "a", "abandoned": True}]
    assert line.keyframes == 2  # "Ha!" played; "And then" never became a sentence
    assert np.abs(sink.frames[-1] - Language().rest).max() < 1e-6
    with pytest.raises(ValueError):
        av.feed(line, " more.")
    av.say(LineRequest("Ha ha.", id="y"))  # the next line plays as usual
    tick_until(av, lambda: any(e.get("id") == "y" and e["type"] == "done" for e in events))
    assert events[-1] == {"type": "done", "id": "y", "avatar": "a"}
    av.close()


def test_interrupt_ends_a_chunked_line_that_waits_for_text():
    av, sink, events = make(Echo())
    line = av.say(LineRequest("Ha! Wait", id="x"), chunked=True, chunk_timeout=None)
    tick_until(av, lambda: line.keyframes == 2)
    assert av.interrupt() == []
    tick_until(av, lambda: line.reported)
    assert [e for e in events if e["type"] == "done"] == [
        {"type": "done", "id": "x", "avatar": "a", "interrupted": True}]
    av.close()


def test_a_chunked_line_is_bounded():
    av, _, _ = make(Echo())
    line = av.say(LineRequest("Ha", id="x"), chunked=True, max_chars=10)
    with pytest.raises(ValueError, match="more than 10"):
        av.feed(line, "0123456789")
    av.feed(line, ".", final=True)
    av.close()


def test_avatars_on_a_concurrent_backend_generate_at_the_same_time():
    """A backend that batches (``concurrent``) is not taken in turns: two avatars' lines are in it at
    once (this backend waits for both; taking turns, each would time out alone)."""
    both = threading.Barrier(2)

    class Batched:
        concurrent = True

        def stream(self, req, cancel=None):
            both.wait(5)  # raises BrokenBarrierError unless the other line is in here too
            yield "2 joy 5\n", 1

    backend = Batched()
    avs = [make(backend)[0:3:2] for _ in range(2)]
    for av, _ in avs:
        av.say(LineRequest("x"))
    for n in range(120):
        for av, _ in avs:
            av.tick(n, n / 60)
        time.sleep(1 / 60)
        if all(any(e["type"] == "done" for e in ev) for _, ev in avs):
            break
    for av, ev in avs:
        done = [e for e in ev if e["type"] == "done"]
        assert done and "error" not in done[0]
        av.close()


def test_live_audio_is_sampled_for_the_moment_its_frame_leaves():
    """A clock that makes frames ``lead`` ahead of sending them (say, serve): the avatar tells the
    line's live audio, so the mouth shows the sound the frame will meet, not the one it was made at."""
    from runtime.audio import LiveSpeech

    live = LiveSpeech(16000, process=False)
    av, _, _ = make(Scripted([(0.0, "1 joy 9\n")]), lead=0.004)
    av.say(LineRequest("hi"), speech=live)
    assert live.lead == 0.004
    live.close()
    av.close()
