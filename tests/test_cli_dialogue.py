"""The command line with dialogue: --heard, say --stdin, keyframes --batch (the real default model)."""

import json
import subprocess
import time

import numpy as np
import pytest

from runtime import batch
from runtime.generate.prompt import LineRequest
from runtime.protocol import Limits
from runtime.sinks.livelink import decode_packet

from .conftest import free_udp_port
from .test_e2e import CLI, ENV, Receiver


# -- batch input, without the model ------------------------------------------------------------------
def test_batch_parse_good_lines():
    assert batch.parse('{"text": " Hi. ", "heard": "Lunch!", "id": "n1"}', 1) == (
        "n1", LineRequest(text="Hi.", heard="Lunch!", id="n1"))
    assert batch.parse('{"text": "Hi", "id": 12}', 3) == (12, LineRequest(text="Hi", id="12"))
    assert batch.parse('{"text": "Hi"}', 4)[0] == 4  # no id: the line number


@pytest.mark.parametrize("raw, id_, why", [
    ("{oops", 5, "not valid JSON"),
    ("[1]", 5, "expected a JSON object"),
    ('{"id": "a"}', "a", "text: missing"),
    ('{"id": "a", "text": ""}', "a", "text: empty"),
    ('{"id": "a", "text": 3}', "a", "expected a string"),
    ('{"id": "a", "text": "hi", "heard": 3}', "a", "heard: expected a string"),
    ('{"id": "a", "text": "hi", "tone": "x"}', "a", "unknown field 'tone'"),
    ('{"id": true, "text": "hi"}', 5, "id: expected"),
    ('{"id": "a", "text": "hi", "context": "%s"}' % ("x" * 1001), "a", "at most 1000"),
])
def test_batch_parse_names_what_is_wrong_and_the_line(raw, id_, why):
    with pytest.raises(batch.BatchError) as e:
        batch.parse(raw, 5, Limits())
    assert e.value.id == id_ and why in str(e.value) and "line 5" in str(e.value)


def test_heard_is_validated_on_the_command_line():
    run = subprocess.run([*CLI, "keyframes", "Okay.", "--heard", "x" * 1001], capture_output=True, text=True,
                         timeout=60, env=ENV)
    assert run.returncode == 2 and "--heard: 1001 characters, at most 1000" in run.stderr
    run = subprocess.run([*CLI, "say", "--stdin", "Okay."], capture_output=True, text=True, timeout=60, env=ENV)
    assert run.returncode == 2 and "--stdin" in run.stderr


# -- with the model ------------------------------------------------------------------------------------
@pytest.mark.model
def test_batch_file_with_a_malformed_line_goes_on(tmp_path):
    src = tmp_path / "lines.jsonl"
    src.write_text("\n".join([
        json.dumps({"id": "laugh", "text": "She laughs with delight at the wonderful news.", "heard": "You won!"}),
        '{"id": "broken", "text": "He', "",
        json.dumps({"text": "He glares at them, furious.", "context": "they broke his car"}),
        json.dumps({"id": "x", "text": "Hi", "emotoin": "joy"}),
    ]) + "\n")
    run = subprocess.run([*CLI, "keyframes", "--batch", str(src)], capture_output=True, text=True, timeout=300,
                         env=ENV)
    assert run.returncode == 1, run.stderr  # a line failed; the rest were done
    out = [json.loads(x) for x in run.stdout.splitlines()]
    ids = [o["id"] for o in out]
    assert ids.index("laugh") < ids.index(2) < ids.index(4) < ids.index("x")  # in input order
    by = {i: [o for o in out if o["id"] == i] for i in ("laugh", 2, 4, "x")}
    for i in ("laugh", 4):
        keys, last = by[i][:-1], by[i][-1]
        assert last == {"id": i, "done": True} and len(keys) >= 2
        times = [k["t"] for k in keys]
        assert times == sorted(times) and all(isinstance(k["values"], dict) and k["values"] for k in keys)
    assert len(by[2]) == 1 and "not valid JSON" in by[2][0]["error"]
    assert len(by["x"]) == 1 and "unknown field 'emotoin'" in by["x"][0]["error"]
    assert max(k["values"].get("MouthSmileLeft", 0) for k in by["laugh"][:-1]) > 0.3
    assert max(k["values"].get("BrowDownLeft", 0) for k in by[4][:-1]) > 0.3
    # the same from standard input
    run = subprocess.run([*CLI, "keyframes", "--batch", "-"], input=src.read_text().splitlines()[0] + "\n",
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0 and json.loads(run.stdout.splitlines()[-1]) == {"id": "laugh", "done": True}


@pytest.mark.model
def test_say_stdin_starts_on_the_first_sentence_before_the_input_ends():
    port = free_udp_port()
    rx = Receiver(port)
    rx.start()
    p = subprocess.Popen([*CLI, "say", "--stdin", "--sink", f"livelink://127.0.0.1:{port}"], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        p.stdin.write("She laughs with delight at the wonderful news!\n")
        p.stdin.flush()
        moved = False
        end = time.monotonic() + 120
        while not moved and time.monotonic() < end and p.poll() is None:
            time.sleep(0.1)
            moved = any(decode_packet(d).values[:52].max() > 0.3 for _, d in rx.packets[-30:])
        assert moved, "the face did not move on the first sentence"
        assert p.poll() is None  # still reading: the line is not over
        n_before = len(rx.packets)
        p.stdin.write("Then a spider drops onto her hand and she screams in terror.\n")
        p.stdin.close()
        assert p.wait(120) == 0
    finally:
        if p.poll() is None:
            p.kill()
        rx.close()
    report = json.loads(p.stderr.read().strip().splitlines()[-1])
    assert report["error"] is None and report["keyframes"] >= 4
    assert report["line"].startswith("She laughs") and "spider" in report["line"]
    after = np.stack([decode_packet(d).values for _, d in rx.packets[n_before:]])
    assert after[:, :52].max() > 0.3 and len(after) > 30  # the second sentence played after the first
