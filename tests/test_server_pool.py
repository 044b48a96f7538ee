"""A pool of two real llama-cpp-python servers on loopback: lines spread over both, several in
flight; a server killed mid-line ends that line gracefully and the next line goes to the other."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from runtime.avatar import Avatar
from runtime.generate.prompt import LineRequest
from runtime.generate.server import ServerBackend
from runtime.keyframes.grammar import gbnf
from runtime.keyframes.language import Language
from runtime.keyframes.parser import KeyframeParser
from runtime.sinks.base import Sink
from runtime.sinks.fanout import Fanout

pytestmark = pytest.mark.model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(log_path):
    from runtime.generate.models import resolve

    port = _free_port()
    log = open(log_path, "w+b")  # a file: a full pipe would block the server
    script = os.path.join(os.path.dirname(__file__), "llama_server.py")
    proc = subprocess.Popen([sys.executable, script, "--model", str(resolve("smollm2-135m")),
                             "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1",
                             "--n_ctx", "2048", "--verbose", "False"],
                            stdout=subprocess.DEVNULL, stderr=log)
    return proc, f"http://127.0.0.1:{port}", log


def _wait(proc, url, log):
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                pytest.fail(f"llama_cpp.server did not start: {log.read().decode()[-500:]}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="needs the test extra (llama-cpp-python's server)")
    d = tmp_path_factory.mktemp("pool")
    started = [_start(d / f"server{i}.log") for i in range(2)]
    for proc, url, log in started:
        _wait(proc, url, log)
    yield started
    for proc, _, log in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        log.close()


class Recorder(Sink):
    scheme = "memory"

    def __init__(self):
        super().__init__()
        self.frames = 0

    def send(self, frame, number, t):
        self.frames += 1


def test_lines_spread_over_the_pool_with_both_in_flight(servers):
    lang = Language()
    pool = ServerBackend([url for _, url, _ in servers], gbnf(lang), timeout=60.0)
    busy = []
    got = {}

    def line(i, text):
        keys = []
        for piece, n in pool.stream(LineRequest(text)):
            busy.append(tuple(s.in_flight for s in pool.servers))
            keys += KeyframeParser(lang).feed(piece, n)
        got[i] = keys

    threads = [threading.Thread(target=line, args=(i, t)) for i, t in
               enumerate(["He slams his fist on the table, furious.", "Tears roll down her cheeks."])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got[0] and got[1]
    assert [s.lines for s in pool.servers] == [1, 1]  # one line each
    assert (1, 1) in busy  # both servers were writing at the same time


def test_a_server_killed_mid_line_ends_that_line_and_the_next_goes_to_the_other(servers):
    lang = Language()
    pool = ServerBackend([url for _, url, _ in servers], gbnf(lang), timeout=60.0)
    events = []
    sink = Recorder()
    av = Avatar("npc", pool, lang, Fanout([sink]), on_event=events.append, timeout=60.0)
    killed = {}

    def kill_on_first_key(e):
        events.append(e)
        if e["type"] == "keyframe" and not killed:
            i = next(i for i, s in enumerate(pool.servers) if s.in_flight)
            os.kill(servers[i][0].pid, signal.SIGKILL)
            killed["index"] = i

    av.on_event = kill_on_first_key
    try:
        av.say(LineRequest("She laughs at the joke, then suddenly looks worried, then cries."))
        n = 0
        while not any(e["type"] == "done" for e in events) and n < 60 * 60:
            av.tick(n, n / 60)
            time.sleep(1 / 60)
            n += 1
        done = next(e for e in events if e["type"] == "done")
        assert "error" in done and "model server" in done["error"]  # ended, with a reason
        dead = pool.servers[killed["index"]]
        assert dead.failures == 1 and dead.in_flight == 0
        events.clear()
        line = av.say(LineRequest("He grins at his friend."))
        while not any(e["type"] == "done" for e in events) and n < 120 * 60:
            av.tick(n, n / 60)
            time.sleep(1 / 60)
            n += 1
        done = next(e for e in events if e["type"] == "done")
        assert "error" not in done and line.keyframes >= 1
        assert pool.stats["server"] == pool.servers[1 - killed["index"]].label
        assert sink.frames == n  # the face was sent every frame throughout
    finally:
        av.close()
