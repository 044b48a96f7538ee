"""Receivers for the sink tests, built on code the project did not write where one exists.

- :class:`OscPeer`: a UDP receiver that decodes with python-osc (``OscPacket`` + ``Dispatcher``),
  standing in for VSeeFace / VRChat / TouchDesigner. It can be killed and restarted on its port.
- :class:`FakeVTubeStudio`: a loopback WebSocket server (the ``websockets`` library) that speaks
  the part of VTube Studio's documented plugin API the sink uses, standing in for VTube Studio.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_packet import OscPacket, ParseError


def wait_until(cond, timeout: float = 5.0, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


class OscPeer:
    """Records every datagram and every (address, args) python-osc decodes from it."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.datagrams: list[bytes] = []
        self.messages: list[tuple[str, tuple]] = []
        self.packets: list[list[tuple[str, tuple]]] = []  # messages per datagram
        self.bad: list[tuple[bytes, str]] = []  # datagrams python-osc could not parse
        self.dispatcher = Dispatcher()
        self.dispatcher.set_default_handler(lambda addr, *args: self._current.append((addr, args)))
        self._current: list[tuple[str, tuple]] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> OscPeer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self._sock.bind(("127.0.0.1", self.port))
        self.port = self._sock.getsockname()[1]
        self._sock.settimeout(0.05)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            self._current = []
            try:
                OscPacket(data)
            except ParseError as e:  # python-osc could not parse it: a real receiver would drop it
                self.bad.append((data, str(e)))
                continue
            self.dispatcher.call_handlers_for_packet(data, addr)
            with self.lock:
                self.datagrams.append(data)
                self.packets.append(self._current)
                self.messages.extend(self._current)

    def stop(self) -> None:
        """Kill the receiver: the port closes, so the sender's kernel reports it refused."""
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if self._sock:
            self._sock.close()

    def values(self, address: str) -> list[tuple]:
        with self.lock:
            return [args for a, args in self.messages if a == address]


# --- VTube Studio ------------------------------------------------------------------------------

DEFAULT_PARAMS = {
    "FacePositionX", "FacePositionY", "FacePositionZ", "FaceAngleX", "FaceAngleY", "FaceAngleZ",
    "MouthSmile", "MouthOpen", "Brows", "TongueOut", "EyeOpenLeft", "EyeOpenRight", "EyeLeftX",
    "EyeLeftY", "EyeRightX", "EyeRightY", "CheekPuff", "FaceAngry", "BrowLeftY", "BrowRightY",
    "MouthX", "MousePositionX", "MousePositionY", "VoiceVolume", "VoiceFrequency",
}


class FakeVTubeStudio:
    """The plugin API as VTube Studio's README documents it (apiName/apiVersion envelope,
    AuthenticationTokenRequest -> token or APIError 50, AuthenticationRequest -> authenticated
    true/false, APIError 8 before authentication, ParameterCreationRequest with 4-32 alphanumeric
    names, InjectParameterDataRequest with error 453 for unknown parameters and 454 for a parameter
    another plugin "set"s, and parameters that are "lost" after one second without data)."""

    def __init__(self, port: int = 0, *, approve: bool = True) -> None:
        self.port = port
        self.approve = approve
        self.tokens: set[str] = set()  # tokens VTube Studio still honours (persist across restarts)
        self.token_requests = 0
        self.auth_requests: list[bool] = []
        self.custom: dict[str, dict] = {}
        self.other_plugin_owns: set[str] = set()  # parameters another plugin controls in "set" mode
        self.last_set: dict[str, float] = {}  # parameter -> monotonic time of the last value
        self.values: dict[str, float] = {}
        self.lost: list[tuple[str, float]] = []  # (parameter, silence in s) when a parameter expired
        self.injects = 0
        self.errors_sent: list[int] = []
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    # lifecycle: start() / stop() can be called repeatedly (kill and restart VTube Studio)
    def start(self) -> FakeVTubeStudio:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            from websockets.asyncio.server import serve

            asyncio.set_event_loop(self._loop)

            async def main() -> None:
                self._server = await serve(self._handler, "127.0.0.1", self.port)
                self.port = self._server.sockets[0].getsockname()[1]
                expiry = asyncio.create_task(self._expire())
                ready.set()
                await self._server.wait_closed()
                expiry.cancel()

            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(5), "fake VTube Studio did not start"
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread:
            self._thread.join(5)
        self.last_set.clear()  # a restarted VTube Studio controls nothing yet

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for name, t in list(self.last_set.items()):
                if now - t > 1.0:  # VTube Studio: "re-send at least once every second"
                    self.lost.append((name, now - t))
                    del self.last_set[name]

    def _reply(self, req: dict, message_type: str, data: dict) -> str:
        return json.dumps({"apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0",
                           "timestamp": int(time.time() * 1000), "requestID": req.get("requestID", ""),
                           "messageType": message_type, "data": data})

    def _error(self, req: dict, eid: int, message: str) -> str:
        self.errors_sent.append(eid)
        return self._reply(req, "APIError", {"errorID": eid, "message": message})

    async def _handler(self, ws) -> None:
        self.connections += 1
        authed = False
        async for raw in ws:
            req = json.loads(raw)
            assert req.get("apiName") == "VTubeStudioPublicAPI" and req.get("apiVersion") == "1.0", req
            kind, data = req.get("messageType"), req.get("data") or {}
            if kind == "AuthenticationTokenRequest":
                self.token_requests += 1
                assert 3 <= len(data["pluginName"]) <= 32 and 3 <= len(data["pluginDeveloper"]) <= 32
                if not self.approve:
                    await ws.send(self._error(req, 50, "User has denied API access for your plugin."))
                    continue
                token = uuid.uuid4().hex
                self.tokens.add(token)
                await ws.send(self._reply(req, "AuthenticationTokenResponse", {"authenticationToken": token}))
            elif kind == "AuthenticationRequest":
                authed = data.get("authenticationToken") in self.tokens
                self.auth_requests.append(authed)
                await ws.send(self._reply(req, "AuthenticationResponse", {
                    "authenticated": authed,
                    "reason": "Token valid." if authed else "Token invalid or revoked."}))
            elif not authed:
                await ws.send(self._error(req, 8, "This request requires authentication."))
            elif kind == "ParameterCreationRequest":
                name = data.get("parameterName", "")
                if not re.fullmatch(r"[A-Za-z0-9]{4,32}", name) or name in DEFAULT_PARAMS:
                    await ws.send(self._error(req, 352, f"Invalid parameter name {name!r}"))
                    continue
                self.custom[name] = data
                await ws.send(self._reply(req, "ParameterCreationResponse", {"parameterName": name}))
            elif kind == "InjectParameterDataRequest":
                self.injects += 1
                params = data.get("parameterValues", [])
                mode = data.get("mode", "set")
                if mode not in ("set", "add"):
                    await ws.send(self._error(req, 455, f"Unknown mode {mode!r}"))
                    continue
                unknown = [p["id"] for p in params if p["id"] not in DEFAULT_PARAMS and p["id"] not in self.custom]
                if unknown:
                    await ws.send(self._error(req, 453, f"Parameter {unknown[0]} not found"))
                    continue
                owned = [p["id"] for p in params if p["id"] in self.other_plugin_owns]
                if owned and mode == "set":
                    await ws.send(self._error(req, 454, f"Parameter {owned[0]} is controlled by another plugin"))
                    continue
                now = time.monotonic()
                for p in params:
                    v = p["value"]
                    assert isinstance(v, (int, float)) and -1e6 <= v <= 1e6
                    self.values[p["id"]] = v
                    self.last_set[p["id"]] = now
                await ws.send(self._reply(req, "InjectParameterDataResponse", {}))
            else:
                await ws.send(self._error(req, 1, f"unsupported in this fake: {kind}"))
