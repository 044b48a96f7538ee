"""A pipecat processor that gives the bot a face: its TTS audio drives an avatar's mouth.

    pip install 'keyframeface-runtime[pipecat]'

    from runtime.integrations.pipecat import AvatarProcessor, Face

    face = Face("config.toml")                 # an avatar + its frame clock, streaming to the sinks
    pipeline = Pipeline([transport.input(), stt, context_aggregator.user(), llm, tts,
                         AvatarProcessor(face), transport.output(), context_aggregator.assistant()])
    ...
    face.close()

Place it after the TTS service and before the output transport. Every frame passes through
unchanged and in order (the processor only looks). A bot utterance (``TTSStartedFrame`` ...
``TTSStoppedFrame``, or the audio frames alone) is one line: its ``TTSAudioRawFrame`` /
``OutputAudioRawFrame`` chunks (16-bit PCM at any rate, mono or stereo) feed a
:class:`runtime.audio.LiveSpeech` (phones and loudness on a worker thread; the mouth on the audio's
own clock), and the text (``TTSTextFrame``s and ``TextFrame``s seen before the audio, when there are
any) gives the model the line for the expression and, when known by the end, forced alignment.
The audio clock follows a model of the transport's playout: an utterance plays from its first
chunk's arrival plus ``lookahead``, or when the audio before it has played, whichever is later (a
TTS engine faster than real time queues utterances back to back); when the output transport reports
``BotStartedSpeakingFrame`` (it comes upstream through this processor), playback really starts
then, and the queued utterances move with it. An interruption (``InterruptionFrame``; older pipecat:
``StartInterruptionFrame``) interrupts the avatar: the face blends to rest in ~150 ms.

In-process, through the avatar API (no sockets): a pipecat app is one Python process anyway. To
drive a face that runs in a separate ``keyframeface serve``, send its WebSocket the same audio
(docs/SERVE.md) instead.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from pipecat.frames import frames as pf
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from runtime.audio import AudioError, LiveSpeech
from runtime.avatar import Avatar
from runtime.generate.prompt import LineRequest

log = logging.getLogger(__name__)

_INTERRUPTIONS = tuple(c for c in (getattr(pf, "InterruptionFrame", None), getattr(pf, "StartInterruptionFrame", None))
                       if c is not None)
_AUDIO = (pf.TTSAudioRawFrame, pf.OutputAudioRawFrame)
_TEXT = (pf.TTSTextFrame, pf.TextFrame)
_USER_TEXT = tuple(c for c in (getattr(pf, "TranscriptionFrame", None), getattr(pf, "InterimTranscriptionFrame", None))
                   if c is not None)  # what the user said: not the bot's words


@dataclass
class _Utterance:
    live: object  # LiveSpeech (or _NoVoice)
    t0: float  # perf_counter time its audio time 0 plays, by the playout model
    seconds: float = 0.0  # audio received so far


class Face:
    """One avatar (config.toml's sinks, idle layer, model) and the frame clock that ticks it.

    ``sinks``: URLs instead of config.toml's; ``backend``: a model backend to share (else one is
    built from the config, and closed with the face); ``on_event``: the avatar's events (keyframe,
    done), called on its threads."""

    def __init__(self, config: str | Path | None = None, *, name: str = "default",
                 sinks: list[str] | None = None, backend=None, on_event=None) -> None:
        import dataclasses

        from runtime import assemble
        from runtime.animate.idle import Idle
        from runtime.animate.spline import warm_up
        from runtime.config import load

        self.cfg = cfg = load(config)
        if sinks is not None:
            cfg = dataclasses.replace(cfg, sinks=list(sinks))
        lang = assemble.language(cfg)
        self._own_backend = backend is None
        self.backend = assemble.backend(cfg, lang) if backend is None else backend
        a, i = cfg.animation, cfg.idle
        idle = Idle(seed=None if i.seed < 0 else i.seed, blinks=i.blinks, saccades=i.saccades,
                    breathing=i.breathing, drift=i.drift, gaze_degrees=i.gaze_degrees,
                    drift_degrees=i.drift_degrees, breaths_per_minute=i.breaths_per_minute) if i.enabled else None
        self.fanout = assemble.fanout(cfg, assemble.sinks(cfg))
        self.avatar = Avatar(name, self.backend, lang, self.fanout, fps=a.fps, attack=a.attack,
                             release=a.release, interpolator=assemble.interpolator(cfg),
                             timeout=cfg.model.timeout, idle=idle, interrupt_blend=cfg.serve.interrupt_blend,
                             on_event=on_event, lead=a.lead_ms / 1000.0)
        warm_up()
        _warm()
        self.clock = assemble.frame_clock(cfg, self._tick, [self.fanout]).start()

    def _tick(self, n: int, t: float) -> bool:
        self.avatar.tick(n, t)
        return True

    def close(self) -> None:
        self.clock.stop()
        self.avatar.close()
        self.fanout.close()
        close = getattr(self.backend, "close", None)
        if close is not None and self._own_backend:
            close()


class AvatarProcessor(FrameProcessor):
    """Drives ``avatar`` (an :class:`~runtime.avatar.Avatar` or a :class:`Face`) from the TTS
    frames passing through; pushes every frame on unchanged.

    ``emotion``: the expression's emotion for every line ("" = the model's choice from the text);
    ``default_text``: what the model is given when no text came before the audio; ``lookahead``:
    seconds from a chunk's arrival to its playback, until ``BotStartedSpeakingFrame`` says;
    ``beats`` / ``beat_strength``: brow lifts and nods on stressed syllables (None: a Face's
    config.toml ``[audio]``, else on at 1.0)."""

    def __init__(self, avatar: Avatar | Face, *, emotion: str = "", default_text: str = "They speak.",
                 lookahead: float | None = None, beats: bool | None = None, beat_strength: float | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        au = avatar.cfg.audio if isinstance(avatar, Face) else None
        self.avatar: Avatar = avatar.avatar if isinstance(avatar, Face) else avatar
        self.emotion = emotion
        self.default_text = default_text
        self.lookahead = lookahead if lookahead is not None else (au.lookahead if au else 0.0)
        self.beats = beats if beats is not None else (au.beats if au else True)
        self.beat_strength = beat_strength if beat_strength is not None else (au.beat_strength if au else 1.0)
        self.live: LiveSpeech | None = None  # the utterance being spoken
        self.last: LiveSpeech | None = None  # the latest utterance's (for reports and tests)
        self.recent: deque[LiveSpeech] = deque(maxlen=16)  # the latest few, oldest first
        self.line = None  # its avatar Line
        self.lines = 0
        self.errors: list[str] = []
        self._text: list[str] = []  # text seen since the last utterance ended
        self._head = ""  # the text the current utterance's line was given
        self._utt: _Utterance | None = None  # the current utterance
        self._playing: deque[_Utterance] = deque()  # utterances that may still be playing
        self._play_end = 0.0  # when the audio received so far will have played (perf_counter)
        self._anchored = False  # BotStartedSpeaking has set the playout since the bot last stopped
        _warm()

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        try:
            self._look(frame)
        except Exception as e:  # the face never breaks the conversation
            log.exception("avatar processor: %s", e)
        await self.push_frame(frame, direction)

    # -- what each frame means to the face --------------------------------------------------------
    def _look(self, frame: pf.Frame) -> None:
        if _INTERRUPTIONS and isinstance(frame, _INTERRUPTIONS):
            self._end(interrupted=True)
        elif isinstance(frame, pf.TTSStartedFrame):
            self._end()  # an unfinished one (no TTSStoppedFrame) ends here
        elif isinstance(frame, _AUDIO):
            self._audio(frame)
        elif isinstance(frame, _TEXT) and not isinstance(frame, _USER_TEXT):
            if frame.text and not getattr(frame, "skip_tts", False):
                self._text.append(frame.text)
        elif isinstance(frame, pf.BotStartedSpeakingFrame):
            self._playback_started(time.perf_counter())
        elif isinstance(frame, pf.BotStoppedSpeakingFrame):
            self._anchored = False
        elif isinstance(frame, pf.TTSStoppedFrame | pf.EndFrame | pf.CancelFrame):
            self._end()

    def _playback_started(self, now: float) -> None:
        """The transport began playing after silence: the first utterance not yet played starts now."""
        while self._playing and self._playing[0].t0 + self._playing[0].seconds < now - 0.5:
            self._playing.popleft()  # played out long ago, by the model
        if self._anchored or not self._playing:
            return
        self._anchored = True
        delta = now - self._playing[0].t0
        for u in self._playing:
            u.t0 += delta
            u.live.start(u.t0)
        self._play_end += delta

    def _audio(self, frame: pf.OutputAudioRawFrame) -> None:
        if not frame.audio:
            return
        now = time.perf_counter()
        if self.live is None:
            self._begin(frame.sample_rate, frame.num_channels, now)
        u = self._utt
        u.seconds += len(frame.audio) / (2 * max(frame.num_channels, 1) * max(frame.sample_rate, 1))
        self._play_end = max(self._play_end, u.t0 + u.seconds)
        try:
            self.live.feed(frame.audio)
        except AudioError as e:  # the analysis is behind or failed: this chunk is lost, the voice is not
            self._error(str(e))

    def _begin(self, rate: int, channels: int, now: float) -> None:
        text = _join(self._text)  # what came before the audio: the model's line
        self._text = []
        try:
            self.live = self.last = LiveSpeech(rate, None, channels=channels, sample_format="s16le",
                                               lookahead=self.lookahead, beats=self.beats,
                                               strength=self.beat_strength, on_error=self._error)
        except AudioError as e:  # a rate or channel count the decoder refuses: no mouth, the line goes on
            self._error(str(e))
            self.live = _NoVoice()
        self._head = text
        if not isinstance(self.live, _NoVoice):
            self.recent.append(self.live)
        self._utt = _Utterance(self.live, max(now + self.lookahead, self._play_end))
        self.live.start(self._utt.t0)
        self._playing.append(self._utt)
        req = LineRequest(text=text or self.default_text, emotion=self.emotion)
        try:
            self.line = self.avatar.say(req, speech=None if isinstance(self.live, _NoVoice) else self.live)
            self.lines += 1
        except Exception as e:  # too many lines waiting: the voice goes on without the face
            self._error(f"avatar refused the line: {e}")
            self.live.close()
            self.live = _NoVoice()

    def _end(self, interrupted: bool = False) -> None:
        live = self.live
        if interrupted:
            self.avatar.interrupt()
            self._text.clear()
            self._playing.clear()  # the transport drops what it had queued
            self._play_end, self._anchored = 0.0, False
        if live is not None:
            text = _join(self._text) or self._head  # the words spoken, when the TTS told them
            track = getattr(live, "track", None)
            if text and track is not None and not interrupted:
                track.text = text  # known by the end: the final plan is force-aligned to it
            self._text.clear()
            live.close()
        self.live, self.line, self._utt = None, None, None

    def _error(self, msg: str) -> None:
        if len(self.errors) < 100:
            self.errors.append(msg)
        log.warning("avatar processor: %s", msg)


def _warm() -> None:
    """Compile the mouth's kernel and start the recogniser's process now (1-2 s), not at the first
    line (whose mouth would be that late)."""
    from runtime.animate import speech

    speech.warm()
    try:
        from runtime.audio import worker

        worker.warm()
    except Exception as e:  # the first line starts it
        log.warning("audio recogniser not warmed: %s", e)


def _join(parts: list[str]) -> str:
    return " ".join(t.strip() for t in parts if t.strip())


class _NoVoice:
    """Stands in for the LiveSpeech of an utterance whose audio cannot be used."""

    def feed(self, chunk) -> None:
        pass

    def start(self, at: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass
