"""VTube Studio plugin API sink (``vts://localhost:8001``).

VTube Studio has no raw ARKit inputs, so a frame is mapped onto its default input parameters
(pure, vectorised: ``values = clip(W @ frame + b)``; see :func:`default_mapping` for the formulas)
plus, optionally, custom parameters named after ARKit channels (``vtubestudio.custom``).

The plugin session (WebSocket client, its own thread and asyncio loop):
1. ``AuthenticationRequest`` with the stored token; if VTube Studio rejects it, the token file is
   deleted and a new one requested;
2. with no token, ``AuthenticationTokenRequest``: VTube Studio asks the user once; the token is
   written to ``token_path`` (default ``~/.config/keyframeface/vtubestudio-token.json``, mode 0600);
3. ``ParameterCreationRequest`` for each custom parameter;
4. one ``InjectParameterDataRequest`` per frame (latest frame wins if VTube Studio is slower than
   the clock), and the last values again every ``keepalive`` seconds when no frame comes, since
   VTube Studio takes a parameter back after one second without data.
Errors come back asynchronously and are logged once per change: 454 (another plugin "set"s one of
our parameters) says what to do about it. A lost connection is retried with exponential backoff.
``send`` never blocks: it swaps a reference and wakes the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import channels
from runtime.sinks.base import Sink, SinkError, resolve

log = logging.getLogger(__name__)

DEFAULT_PORT = 8001
API_NAME = "VTubeStudioPublicAPI"
API_VERSION = "1.0"
DEFAULT_TOKEN_PATH = "~/.config/keyframeface/vtubestudio-token.json"
PLUGIN_NAME = "KeyframeFace"
PLUGIN_DEVELOPER = "KeyframeFace Runtime"

# APIError ids we act on (VTube Studio's ErrorID.cs)
ERR_NEEDS_AUTH = 8
ERR_USER_DENIED = 50
ERR_PARAM_NOT_FOUND = 453
ERR_CONTROLLED_BY_OTHER_PLUGIN = 454

# VTube Studio default inputs that share an ARKit name: never created as custom parameters
_VTS_DEFAULT_NAMES = {"CheekPuff", "TongueOut"}
_NAME_OK = re.compile(r"^[A-Za-z0-9]{4,32}$")


# --- pure parts: messages and mapping -----------------------------------------------------------

def request(message_type: str, data: dict | None = None, request_id: str = "kf") -> dict:
    msg = {"apiName": API_NAME, "apiVersion": API_VERSION, "requestID": request_id,
           "messageType": message_type}
    if data is not None:
        msg["data"] = data
    return msg


@dataclass
class Mapping:
    """Frame -> VTube Studio parameter values: ``clip(W @ frame + b, lo, hi)``."""

    names: list[str]
    weights: np.ndarray  # float32 (P, 61)
    bias: np.ndarray  # float32 (P,)
    lo: np.ndarray
    hi: np.ndarray
    custom: list[str]  # the names among ``names`` that we create as custom parameters

    def values(self, frame: np.ndarray) -> np.ndarray:
        y = self.weights @ frame + self.bias
        y[y != y] = 0.0  # NaN would be invalid JSON (error 451 in VTube Studio): send 0 instead
        return np.minimum(np.maximum(y, self.lo), self.hi)  # np.clip costs 3x more on 17 values

    def __post_init__(self) -> None:
        # the JSON around the numbers never changes: build it once (names are alphanumeric)
        self._parts = [f'{{"id":"{n}","value":' for n in self.names]

    def inject(self, values: np.ndarray, mode: str = "set", request_id: str = "kf") -> str:
        """The InjectParameterDataRequest text (same JSON as json.dumps would write, built faster)."""
        nums = np.round(values.astype(np.float64), 5).tolist()
        params = ",".join([p + repr(v) + "}" for p, v in zip(self._parts, nums)])
        return (f'{{"apiName":"{API_NAME}","apiVersion":"{API_VERSION}","requestID":{json.dumps(request_id)},'
                f'"messageType":"InjectParameterDataRequest","data":{{"faceFound":true,'
                f'"mode":{json.dumps(mode)},"parameterValues":[{params}]}}}}')


def _row(terms: dict[str, float]) -> np.ndarray:
    r = np.zeros(channels.COUNT, dtype=np.float32)
    for name, w in terms.items():
        r[channels.INDEX[name]] += w
    return r


def default_mapping() -> list[tuple[str, dict[str, float], float, float, float]]:
    """(parameter, {channel: weight}, bias, lo, hi) rows of the default ARKit -> VTube Studio map.

    Signs follow an avatar facing the viewer: FaceAngleX > 0 and EyeX > 0 turn toward the
    avatar's own left (the viewer's right), FaceAngleY > 0 and EyeY > 0 look up, FaceAngleZ > 0
    tilts the top of the head toward the avatar's right shoulder. Angles are degrees (channel
    value * 180). MouthSmile and the brow inputs rest at 0.5, as VTube Studio's own tracking does.
    Flip or scale any of them with ``vtubestudio.gains``.
    """
    deg = 180.0
    return [
        ("FaceAngleX", {"HeadYaw": deg}, 0.0, -180.0, 180.0),
        ("FaceAngleY", {"HeadPitch": -deg}, 0.0, -180.0, 180.0),
        ("FaceAngleZ", {"HeadRoll": deg}, 0.0, -180.0, 180.0),
        ("MouthOpen", {"JawOpen": 1.0}, 0.0, 0.0, 1.0),
        ("MouthSmile", {"MouthSmileLeft": 0.25, "MouthSmileRight": 0.25,
                        "MouthFrownLeft": -0.25, "MouthFrownRight": -0.25}, 0.5, 0.0, 1.0),
        ("MouthX", {"MouthLeft": 1.0, "MouthRight": -1.0}, 0.0, -1.0, 1.0),
        ("Brows", {"BrowInnerUp": 0.25, "BrowOuterUpLeft": 0.125, "BrowOuterUpRight": 0.125,
                   "BrowDownLeft": -0.25, "BrowDownRight": -0.25}, 0.5, 0.0, 1.0),
        ("BrowLeftY", {"BrowInnerUp": 0.25, "BrowOuterUpLeft": 0.25, "BrowDownLeft": -0.5}, 0.5, 0.0, 1.0),
        ("BrowRightY", {"BrowInnerUp": 0.25, "BrowOuterUpRight": 0.25, "BrowDownRight": -0.5}, 0.5, 0.0, 1.0),
        ("EyeOpenLeft", {"EyeBlinkLeft": -1.0}, 1.0, 0.0, 1.0),
        ("EyeOpenRight", {"EyeBlinkRight": -1.0}, 1.0, 0.0, 1.0),
        ("EyeLeftX", {"EyeLookOutLeft": 1.0, "EyeLookInLeft": -1.0}, 0.0, -1.0, 1.0),
        ("EyeLeftY", {"EyeLookUpLeft": 1.0, "EyeLookDownLeft": -1.0}, 0.0, -1.0, 1.0),
        ("EyeRightX", {"EyeLookInRight": 1.0, "EyeLookOutRight": -1.0}, 0.0, -1.0, 1.0),
        ("EyeRightY", {"EyeLookUpRight": 1.0, "EyeLookDownRight": -1.0}, 0.0, -1.0, 1.0),
        ("CheekPuff", {"CheekPuff": 1.0}, 0.0, 0.0, 1.0),
        ("TongueOut", {"TongueOut": 1.0}, 0.0, 0.0, 1.0),
    ]


def build_mapping(custom: list[str] | tuple[str, ...] = (), prefix: str = "",
                  gains: dict[str, float] | None = None) -> Mapping:
    """The default rows plus one identity row per custom ARKit channel (``"all"`` = the 52 shapes)."""
    rows = default_mapping()
    names = [r[0] for r in rows]
    wanted: list[int] = []
    for c in custom:
        if c.lower() == "all":
            wanted += range(channels.SHAPES)
        else:
            try:
                wanted.append(channels.lookup(c))
            except KeyError:
                raise ValueError(f"custom parameter {c!r} is not an ARKit channel") from None
    created: list[str] = []
    for i in dict.fromkeys(wanted):  # keep order, drop repeats
        name = channels.NAMES[i]
        pname = name if name in _VTS_DEFAULT_NAMES else prefix + name
        if pname in names:
            continue  # a default input already carries it
        if not _NAME_OK.match(pname):
            raise ValueError(f"custom parameter name {pname!r}: VTube Studio wants 4-32 letters/digits")
        lo = -180.0 if i >= channels.SHAPES else 0.0
        hi = 180.0 if i >= channels.SHAPES else 1.0
        scale = 180.0 if i >= channels.SHAPES else 1.0  # rotations as degrees, like FaceAngle
        rows.append((pname, {name: scale}, 0.0, lo, hi))
        names.append(pname)
        created.append(pname)
    if len(created) > 100:
        raise ValueError("VTube Studio allows at most 100 custom parameters per plugin")
    gains = gains or {}
    unknown = set(gains) - set(names)
    if unknown:
        raise ValueError(f"gains for unknown parameter(s) {sorted(unknown)}; known: {names}")
    weights = np.stack([_row(r[1]) * gains.get(r[0], 1.0) for r in rows]).astype(np.float32)
    return Mapping(names=names, weights=weights,
                   bias=np.array([r[2] for r in rows], dtype=np.float32),
                   lo=np.array([r[3] for r in rows], dtype=np.float32),
                   hi=np.array([r[4] for r in rows], dtype=np.float32),
                   custom=created)


# --- token storage ------------------------------------------------------------------------------

class TokenStore:
    """The plugin token, one JSON file, keyed by plugin name and developer (a token is only valid
    for the names it was issued to)."""

    def __init__(self, path: str | Path, plugin: str, developer: str) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.plugin, self.developer = plugin, developer

    def load(self) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("vts: cannot read token file %s (%s); will ask VTube Studio for a new token", self.path, e)
            return None
        if data.get("pluginName") != self.plugin or data.get("pluginDeveloper") != self.developer:
            return None
        token = data.get("authenticationToken")
        return token if isinstance(token, str) and token else None

    def save(self, token: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pluginName": self.plugin, "pluginDeveloper": self.developer,
                           "authenticationToken": token}, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("vts: cannot store the token in %s (%s): VTube Studio will ask again next run",
                        self.path, e.strerror or e)

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


# --- the sink -----------------------------------------------------------------------------------

class _Denied(Exception):
    pass


class VtsSink(Sink):
    scheme = "vts"

    def __init__(self, host: str, port: int, *, token_path: str = DEFAULT_TOKEN_PATH,
                 plugin_name: str = PLUGIN_NAME, plugin_developer: str = PLUGIN_DEVELOPER,
                 custom: list[str] | tuple[str, ...] = (), prefix: str = "",
                 gains: dict[str, float] | None = None, mode: str = "set", keepalive: float = 0.5,
                 backoff: tuple[float, float] = (0.5, 10.0), open_timeout: float = 3.0) -> None:
        super().__init__()
        self.host, self.port = host, port
        if mode not in ("set", "add"):
            raise SinkError(f"{self.label}: mode must be 'set' or 'add', not {mode!r}")
        if not 3 <= len(plugin_name) <= 32 or not 3 <= len(plugin_developer) <= 32:
            raise SinkError(f"{self.label}: plugin name and developer must be 3-32 characters")
        try:
            self.mapping = build_mapping(custom, prefix, gains)
        except ValueError as e:
            raise SinkError(f"{self.label}: {e}") from None
        resolve(host, port)  # an unknown host is a startup error, not an endless retry
        self.url = f"ws://{host}:{port}"
        self.tokens = TokenStore(token_path, plugin_name, plugin_developer)
        self.plugin_name, self.plugin_developer = plugin_name, plugin_developer
        self.mode = mode
        self.keepalive = keepalive
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.healthy = False  # nothing is reachable until a session is authenticated
        self.connected = threading.Event()  # set while a session is authenticated (tests, status)
        self.sessions = 0  # authenticated sessions so far
        self.injected = 0  # InjectParameterDataRequests sent
        self.errors: dict[int, int] = {}  # APIError id -> count
        self._latest: tuple[np.ndarray, int, float] | None = None
        self._wake_pending = False
        self._ids = itertools.count()
        self._closing = False
        self._conflict = False
        self.loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name=f"vts:{port}", daemon=True)
        self.thread.start()

    @property
    def label(self) -> str:
        return f"vts://{self.host}:{self.port}"

    # --- clock thread -------------------------------------------------------------------------

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        if self._latest is not None and self._wake_pending:
            self.dropped += 1  # the previous frame was not taken yet: latest wins
        self._latest = (frame.copy(), number, t)
        self.sent += 1
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self.loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5)

    # --- client thread ------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on close."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _main(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        delay = self.backoff[0]
        reported_down = False
        while not self._stop.is_set():
            why = ""
            try:
                async with connect(self.url, open_timeout=self.open_timeout, compression=None,
                                   max_size=2**20, ping_interval=None, close_timeout=1.0) as ws:
                    await self._session(ws)
                    delay = self.backoff[0]
                    why = "VTube Studio closed the connection"
            except _Denied:
                why = "the user denied plugin access in VTube Studio"
                delay = self.backoff[1]
            except (TimeoutError, OSError, WebSocketException) as e:
                why = (getattr(e, "strerror", None) or str(e) or type(e).__name__)
            except Exception as e:  # a bug must not end the retry loop silently
                why = f"{type(e).__name__}: {e}"
                log.exception("%s: session failed", self.label)
            self.connected.clear()
            if self._stop.is_set():
                break
            if self.healthy or not reported_down:  # once per change of state, not per retry
                reported_down = True
                self.healthy = False
                log.warning("%s: receiver unreachable (%s; is VTube Studio running with its plugin API "
                            "on port %d?); retrying with backoff", self.label, why, self.port)
            await self._sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _call(self, ws, message_type: str, data: dict | None = None) -> dict:
        """One request/response during the handshake (responses are matched by requestID)."""
        rid = f"kf-{message_type}-{next(self._ids)}"
        await ws.send(json.dumps(request(message_type, data, rid)))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("requestID") == rid:
                return reply

    async def _authenticate(self, ws) -> None:
        names = {"pluginName": self.plugin_name, "pluginDeveloper": self.plugin_developer}
        token = self.tokens.load()
        if token:
            reply = await self._call(ws, "AuthenticationRequest", {**names, "authenticationToken": token})
            if reply.get("data", {}).get("authenticated"):
                return
            log.warning("%s: VTube Studio rejected the stored token (%s); asking for a new one",
                        self.label, reply.get("data", {}).get("reason") or reply.get("data", {}).get("message"))
            self.tokens.clear()
        log.warning("%s: asking VTube Studio for plugin access: click 'Allow' in VTube Studio", self.label)
        reply = await self._call(ws, "AuthenticationTokenRequest", names)
        data = reply.get("data", {})
        if reply.get("messageType") == "APIError":
            if data.get("errorID") == ERR_USER_DENIED:
                log.error("%s: plugin access was denied in VTube Studio; retrying in %.0f s", self.label,
                          self.backoff[1])
                raise _Denied()
            raise RuntimeError(f"token request failed: error {data.get('errorID')}: {data.get('message')}")
        token = data.get("authenticationToken")
        if not token:
            raise RuntimeError("token request answered without a token")
        self.tokens.save(token)
        reply = await self._call(ws, "AuthenticationRequest", {**names, "authenticationToken": token})
        if not reply.get("data", {}).get("authenticated"):
            self.tokens.clear()
            raise RuntimeError(f"VTube Studio rejected a fresh token: {reply.get('data')}")

    async def _create_parameters(self, ws) -> None:
        for name in self.mapping.custom:
            reply = await self._call(ws, "ParameterCreationRequest", {
                "parameterName": name, "explanation": f"ARKit {name} from KeyframeFace",
                "min": float(self.mapping.lo[self.mapping.names.index(name)]),
                "max": float(self.mapping.hi[self.mapping.names.index(name)]), "defaultValue": 0.0})
            if reply.get("messageType") == "APIError":
                d = reply.get("data", {})
                log.error("%s: cannot create custom parameter %s: error %s: %s", self.label, name,
                          d.get("errorID"), d.get("message"))

    async def _session(self, ws) -> None:
        await self._authenticate(ws)
        await self._create_parameters(ws)
        self.sessions += 1
        self.connected.set()
        if self.sessions > 1:
            self._state(True)  # "reachable again", once per recovery
        self.healthy = True
        log.info("%s: authenticated, driving %d parameters", self.label, len(self.mapping.names))
        reader = asyncio.create_task(self._reader(ws))
        stop = asyncio.create_task(self._stop.wait())
        try:
            last_values: np.ndarray | None = None
            last_sent = time.monotonic()
            while not self._stop.is_set():
                wake = asyncio.create_task(self._wake.wait())
                timeout = max(0.0, self.keepalive - (time.monotonic() - last_sent))
                done, _ = await asyncio.wait({wake, reader, stop}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not wake.done():
                    wake.cancel()
                if reader in done:
                    reader.result()  # re-raise the connection error
                    return
                if stop in done:
                    return
                if self._wake.is_set():
                    self._wake.clear()
                    self._wake_pending = False
                    latest, self._latest = self._latest, None
                    if latest is not None:
                        last_values = self.mapping.values(latest[0])
                if last_values is None:
                    continue
                # a new frame, or the keepalive: VTube Studio drops a parameter after 1 s of silence
                await ws.send(self.mapping.inject(last_values, self.mode, f"kf-{next(self._ids)}"))
                self.injected += 1
                last_sent = time.monotonic()
        finally:
            reader.cancel()
            stop.cancel()

    async def _reader(self, ws) -> None:
        async for raw in ws:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("messageType") == "APIError":
                data = msg.get("data", {})
                self._on_error(data)
                if data.get("errorID") in (ERR_NEEDS_AUTH, ERR_USER_DENIED):
                    # access revoked mid-session: reconnect; the stored token is retried, then renewed
                    raise ConnectionResetError("VTube Studio revoked the plugin's access")
            elif msg.get("messageType") == "InjectParameterDataResponse" and self._conflict:
                self._conflict = False
                log.info("%s: VTube Studio accepts our parameters again", self.label)

    def _on_error(self, data: dict) -> None:
        eid = data.get("errorID")
        first = eid not in self.errors
        self.errors[eid] = self.errors.get(eid, 0) + 1
        text = data.get("message", "")
        if eid == ERR_CONTROLLED_BY_OTHER_PLUGIN:
            if not self._conflict:
                self._conflict = True
                log.error("%s: error 454: another VTube Studio plugin controls one of our parameters "
                          "(%s). Close that plugin, remove the parameter from [vtubestudio], or set "
                          "vtubestudio.mode = \"add\"; still retrying", self.label, text)
        elif first:
            log.error("%s: VTube Studio error %s: %s (further errors of this kind not logged)",
                      self.label, eid, text)
