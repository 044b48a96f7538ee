"""tools/ensemble_feeling.py: members merged into one graph read as their geometric mean, with what
the members share (the frozen embeddings) stored once."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

pytest.importorskip("onnx")

LINES = ["How dare you touch my things without asking!", "The bus leaves at nine.", "You got the part?!"]


def test_a_model_merged_with_itself_reads_as_it_and_is_stored_once(tmp_path):
    import ensemble_feeling

    from runtime.text.feeling import FeelingModel

    shipped = ROOT / "exported_models" / "feeling.onnx"
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "feeling.onnx").symlink_to(shipped)
        (d / "feeling.json").write_text((ROOT / "exported_models" / "feeling.json").read_text())
        (d / "feeling_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    out = tmp_path / "out"
    assert ensemble_feeling.main(["--out", str(out), "--no-figures", str(a / "feeling.onnx"),
                                  str(b / "feeling.onnx")]) == 0
    card = json.loads((out / "feeling.json").read_text())
    assert len(card["members"]) == 2 and card["bias"] == json.loads(
        (ROOT / "exported_models" / "feeling.json").read_text())["bias"]
    # every tensor of the second member is the first's: the file is one member's, plus a few nodes
    assert (out / "feeling.onnx").stat().st_size < 1.02 * shipped.stat().st_size
    one = FeelingModel(shipped, ROOT / "exported_models" / "feeling_vocab.txt")
    two = FeelingModel(out / "feeling.onnx", out / "feeling_vocab.txt")
    for text in LINES:
        p, q = one.probs(text), two.probs(text)
        np.testing.assert_allclose(list(p.values()), list(q.values()), atol=1e-5)
