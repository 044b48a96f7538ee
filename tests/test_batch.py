"""Lines generated together in one batch, with the real default model: the same keyframes as alone,
an interrupt or a failure ends only its own line, lines join and leave mid-generation."""

import threading

import pytest

from runtime.generate import stream_keyframes
from runtime.generate.llama import GenerationError
from runtime.generate.prompt import LineRequest
from runtime.keyframes.parser import KeyframeParser

pytestmark = pytest.mark.model

A = "She laughs at the joke, then suddenly looks worried."
B = "He slams his fist on the table, furious."


@pytest.fixture(scope="module")
def local(config, language):
    from runtime import assemble

    b = assemble.local_backend(config, language)
    yield b
    b.close()


def keys(backend, language, text, cancel=None, started=None, after_first=None):
    out = []
    for kf in stream_keyframes(backend, KeyframeParser(language, strict=True), LineRequest(text), cancel):
        out.append(kf)
        if len(out) == 1:
            if started is not None:
                started.set()
            if after_first is not None:
                after_first()
    return out


def together(*calls):
    """Run each call on its own thread, all released at once; their results in order."""
    results: list = [None] * len(calls)
    go = threading.Barrier(len(calls))

    def run(i, fn):
        go.wait()
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001 - handed back to the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def summary(language, ks):
    """Per keyframe: the emotion (or action) of its first item and that item's level."""
    return [(language.preset(k.items[0][0]), k.items[0][1]) for k in ks]


def assert_close(language, alone, batched):
    """Same number of keyframes, the same feeling per keyframe, levels within one."""
    a, b = summary(language, alone), summary(language, batched)
    assert len(a) == len(b), (a, b)
    for (ea, la), (eb, lb) in zip(a, b):
        assert ea == eb and abs(la - lb) <= 1, (a, b)


def test_two_lines_in_one_batch_write_what_they_write_alone(local, language):
    alone = [keys(local, language, t) for t in (A, B)]
    peak = local.peak_active = 0
    batched = together(lambda: keys(local, language, A), lambda: keys(local, language, B))
    assert local.peak_active == 2 > peak  # they really shared steps
    for x, y in zip(alone, batched):
        assert_close(language, x, y)


def test_an_interrupt_ends_only_its_own_line(local, language):
    alone_b = keys(local, language, B)
    cancel = threading.Event()
    b_started = threading.Event()

    def interrupted():
        # A is cancelled once both lines are generating (A's first keyframe and B's)
        return keys(local, language, A, cancel, after_first=lambda: (b_started.wait(30), cancel.set()))

    got_a, got_b = together(interrupted, lambda: keys(local, language, B, started=b_started))
    assert len(got_a) == 1  # nothing after the interrupt
    assert_close(language, alone_b, got_b)
    assert local.lib.llama_memory_seq_pos_max(local._mem, 0) == local.prefix_tokens - 1


def test_a_line_that_fails_ends_alone(local, language, monkeypatch):
    alone_b = keys(local, language, B)
    told = local._told  # every clause's decision starts here, decided early or not

    def broken(req, calibrated):
        if req.text.startswith("BROKEN"):
            raise RuntimeError("this line's decision failed")
        return told(req, calibrated)

    monkeypatch.setattr(local, "_told", broken)
    got_bad, got_b = together(lambda: keys(local, language, "BROKEN: he waves."), lambda: keys(local, language, B))
    assert isinstance(got_bad, GenerationError) and "decision failed" in str(got_bad)
    assert_close(language, alone_b, got_b)
    monkeypatch.undo()
    assert keys(local, language, "BROKEN: he waves.")  # the backend goes on


def test_lines_join_and_leave_mid_generation(local, language):
    """B joins while A generates; C joins after B has left; A's line is the one it writes alone."""
    alone = {t: keys(local, language, t) for t in (A, B)}
    a_first = threading.Event()
    local.peak_active = 0
    out = {}

    def later():
        a_first.wait(30)
        out["B"] = keys(local, language, B)
        out["C"] = keys(local, language, B)  # joins a batch B has left
        return True

    got_a, _ = together(lambda: keys(local, language, A, started=a_first), later)
    assert local.peak_active == 2
    assert_close(language, alone[A], got_a)
    assert_close(language, alone[B], out["B"])
    assert_close(language, alone[B], out["C"])
    assert all(local.lib.llama_memory_seq_pos_max(local._mem, s) == -1 for s in range(1, local.batch + 1))


def test_more_lines_than_sequences_wait_for_a_free_one(config, language):
    from runtime import assemble

    config = __import__("copy").deepcopy(config)
    config.model.batch = 2
    b = assemble.local_backend(config, language)
    try:
        texts = [A, B, "The child gasps when the magician pulls out a rabbit."]
        got = together(*[lambda t=t: keys(b, language, t) for t in texts])
        assert all(isinstance(g, list) and g for g in got), got
        assert b.peak_active == 2
    finally:
        b.close()


def test_a_line_the_model_must_read_goes_before_the_prompt_of_one_already_playing(local, language, monkeypatch):
    """B's feeling is plain from its words: its onset leaves at once and its prompt can wait. A line
    that arrives a moment later and needs the model's reading for its first keyframe (the words
    leave its feeling open) gets the next step; B's prompt follows."""
    plain, open_ = B, "He smirks, unimpressed by the offer."
    monkeypatch.setattr(local, "GATHER_S", 1.0)  # a wide window: the test does not race the box
    admitted, steps = [], []
    admit, decode = local._admit, local.lib.llama_decode

    def record_admit(job):
        admit(job)
        if job.seq is not None:
            admitted.append(job.seq.id)

    def record_decode(ctx, batch):
        steps.append({batch.seq_id[i][0] for i in range(batch.n_tokens)})
        return decode(ctx, batch)

    monkeypatch.setattr(local, "_admit", record_admit)
    monkeypatch.setattr(local.lib, "llama_decode", record_decode)
    first = threading.Event()
    got: dict = {}
    t = threading.Thread(target=lambda: got.setdefault("plain", keys(local, language, plain, started=first)))
    t.start()
    assert first.wait(30)  # its onset, before any step of the model
    assert steps == []
    got["open"] = keys(local, language, open_)
    t.join(60)
    seq_plain, seq_open = admitted
    assert steps[0] == {seq_open}, steps[:3]
    assert any(seq_plain in s for s in steps[1:])
    assert got["plain"] and got["open"]
