import time

from runtime.clock import FrameClock


def test_frames_follow_absolute_deadlines():
    seen = []

    def tick(n, t):
        seen.append((n, t, time.perf_counter()))
        return n < 29

    clock = FrameClock(60.0, tick).start()
    clock.join(5)
    assert [n for n, _, _ in seen] == list(range(30))
    assert all(abs(t - n / 60.0) < 1e-12 for n, t, _ in seen)
    # absolute deadlines: frame 29 is due 29/60 s after the start, whatever the jitter before it
    assert abs(seen[-1][2] - clock.start_time - 29 / 60) < 0.02


def test_overrun_skips_deadlines_and_counts_them():
    seen = []

    def tick(n, t):
        seen.append(n)
        if n == 3:
            time.sleep(0.1)  # six frames' worth
        return n < 12

    clock = FrameClock(60.0, tick).start()
    clock.join(5)
    assert clock.stats.missed >= 4
    assert seen[4] - seen[3] == clock.stats.missed + 1  # frame numbers still follow wall time


def test_stop_from_outside():
    clock = FrameClock(60.0, lambda n, t: None).start()
    time.sleep(0.1)
    clock.stop()
    assert not clock.running
    assert 3 <= clock.stats.frames <= 10


def test_a_tick_that_raises_is_logged_and_the_clock_goes_on(caplog):
    from runtime.clock import FrameClock

    seen = []

    def tick(n, t):
        seen.append(n)
        if n == 2:
            raise RuntimeError("a layer's bug")
        return n < 5

    clock = FrameClock(200.0, tick)
    clock.start()
    clock.join(5.0)
    assert seen[:6] == [0, 1, 2, 3, 4, 5] and clock.stats.errors == 1
    assert "the tick raised" in caplog.text


def test_with_emit_frames_are_made_ahead_and_leave_on_their_deadline():
    """A tick that takes 3 ms no longer shifts the send: frame n is made ``lead_s`` before its
    deadline and emitted at it, in order, every frame."""
    events = []

    def tick(n, t):
        events.append(("tick", n, time.perf_counter()))
        time.sleep(0.003)  # the work of making the frames
        return n < 29

    clock = FrameClock(60.0, tick, emit=lambda: events.append(("emit", None, time.perf_counter())),
                       lead_s=0.006)
    clock.start()
    clock.join(5)
    kinds = [k for k, _, _ in events]
    numbers = [n for k, n, _ in events if k == "tick"]  # (a busy box may skip a deadline)
    assert kinds == ["tick", "emit"] * len(numbers)  # the frame that asked to stop was sent too
    assert numbers[-1] == 29 and clock.stats.frames == len(numbers) - 1  # ...and, as without emit, not counted
    made = [at - (clock.start_time + n / 60) for k, n, at in events if k == "tick"]
    sent = [at - (clock.start_time + n / 60) for n, (_, _, at) in zip(numbers, (e for e in events if e[0] == "emit"))]
    assert all(s >= 0 for s in sent)  # never before its deadline
    assert sorted(made)[len(made) // 2] < 0  # made ahead (the median frame), not at the deadline
    # the send waits only for the deadline, not for the 3 ms of making (median: this box is noisy)
    assert sorted(sent)[len(sent) // 2] < 0.002


def test_without_emit_the_lead_is_ignored():
    seen = []
    clock = FrameClock(60.0, lambda n, t: seen.append((n, time.perf_counter())) or n < 9, lead_s=0.006)
    clock.start()
    clock.join(5)
    assert clock.lead_s == 0.0
    assert all(at >= clock.start_time + n / 60 for n, at in seen)  # ticks on the deadline, as before


def test_what_exists_when_a_clock_starts_is_never_walked_by_the_collector_again():
    import gc

    gc.unfreeze()
    held = [[i] for i in range(1000)]  # lists: always tracked (a dict of numbers is not)
    assert any(o is held[0] for o in gc.get_objects())
    clock = FrameClock(60, lambda n, t: None).start()
    clock.stop()
    assert gc.get_freeze_count() >= len(held)
    assert not any(o is held[0] for o in gc.get_objects())  # a collection no longer walks it
    later = [-1]
    assert any(o is later for o in gc.get_objects())  # what is made afterwards is collected as ever


def test_the_clock_thread_runs_real_time_where_the_os_allows_it_and_normal_otherwise():
    import os

    import pytest

    policies = {}

    def tick(n, t):
        policies[n] = os.sched_getscheduler(0)  # the calling thread's own policy
        return n < 2

    rt = FrameClock(60.0, tick, realtime=5).start()
    rt.join(5)
    if not rt.scheduling.startswith("fifo"):
        pytest.skip(f"this machine refuses real-time scheduling (the clock fell back to {rt.scheduling})")
    assert rt.scheduling == "fifo 5" and set(policies.values()) == {os.SCHED_FIFO}
    policies.clear()
    plain = FrameClock(60.0, tick, realtime=0).start()  # 0: off, whatever is allowed
    plain.join(5)
    assert plain.scheduling != "fifo 0" and os.SCHED_FIFO not in policies.values()


def test_frame_zero_is_made_ahead_too():
    made, sent = [], []
    t0 = time.perf_counter()
    clock = FrameClock(60.0, lambda n, t: (made.append(time.perf_counter()), n < 3)[1],
                       emit=lambda: sent.append(time.perf_counter()), lead_s=0.004)
    clock.start()
    clock.join(5)
    # frame 0 is due one period after start, so its making (first-call costs and all) has its lead
    assert clock.start_time >= t0 + 1 / 60 - 1e-3
    assert made[0] <= clock.start_time <= sent[0] + 1e-6
