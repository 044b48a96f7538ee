"""The model in its own process: same keyframes as in-process, survives the child being killed."""

import os
import signal
import threading

import pytest

from runtime.generate import stream_keyframes
from runtime.generate.llama import GenerationError
from runtime.generate.prompt import LineRequest
from runtime.keyframes.parser import KeyframeParser

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def proc_backend(config, language):
    from runtime.generate.worker import ProcessBackend

    b = ProcessBackend(config)
    yield b
    b.close()


def test_same_keyframes_as_in_process(proc_backend, backend, language):
    req = LineRequest("He frowns at the broken vase.")
    a = [(k.t, k.items) for k in stream_keyframes(proc_backend, KeyframeParser(language), req)]
    b = [(k.t, k.items) for k in stream_keyframes(backend, KeyframeParser(language), req)]
    assert a and a == b


def test_child_killed_mid_line_raises_then_recovers(proc_backend, language):
    stream = proc_backend.stream(LineRequest("She laughs, then cries, then laughs again."))
    next(stream)
    os.kill(proc_backend.pid, signal.SIGKILL)
    with pytest.raises(GenerationError, match="died"):
        for _ in stream:
            pass
    assert proc_backend.restarts == 1
    keys = list(stream_keyframes(proc_backend, KeyframeParser(language), LineRequest("A big smile.")))
    assert keys


def test_cancel_stops_the_line_and_the_next_starts_clean(proc_backend, language):
    cancel = threading.Event()
    stream = proc_backend.stream(LineRequest("She laughs, then cries, then laughs again."), cancel)
    next(stream)
    cancel.set()
    rest = list(stream)
    assert len(rest) <= 2
    keys = list(stream_keyframes(proc_backend, KeyframeParser(language), LineRequest("He is furious.")))
    assert keys and keys[0].t < 1.0


def test_a_model_process_that_dies_while_loading_is_a_clear_error(config, monkeypatch):
    """A crash in native code while loading (a segfault in llama.cpp, say) sends no message: the
    parent says so, with the exit code, instead of an EOFError from the pipe."""
    import multiprocessing as mp

    from runtime import assemble
    from runtime.generate import worker

    fork = mp.get_context("fork")  # the child inherits the patched loader below
    monkeypatch.setattr(worker.mp, "get_context", lambda kind: fork)
    monkeypatch.setattr(assemble, "local_backend", lambda cfg, lang: os._exit(7))
    with pytest.raises(GenerationError, match=r"died while loading the model \(exit code 7\)"):
        worker.ProcessBackend(config)


def test_heard_crosses_the_process_boundary(proc_backend, language):
    """The whole request goes to the child, `heard` included (the feeling classifier reads it there)."""
    import pickle

    sent = []
    gen = proc_backend._gen
    conn = gen.conn
    real_send = conn.send

    class Tap:
        def __getattr__(self, name):
            return getattr(conn, name)

        def send(self, obj):
            sent.append(pickle.loads(pickle.dumps(obj)))  # what the child unpickles
            real_send(obj)

    gen.conn = Tap()
    try:
        req = LineRequest("Okay.", heard="I'm pregnant.", context="a kitchen", id="h")
        keys = list(stream_keyframes(proc_backend, KeyframeParser(language), req))
    finally:
        gen.conn = conn
    assert keys
    lines = [m[2] for m in sent if m and m[0] == "line"]  # ("line", id, request)
    assert lines == [req]
    assert lines[0].heard == "I'm pregnant."


def test_lines_from_two_threads_are_generated_together_in_the_child(proc_backend, backend, language):
    """Two lines at once through the pipe: both batched in the child, each what it is alone."""
    texts = ["He frowns at the broken vase.", "Tears roll down her cheeks as she reads the letter."]
    alone = {t: [(k.t, k.items) for k in stream_keyframes(backend, KeyframeParser(language), LineRequest(t))]
             for t in texts}
    got: dict = {}
    overlap = threading.Barrier(2)

    def line(text):
        keys = []
        for k in stream_keyframes(proc_backend, KeyframeParser(language), LineRequest(text)):
            if not keys:
                overlap.wait(60)  # each has its first keyframe before either goes on: both in flight
            keys.append((k.t, k.items))
        got[text] = keys

    threads = [threading.Thread(target=line, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for t in texts:
        a, b = alone[t], got[t]
        feel = [[language.preset(x[1][0][0]) for x in keys] for keys in (a, b)]  # tears, cry: sadness
        assert len(a) == len(b) and feel[0] == feel[1]


def test_a_child_killed_with_two_lines_in_flight_ends_both_and_restarts_once(proc_backend, language):
    restarts = proc_backend.restarts
    errors: list = []
    first = threading.Barrier(3)

    def line(text):
        try:
            for i, _ in enumerate(proc_backend.stream(LineRequest(text))):
                if i == 0:
                    first.wait(60)
        except GenerationError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=line, args=(t,)) for t in
               ("She laughs, then cries, then laughs again.", "He grins, then frowns, then sighs.")]
    for t in threads:
        t.start()
    first.wait(60)
    os.kill(proc_backend.pid, signal.SIGKILL)
    for t in threads:
        t.join(120)
    assert len(errors) == 2 and all("died" in e for e in errors)
    assert proc_backend.restarts == restarts + 1
    assert list(stream_keyframes(proc_backend, KeyframeParser(language), LineRequest("A big smile.")))
