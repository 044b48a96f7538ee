"""Config -> the running parts: language, model backend, interpolator, sinks.

Kept apart from the command line so that ``serve``, ``bench`` and the tests build a face the same
way ``say`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from runtime.clock import FrameClock
from runtime.config import Config
from runtime.keyframes.grammar import gbnf
from runtime.keyframes.language import Language
from runtime.sinks import Sink, SinkOptions, open_sink
from runtime.sinks.fanout import Fanout

log = logging.getLogger(__name__)


def language(cfg: Config) -> Language:
    return Language(cfg.presets, cfg.aliases)


def grammar(cfg: Config, lang: Language) -> str:
    k = cfg.keyframes
    return gbnf(lang, max_keyframes=k.max_keyframes, max_items=k.max_items,
                raw_channels=k.raw_channels)


def backend(cfg: Config, lang: Language):
    """The backend for ``cfg.model``: a pool of completions servers (``model.servers``) or one, when
    the model is named by URL (``http://host:8080``); else llama.cpp, in a child process when
    ``model.process`` is set."""
    from runtime.generate.server import ServerBackend, is_url

    m = cfg.model
    if m.servers or is_url(m.name):
        return ServerBackend(m.servers or m.name, grammar(cfg, lang), max_tokens=m.max_tokens,
                             timeout=m.timeout, max_keyframes=cfg.keyframes.max_keyframes,
                             slots=m.server_slots, feeling=feeling(cfg), beat_rules=beat_rules(cfg))
    if m.process:
        from runtime.generate.worker import ProcessBackend

        return ProcessBackend(cfg)
    return local_backend(cfg, lang)


def beat_rules(cfg: Config):
    """How lines are cut into beats ([feeling] change, blend, aside)."""
    from runtime.generate.beats import Rules

    f = cfg.feeling
    return Rules(change=f.change, blend=f.blend, aside=f.aside)


def local_backend(cfg: Config, lang: Language):
    """llama.cpp in this process (loads the weights: about a second)."""
    from runtime.generate.llama import LlamaBackend
    from runtime.generate.models import adapter, weights

    m = cfg.model
    lora = adapter(m.name, m.lora_path)
    f = cfg.feeling
    return LlamaBackend(weights(m.name, m.quant), grammar(cfg, lang), n_threads=m.threads,
                        n_ctx=m.context, max_tokens=m.max_tokens, lora_path=str(lora) if lora else None,
                        n_gpu_layers=m.gpu_layers, language=lang,
                        max_keyframes=cfg.keyframes.max_keyframes, onset=cfg.keyframes.onset,
                        decide_early=cfg.keyframes.decide_early,
                        feeling=feeling(cfg), feeling_weight=f.weight, beat_rules=beat_rules(cfg),
                        batch=m.batch, reading=f.reading)


def feeling(cfg: Config):
    """``feeling.model``: the feeling model, or None ("" or a model that cannot load, logged)."""
    from runtime.text import feeling as feeling_model

    name = cfg.feeling.model
    if not name:
        return None
    model = feeling_model.load(None if name == "auto" else name)
    if model is not None:
        model.heard_words = cfg.feeling.heard_words
    return model


def interpolator(cfg: Config):
    """``animation.interpolator``: "spline", or "learned" (the spline if the model cannot load)."""
    from runtime.animate.learned import load_interpolator

    return load_interpolator(cfg.animation.interpolator)


def sinks(cfg: Config, extra: list[str] = ()) -> list[Sink]:
    """Open every sink; on the first that cannot start, close the others and raise SinkError."""
    opts = SinkOptions.from_config(cfg)
    opened: list[Sink] = []
    try:
        for url in [*cfg.sinks, *extra]:
            opened.append(open_sink(url, opts))
    except Exception:
        for s in opened:
            s.close()
        raise
    return opened


def fanout(cfg: Config, sinks: list[Sink]) -> Fanout:
    """The sinks of one avatar; holding frames for the clock to send when it makes them ahead."""
    return Fanout(sinks, hold=cfg.animation.lead_ms > 0)


def frame_clock(cfg: Config, tick: Callable[[int, float], bool | None], fanouts: list[Fanout]) -> FrameClock:
    """The frame clock for ``tick``, sending the held frames of ``fanouts`` (a list that may grow)
    on each deadline when ``animation.lead_ms`` > 0. Not started."""
    a = cfg.animation

    def emit() -> None:
        for f in fanouts:
            f.flush()

    return FrameClock(a.fps, tick, spin_s=a.spin_ms / 1000.0, emit=emit if a.lead_ms > 0 else None,
                      lead_s=a.lead_ms / 1000.0, realtime=a.realtime)
