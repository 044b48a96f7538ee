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


def _graph_card() -> dict:
    """The shipped card without the readers it mixes in beside its graph (``with``): the graph alone."""
    card = json.loads((ROOT / "exported_models" / "feeling.json").read_text())
    card.pop("with", None)
    card.pop("mix_below", None)
    return card


def _graph_alone(folder: Path) -> Path:
    folder.mkdir()
    (folder / "feeling.onnx").symlink_to(ROOT / "exported_models" / "feeling.onnx")
    (folder / "feeling.json").write_text(json.dumps(_graph_card()))
    (folder / "feeling_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    return folder / "feeling.onnx"


def test_a_model_merged_with_itself_reads_as_it_and_is_stored_once(tmp_path):
    import ensemble_feeling

    from runtime.text.feeling import FeelingModel

    shipped = ROOT / "exported_models" / "feeling.onnx"
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        _graph_alone(d)
    out = tmp_path / "out"
    assert ensemble_feeling.main(["--out", str(out), "--no-figures", str(a / "feeling.onnx"),
                                  str(b / "feeling.onnx")]) == 0
    card = json.loads((out / "feeling.json").read_text())
    # each side is the shipped merge of three: the card lists the six members one by one
    assert len(card["members"]) == 6 and card["bias"] == _graph_card()["bias"]
    # every tensor of the second member is the first's: the file is one member's, plus a few nodes
    assert (out / "feeling.onnx").stat().st_size < 1.02 * shipped.stat().st_size
    one = FeelingModel(a / "feeling.onnx", a / "feeling_vocab.txt")
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime loads it as it is, not only once merged
    onnx.save(model, str(folder / "feeling.onnx"))
    (folder / "feeling.json").write_text(json.dumps({"labels": [], "bias": {"neutral": 0.25}}))
    (folder / "feeling_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    return folder / "feeling.onnx"


def test_a_merged_model_counts_as_its_members_when_merged_with_one_more(tmp_path):
    import ensemble_feeling

    from runtime.text.feeling import LABELS, FeelingModel

    shipped_card = _graph_card()
    a = tmp_path / "a"
    _graph_alone(a)
    flat = [0.05, 0.05, 0.05, 0.05, 0.6, 0.05, 0.05, 0.1]
    c = _constant_member(tmp_path / "c", flat)
    out = tmp_path / "out"
    assert ensemble_feeling.main(["--out", str(out), "--no-figures", str(a / "feeling.onnx"), str(c)]) == 0
    card = json.loads((out / "feeling.json").read_text())
    n = len(shipped_card["members"])
    assert len(card["members"]) == n + 1
    assert card["bias"]["neutral"] == pytest.approx((n * shipped_card["bias"]["neutral"] + 0.25) / (n + 1), abs=1e-4)
    raw = FeelingModel(a / "feeling.onnx", a / "feeling_vocab.txt")
    raw.bias[:] = 0.0
    merged = FeelingModel(out / "feeling.onnx", out / "feeling_vocab.txt")
    merged.bias[:] = 0.0
    for text in LINES:
        p = np.array([raw.probs(text)[k] for k in LABELS])
        want = np.exp((n * np.log(p + 1e-12) + np.log(np.array(flat) + 1e-12)) / (n + 1))
        got = np.array([merged.probs(text)[k] for k in LABELS])
        np.testing.assert_allclose(got, want / want.sum(), atol=2e-5)


def test_a_reader_of_another_vocabulary_is_mixed_in_by_its_weight(tmp_path):
    """The card's ``with``: a reader the graph cannot hold (another vocabulary) is read beside it,
    and the two readings mixed as the weighted mean of log-probabilities, then the card's shift."""
    from runtime.text.feeling import LABELS, FeelingModel

    shipped = ROOT / "exported_models" / "feeling.onnx"
    const = [0.05, 0.05, 0.05, 0.05, 0.6, 0.05, 0.05, 0.1]
    other = _constant_member(tmp_path / "other", const)
    main = tmp_path / "main"
    main.mkdir()
    (main / "feeling.onnx").symlink_to(shipped)
    (main / "feeling_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    (main / "feeling_other.onnx").symlink_to(other)
    (main / "feeling_other_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    card = {"bias": {"neutral": 0.5}, "with": [{"model": "feeling_other.onnx", "vocab": "feeling_other_vocab.txt",
                                                 "weight": 0.25}]}
    (main / "feeling.json").write_text(json.dumps(card))
    mixed = FeelingModel(main / "feeling.onnx", main / "feeling_vocab.txt")
    alone_path = _graph_alone(tmp_path / "alone")
    alone = FeelingModel(alone_path, alone_path.with_name("feeling_vocab.txt"))
    alone.bias[:] = 0.0
    shift = np.array([0.5 if lb == "neutral" else 0.0 for lb in LABELS])
    for text in LINES:
        p = np.array(list(alone.probs(text).values()))
        want = np.exp(0.75 * np.log(p) + 0.25 * np.log(const) + shift)
        got = np.array(list(mixed.probs(text).values()))
        np.testing.assert_allclose(got, want / want.sum(), atol=1e-5)
    # the stand-in reads anger: at a quarter it moves the shipped reading toward it, and no further
    assert mixed.probs(LINES[1])["anger"] > alone.probs(LINES[1])["anger"]


def test_a_reader_that_cannot_load_is_a_log_line_and_the_graph_reads_alone(tmp_path, caplog):
    from runtime.text.feeling import FeelingModel

    main = tmp_path / "main"
    _graph_alone(main)
    card = _graph_card() | {"with": [{"model": "gone.onnx", "vocab": "gone_vocab.txt", "weight": 0.5},
                                     {"model": "feeling.onnx", "vocab": "feeling_vocab.txt", "weight": "half"}]}
    (main / "feeling.json").write_text(json.dumps(card))
    with caplog.at_level("ERROR"):
        m = FeelingModel(main / "feeling.onnx", main / "feeling_vocab.txt")
    assert "gone.onnx" in caplog.text and not m.others
    alone_path = _graph_alone(tmp_path / "alone")
    alone = FeelingModel(alone_path, alone_path.with_name("feeling_vocab.txt"))
    assert m.probs(LINES[0]) == pytest.approx(alone.probs(LINES[0]))


def _mixed_with_constant(tmp_path: Path, weight: float, **card_extra) -> tuple:
    """The shipped graph with a constant anger reader mixed in, and the graph alone (both with the
    graph's own shift)."""
    from runtime.text.feeling import FeelingModel

    other = _constant_member(tmp_path / "other", [0.02, 0.02, 0.02, 0.02, 0.84, 0.02, 0.02, 0.04])
    main = tmp_path / "main"
    _graph_alone(main)
    (main / "feeling_other.onnx").symlink_to(other)
    (main / "feeling_other_vocab.txt").symlink_to(ROOT / "exported_models" / "feeling_vocab.txt")
    card = _graph_card() | {"with": [{"model": "feeling_other.onnx", "vocab": "feeling_other_vocab.txt",
                                      "weight": weight}]} | card_extra
    (main / "feeling.json").write_text(json.dumps(card))
    alone_path = _graph_alone(tmp_path / "alone")
    return (FeelingModel(main / "feeling.onnx", main / "feeling_vocab.txt"),
            FeelingModel(alone_path, alone_path.with_name("feeling_vocab.txt")))


def test_the_costly_reader_reads_whole_spoken_lines_only(tmp_path):
    """Parts of a line (where it may turn) and stage directions are read by the graph alone; the
    whole spoken line by every reader."""
    from runtime.generate import beats
    from runtime.generate.prompt import LineRequest

    mixed, alone = _mixed_with_constant(tmp_path, 0.9)
    def prior(text, model):
        return beats.plan(LineRequest(text), model)[0].prior

    spoken = "Sure, the bus leaves at nine."
    assert mixed.classify(spoken).label == "anger" and alone.classify(spoken).label != "anger"
    assert prior(spoken, mixed)["anger"] > prior(spoken, alone)["anger"] + 1.0
    told = "She waves at the bus as it leaves."
    assert prior(told, mixed) == pytest.approx(prior(told, alone))
    assert mixed.classify(spoken, quick=True).probs == pytest.approx(alone.classify(spoken).probs)


def test_a_sure_graph_is_not_mixed_and_a_busy_reader_is_not_waited_for(tmp_path):
    import threading

    mixed, alone = _mixed_with_constant(tmp_path, 0.9, mix_below=0.8)
    sure, unsure = [], []
    for text in LINES + ["Okay.", "Fine, whatever you say.", "Oh. It's you."]:
        p = alone.probs(text)
        (sure if max(p.values()) >= 0.8 else unsure).append(text)
    assert sure and unsure, "the lines cover both sides of the bar"
    for text in sure:
        assert mixed.probs(text) == pytest.approx(alone.probs(text))
    for text in unsure:
        assert mixed.probs(text)["anger"] > alone.probs(text)["anger"] + 0.1
    # another line holds the costly reader: this one is read at once by the graph alone
    sub = mixed.others[0][0]
    sub._lock.acquire()
    try:
        got: list = []
        t = threading.Thread(target=lambda: got.append(mixed.probs(unsure[0])))
        t.start()
        t.join(5.0)
        assert got and got[0] == pytest.approx(alone.probs(unsure[0]))
    finally:
        sub._lock.release()
