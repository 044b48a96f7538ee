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
    # each side is the shipped merge of three: the card lists the six members one by one
    assert len(card["members"]) == 6 and card["bias"] == json.loads(
        (ROOT / "exported_models" / "feeling.json").read_text())["bias"]
    # every tensor of the second member is the first's: the file is one member's, plus a few nodes
    assert (out / "feeling.onnx").stat().st_size < 1.02 * shipped.stat().st_size
    one = FeelingModel(shipped, ROOT / "exported_models" / "feeling_vocab.txt")
    two = FeelingModel(out / "feeling.onnx", out / "feeling_vocab.txt")
    for text in LINES:
        p, q = one.probs(text), two.probs(text)
        np.testing.assert_allclose(list(p.values()), list(q.values()), atol=1e-5)


def _constant_member(folder: Path, probs: list[float]) -> Path:
    """A stand-in feeling model that reads every line as ``probs`` (same inputs and output)."""
    import onnx
    from onnx import TensorProto, helper

    logits = np.log(np.asarray(probs, np.float32))[None]
    nodes = [helper.make_node("Shape", ["input_ids"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
             helper.make_node("Concat", ["batch", "eight"], ["size"], axis=0),
             helper.make_node("Expand", ["logits", "size"], ["wide"]),
             helper.make_node("Softmax", ["wide"], ["probs"], axis=-1)]
    inits = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
             helper.make_tensor("eight", TensorProto.INT64, [1], [8]),
             helper.make_tensor("logits", TensorProto.FLOAT, [1, 8], logits.ravel().tolist())]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph(nodes, "constant", inputs, [out], inits)
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "feeling.onnx"))
    (folder / "feeling.json").write_text(json.dumps({"labels": [], "bias": {"neutral": 0.25}}))
    (folder / "feeling_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    return folder / "feeling.onnx"


def test_a_merged_model_counts_as_its_members_when_merged_with_one_more(tmp_path):
    import ensemble_feeling

    from runtime.text.feeling import LABELS, FeelingModel

    shipped = ROOT / "exported_models" / "feeling.onnx"
    shipped_card = json.loads((ROOT / "exported_models" / "feeling.json").read_text())
    a = tmp_path / "a"
    a.mkdir()
    (a / "feeling.onnx").symlink_to(shipped)
    (a / "feeling.json").write_text(json.dumps(shipped_card))
    (a / "feeling_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    flat = [0.05, 0.05, 0.05, 0.05, 0.6, 0.05, 0.05, 0.1]
    c = _constant_member(tmp_path / "c", flat)
    out = tmp_path / "out"
    assert ensemble_feeling.main(["--out", str(out), "--no-figures", str(a / "feeling.onnx"), str(c)]) == 0
    card = json.loads((out / "feeling.json").read_text())
    n = len(shipped_card["members"])
    assert len(card["members"]) == n + 1
    assert card["bias"]["neutral"] == pytest.approx((n * shipped_card["bias"]["neutral"] + 0.25) / (n + 1), abs=1e-4)
    raw = FeelingModel(shipped, ROOT / "exported_models" / "feeling_vocab.txt")
    raw.bias[:] = 0.0
    merged = FeelingModel(out / "feeling.onnx", out / "feeling_vocab.txt")
    merged.bias[:] = 0.0
    for text in LINES:
        p = np.array([raw.probs(text)[k] for k in LABELS])
        want = np.exp((n * np.log(p + 1e-12) + np.log(np.array(flat) + 1e-12)) / (n + 1))
        got = np.array([merged.probs(text)[k] for k in LABELS])
        np.testing.assert_allclose(got, want / want.sum(), atol=2e-5)
