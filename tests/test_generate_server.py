"""The remote backend: wire format as pure functions, and a real llama-cpp-python server on loopback."""

import json
import socket

import pytest

from runtime.generate.prompt import LineRequest
from runtime.generate.server import ServerBackend, ServerError, SSEDecoder, completion_request, is_url
from runtime.keyframes.grammar import gbnf
from runtime.keyframes.language import Language
from runtime.keyframes.parser import KeyframeParser


def test_request_is_greedy_streaming_and_carries_the_grammar():
    body = json.loads(completion_request("P", "root ::= \"a\"", max_tokens=7))
    assert body["prompt"] == "P" and body["grammar"] == 'root ::= "a"' and body["max_tokens"] == 7
    assert body["stream"] is True and body["temperature"] == 0.0


def test_sse_decoder_takes_any_split():
    events = (b'data: {"choices":[{"text":"2 joy"}]}\r\n\r\n: keep-alive\n\n'
              b'data: {"choices":[{"text":" 7\\n"}]}\n\ndata: [DONE]\n\n')
    for cut in range(1, len(events)):
        dec = SSEDecoder()
        got = dec.feed(events[:cut]) + dec.feed(events[cut:])
        assert "".join(got) == "2 joy 7\n" and dec.done


def test_sse_decoder_names_a_bad_event():
    with pytest.raises(ServerError, match="unexpected event"):
        SSEDecoder().feed(b'data: {"error": "boom"}\n')


def test_urls():
    assert is_url("http://127.0.0.1:8080") and not is_url("smollm2-135m")
    assert ServerBackend("http://h:1#gemma", "root ::= x").template == "gemma"
    with pytest.raises(ServerError, match="unknown prompt template"):
        ServerBackend("http://h:1#nope", "root ::= x")


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = ServerBackend(f"http://127.0.0.1:{port}", gbnf(Language()), timeout=2.0)
    with pytest.raises(ServerError, match=f"127.0.0.1:{port}"):
        list(b.stream(LineRequest("hi")))


def test_every_clause_keeps_heard_context_and_emotion(monkeypatch):
    seen = []

    def clause(self, server, req, keyframes, budget, cancel):
        seen.append(req)
        yield "2 joy 5\n"

    monkeypatch.setattr(ServerBackend, "_clause", clause)
    b = ServerBackend("http://127.0.0.1:1", "root ::= x")
    req = LineRequest("She laughs, then suddenly cries.", context="a wake", emotion="sad", id="c1",
                      heard="He is gone.")
    assert [p for p, _ in b.stream(req)] == ["2 joy 5\n", "2 joy 5\n"]
    assert len(seen) == 2 and seen[0].text == "She laughs"
    assert all((r.heard, r.context, r.emotion, r.id) == ("He is gone.", "a wake", "sad", "c1") for r in seen)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="needs the test extra (llama-cpp-python's server)")
    from .test_server_pool import _start, _wait  # one way to start a real server on loopback

    proc, url, log = _start(tmp_path_factory.mktemp("server") / "server.log")
    _wait(proc, url, log)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.mark.model
def test_real_server_streams_keyframes_that_parse(server):
    lang = Language()
    backend = ServerBackend(server, gbnf(lang), timeout=60.0)
    parser = KeyframeParser(lang, strict=True)
    pieces = list(backend.stream(LineRequest("She laughs at the joke, then suddenly looks worried.")))
    assert all(text.endswith("\n") for text, _ in pieces)  # whole lines, as they complete
    keys = parser.feed("".join(t for t, _ in pieces)) + parser.close()
    assert backend.stats["clauses"] == 2 and len(keys) >= 4
    ts = [k.t for k in keys]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
