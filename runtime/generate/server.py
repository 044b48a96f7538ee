"""Remote generation: an OpenAI-style ``/v1/completions`` server that accepts a GBNF ``grammar``.

llama.cpp's ``llama-server``, llama-cpp-python's server and compatible engines all take the same
request, so a studio can run many characters against a pool of model servers. Same prompt, same
language, same parser as the local backend; lines that tell a sequence are sent clause by clause.
What a remote server cannot do for us is calibrate the expression choice (that needs the logits
between two tokens), so a small model does better locally.

The wire format is two pure functions (:func:`completion_request`, :class:`SSEDecoder`) with a thin
``http.client`` transport around them: no dependency beyond the standard library.

A model is named by URL: ``http://host:8080`` (ChatML prompt) or ``http://host:8080#gemma``.

On a CPU with Intel AMX, start ``llama-server`` with ``--no-repack``, or llama-cpp-python's server
as ``tests/llama_server.py`` does: llama.cpp's AMX weight buffers crash on the prompt's first
batch (ggml-org/llama.cpp#20824).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from runtime.generate import beats
from runtime.generate import prompt as prompts
from runtime.generate.llama import GenerationError
from runtime.generate.prompt import LineRequest
from runtime.text.feeling import FeelingModel

log = logging.getLogger(__name__)


class ServerError(GenerationError):
    pass


def is_url(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def completion_request(prompt: str, grammar: str, *, max_tokens: int, model: str = "",
                       stream: bool = True) -> bytes:
    """The JSON body of one greedy, grammar-constrained completion."""
    body = {"prompt": prompt, "grammar": grammar, "max_tokens": max_tokens, "temperature": 0.0,
            "top_k": 1, "stream": stream, "cache_prompt": True}
    if model:
        body["model"] = model
    return json.dumps(body).encode("utf-8")


class SSEDecoder:
    """Server-sent events in (any split), completion text pieces out; ``done`` after ``[DONE]``."""

    def __init__(self) -> None:
        self._buf = b""
        self.done = False

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out: list[str] = []
        while True:
            cut = self._buf.find(b"\n")
            if cut < 0:
                return out
            line, self._buf = self._buf[:cut].rstrip(b"\r"), self._buf[cut + 1:]
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event names
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                obj = json.loads(payload)
                text = obj["choices"][0].get("text", "")
            except (ValueError, KeyError, IndexError, TypeError):
                raise ServerError(f"unexpected event from the model server: {payload[:120]!r}") from None
            if text:
                out.append(text)


class _Server:
    """One completions server of the pool: where it is, its prompt template, how busy it is."""

    def __init__(self, url: str, system: str, examples: list[tuple[str, str]] | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"model server URL {url!r}: expected http://HOST:PORT")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.path = (parts.path.rstrip("/") or "") + "/v1/completions"
        self.template = parts.fragment or "chatml"
        if self.template not in prompts.TEMPLATES:
            raise ServerError(f"model server URL {url!r}: unknown prompt template {self.template!r} "
                              f"(known: {', '.join(prompts.TEMPLATES)})")
        self.prefix = prompts.prefix(system, examples, self.template)
        self.label = f"{self.host}:{self.port}"
        self.in_flight = 0
        self.down_until = 0.0  # monotonic time before which a failed server gets no new line
        self.lines = 0
        self.failures = 0


class ServerBackend:
    """Streams keyframe text from one completions server or a pool of them.

    Lines from many threads at once (``concurrent``): each line goes to the server with the fewest
    lines in flight (at most ``slots`` each: llama-server's ``--parallel``), and waits for a free
    slot when every server is busy. A server that fails (refused, reset, timed out, an HTTP error)
    ends the line it was writing, with an error, and gets no new line for ``retry_after`` seconds:
    the next lines go to the others. When every server has failed, a new line tries the one that
    failed longest ago (it may be back).
    """

    concurrent = True

    def __init__(self, url: str | list[str], grammar: str, *, max_tokens: int = 96, timeout: float = 10.0,
                 max_keyframes: int = 8, clause_keyframes: int = 3, split_clauses: bool = True,
                 model: str = "", system: str = prompts.SYSTEM,
                 examples: list[tuple[str, str]] | None = None, feeling: FeelingModel | None = None,
                 beat_rules: beats.Rules = beats.DEFAULT, slots: int = 1, retry_after: float = 10.0) -> None:
        self.feeling = feeling  # no logits come back: its reading goes to the server as the Emotion hint
        self.beat_rules = beat_rules
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ServerError("no model server URL given")
        self.servers = [_Server(u, system, examples) for u in urls]
        first = self.servers[0]
        self.host, self.port, self.template, self.prefix = first.host, first.port, first.template, first.prefix
        # the answer opens with the feeling word ("They feel sad."), as in the examples; that line is
        # the model's own here (no logits to calibrate it) and never reaches the parser
        self.grammar = ('root ::= feel body\nfeel ::= " " [a-z]{1,20} ".\\n"\n'
                        + grammar.replace("root ::=", "body ::=", 1))
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_keyframes = max_keyframes
        self.clause_keyframes = clause_keyframes
        self.split_clauses = split_clauses
        self.model = model
        self.slots = max(1, slots)
        self.retry_after = retry_after
        self.stats: dict[str, float] = {}
        self._cv = threading.Condition()
        self._turn = 0  # spreads ties between equally busy servers

    # -- the pool ---------------------------------------------------------------------------------
    def _acquire(self, cancel: threading.Event | None) -> _Server | None:
        """A server with a free slot (None if cancelled while every one was busy)."""
        with self._cv:
            while True:
                now = time.monotonic()
                free = [s for s in self.servers if s.in_flight < self.slots]
                up = [s for s in free if s.down_until <= now]
                if not up and free and all(s.down_until > now for s in self.servers):
                    up = [min(free, key=lambda s: s.down_until)]  # all failed: try the oldest failure
                if up:
                    self._turn += 1
                    n = len(self.servers)
                    best = min(up, key=lambda s: (s.in_flight, (self.servers.index(s) - self._turn) % n))
                    best.in_flight += 1
                    best.lines += 1
                    return best
                if cancel is not None and cancel.is_set():
                    return None
                self._cv.wait(0.05)

    def _release(self, server: _Server, failed: bool) -> None:
        with self._cv:
            server.in_flight -= 1
            if failed:
                server.failures += 1
                server.down_until = time.monotonic() + self.retry_after
            else:
                server.down_until = 0.0
            self._cv.notify_all()

    def _connect(self, server: _Server) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if server.https else http.client.HTTPConnection
        return cls(server.host, server.port, timeout=self.timeout)

    def _clause(self, server: _Server, req: LineRequest, keyframes: int, budget: int,
                cancel: threading.Event | None) -> Iterator[str]:
        body = completion_request(server.prefix + prompts.line_part(req, server.template), self.grammar,
                                  max_tokens=budget, model=self.model)
        conn = self._connect(server)
        where = f"model server {server.label}"
        try:
            try:
                conn.request("POST", server.path, body=body, headers={"Content-Type": "application/json",
                                                                      "Accept": "text/event-stream"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise ServerError(f"{where}: {e}") from None
            if resp.status != 200:
                raise ServerError(f"{where}: HTTP {resp.status} "
                                  f"{resp.read(300).decode('utf-8', 'replace').strip()}")
            sse = SSEDecoder()
            lines = -1  # the feeling line does not count
            while not sse.done:
                if cancel is not None and cancel.is_set():
                    return
                try:
                    data = resp.read1(4096)
                except (TimeoutError, OSError, http.client.HTTPException) as e:
                    raise ServerError(f"{where}: {e}") from None
                if not data:
                    if lines < keyframes:  # the stream ended without [DONE]: the server went away
                        raise ServerError(f"{where}: the stream ended mid-line")
                    return
                for piece in sse.feed(data):
                    if lines < 0 and "\n" in piece:  # drop the feeling line
                        piece = piece.split("\n", 1)[1]
                        lines = 0
                    elif lines < 0:
                        continue
                    yield piece
                    lines += piece.count("\n")
                    if lines >= keyframes:  # this clause has its share: hang up, the server stops
                        return
        finally:
            conn.close()

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        """Yield whole keyframe lines as the server writes them; times continue across clauses."""
        parts = beats.plan(req, self.feeling, split=self.split_clauses, rules=self.beat_rules)
        each = min(self.max_keyframes, self.clause_keyframes + 1) if len(parts) == 1 else max(
            2, min(self.clause_keyframes, self.max_keyframes // len(parts)))
        server = self._acquire(cancel)
        if server is None:
            return
        failed = False
        try:
            t0 = time.perf_counter()
            first = None
            pieces = 0
            for sub in parts:  # each beat keeps heard, context ...
                if sub.prior and not sub.emotion.strip():
                    sub.emotion = max(sub.prior, key=sub.prior.__getitem__)
                line, n = "", 0
                for piece in self._clause(server, sub, each, self.max_tokens, cancel):
                    pieces += 1
                    n += 1
                    line += piece
                    if "\n" in line:  # whole lines only: a cut-off clause drops its partial line
                        done, line = line.rsplit("\n", 1)
                        if first is None:
                            first = time.perf_counter() - t0
                        yield done + "\n", n
                        n = 0
                if cancel is not None and cancel.is_set():
                    break
            self.stats = {"pieces": pieces, "seconds": time.perf_counter() - t0,
                          "first_keyframe_s": first if first is not None else float("nan"),
                          "clauses": len(parts), "server": server.label}
        except ServerError:
            failed = True
            log.warning("model server %s failed; it gets no new line for %.0f s", server.label, self.retry_after)
            raise
        finally:
            self._release(server, failed)
