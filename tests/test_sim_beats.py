"""tools/sim_beats.py decides as the runtime does: its reading of a line (no keyframes written) is
what the real model's keyframes read back as through the shared probe."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

pytestmark = pytest.mark.model

LINES = [
    {"text": "Ha! You fell right in the mud! Wait, are you bleeding?", "expect": ["joy", "fear"]},
    {"text": "How dare you touch my things without asking!", "expect": ["anger"]},
    {"text": "Please, don't hurt me. I'll give you whatever you want.", "expect": ["fear"]},
    {"text": "The bus leaves at nine.", "expect": ["neutral"]},
    {"text": "Oh, this is the best birthday ever. Wait, who ate half the cake?", "expect": ["joy", "surprise"]},
]


@pytest.fixture(scope="module")
def local(config, language):
    from runtime import assemble

    b = assemble.local_backend(config, language)
    yield b
    b.close()


def test_the_simulated_decision_is_what_the_real_faces_read_as(local, language):
    import eval_keyframes
    import sim_beats

    from runtime.generate import stream_keyframes
    from runtime.generate.prompt import LineRequest
    from runtime.keyframes.parser import KeyframeParser

    probe = eval_keyframes.load_probe()
    for p in LINES:
        keys = [k.to_json() for k in stream_keyframes(local, KeyframeParser(language), LineRequest(p["text"]))]
        faces = [probe.label_segment(seg) for seg in probe.segments(keys, len(p["expect"]))]
        assert sim_beats.decide(local, p) == faces, (p["text"], faces)
