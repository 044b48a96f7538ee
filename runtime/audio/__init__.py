"""Audio in, mouth out: a line's voice -> timed phones and loudness -> the speech layer.

Data flow: bytes -> :mod:`~runtime.audio.wav` (decode, mono, resample to 16 kHz) ->
:mod:`~runtime.audio.align` (PocketSphinx: forced alignment with the text, phone recognition
without, whose stops and nasals :mod:`~runtime.audio.labial` re-reads for the lips and where
:mod:`~runtime.audio.closure` hears lips shut that no phone shows) +
:mod:`~runtime.audio.energy` (loudness per 10 ms) -> :mod:`~runtime.audio.track` (timed phones
with a jaw gain each) -> ``SpeechPlan.from_phones`` (runtime/animate/speech.py: the same visemes,
coarticulation, composition and clamping as the text path). Nothing here touches the frame clock:
:mod:`~runtime.audio.live` runs the analysis on a worker thread and the clock only samples the
latest finished plan.

API (for the CLI, serve and integrations):

* ``read_wav(bytes | path, max_bytes=, max_seconds=) -> (float32 mono samples, rate)``. Any rate
  8-192 kHz, any channel count (averaged), 8/16/24/32-bit PCM or 32/64-bit float, plain or
  EXTENSIBLE. Anything else raises :class:`AudioError` (a ``ValueError``) whose message names the
  problem: "not a WAV file ...", "truncated: ...", "compressed WAV (format 0x0055, MP3) is not
  supported", "... over the limit of ...".
* ``PcmDecoder(rate, channels, sample_format="s16le" | "s32le" | "f32le" | "u8")`` or
  ``PcmDecoder(wav=True)`` (a WAV stream: header first, then data, split anywhere):
  ``feed(bytes) -> float32 mono``; ``close()`` raises if the stream ended mid-header/short.
* ``analyse(samples, rate, text=None) -> Analysis`` / ``analyse_wav(bytes | path, text, ...)``:
  a whole clip. ``Analysis.phones`` (``TimedPhone(phone, start, end, word)``), ``.db``
  (loudness), ``.method``, ``.plan(start=0.0, beats=True, strength=1.0) -> SpeechPlan``.
  With text, forced alignment; if the text does not fit the audio, recognition (``.error`` says why).
* ``VoiceTrack(rate, text=None, channels=1, sample_format="s16le", wav=False, max_seconds=None)``:
  sans-I/O and single-threaded. ``feed(bytes | float32 ndarray)``, ``close()``, ``plan(start=0)``
  (all the audio so far; the undecided tail is a vowel scaled by loudness), ``.duration``,
  ``.phones``, ``.env.db``. At ``close()`` with text it force-aligns the whole clip.
* ``LiveSpeech(rate, text=None, ..., max_seconds=, lookahead=0.0, stall=10.0, on_error=)``: the
  streaming front. ``feed(chunk)`` from any thread (never blocks; raises :class:`AudioError` when
  closed or when the bounded queue is full), ``start(at=None)`` (audio time 0 plays at
  ``time.perf_counter()`` value ``at``; without it, the first chunk's arrival + ``lookahead``),
  ``close()``. ``.error`` (first problem, also sent to ``on_error(msg)``), ``.latency`` (seconds
  from each chunk's arrival to the plan that includes it), ``.done``, ``wait(timeout)``.

Where PocketSphinx runs: it holds the GIL inside its calls, so beside a running frame clock it
runs in a child process (:mod:`~runtime.audio.worker`: ``LiveSpeech`` does this by default,
``process=True``; pass ``recognizer=worker.shared()`` to ``analyse``/``analyse_wav``/``VoiceTrack``
from serve; call ``worker.warm()`` at start-up, ~1-2 s). Offline (CLI render) it runs in-process.

How the avatar takes it: ``avatar.say(req, speech=plan)`` with either a finished ``SpeechPlan``
(a clip: ``analyse_wav(data, req.text).plan()``; audio time 0 at the line's first frame, or at
``start=`` seconds into the line) or a ``LiveSpeech`` (streaming: it has the same ``apply_at`` and
``duration`` the avatar uses, maps the frame to audio time through its own ``start``, and keeps the
line open until its audio is closed and played). Bad audio never fails the line: catch
:class:`AudioError`, report it, and say the line without ``speech`` (or keep the ``LiveSpeech``:
after an error it holds the mouth it had and ends).

Beats: :mod:`~runtime.audio.beats` finds stressed syllables (loudness, pitch, dictionary stress)
and phrase ends; the plan carries them as ``plan.gestures`` (runtime/animate/gestures.py: brow
lifts, small nods, blinks), added by the same ``apply``/``apply_at``. On by default:
``Analysis.plan(beats=True, strength=1.0)``, ``VoiceTrack(..., beats=, strength=)`` and
``LiveSpeech(..., beats=, strength=)``; config ``[audio] beats`` / ``beat_strength`` turn them
off or scale them (serve should pass ``cfg.audio.beats`` / ``cfg.audio.beat_strength``).

Methods: ``Analysis.method`` is "aligned" (to the given text), "transcribed" (no text: the words
were recognised with the wheel's trigram model, then aligned) or "recognized" (phones one by one).
Streaming without text uses phone recognition live; ``close()`` keeps those phones.
"""

from runtime.audio.wav import AudioError, PcmDecoder, read_wav, resample, write_wav

__all__ = ["AudioError", "PcmDecoder", "read_wav", "resample", "write_wav", "analyse", "analyse_wav",
           "Analysis", "VoiceTrack", "LiveSpeech"]


def __getattr__(name: str):  # the recogniser and its model load only when used
    if name in ("analyse", "analyse_wav", "Analysis", "VoiceTrack"):
        from runtime.audio import track

        return getattr(track, name)
    if name == "LiveSpeech":
        from runtime.audio.live import LiveSpeech

        return LiveSpeech
    raise AttributeError(name)
