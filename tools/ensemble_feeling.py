"""Several feeling models as one: an ONNX graph that runs each and returns the normalised geometric
mean of their probabilities, for the runtime to load as it loads one (runtime/text/feeling.py).

Each member reads the line with its own fine-tuned layers; the layers training kept frozen (the
embeddings: ``tools/train_feeling.py`` never trains them) are byte-identical across members and
stored once. A model merged before counts as its members: merged with one more, it gives the mean
of all of them (``ensemble/share{k}`` weights), and its members are listed one by one. The card's
neutral shift is the mean of the members' (a member's shift multiplies its probabilities, so in
the geometric mean it counts by its share), and the card lists the members
with their own cards (each member's card carries the command that made it), the command that merged
them, and the weighted F1 on the sets the trainer reports.

    .venv/bin/python tools/ensemble_feeling.py --out exported_models A/feeling.onnx B/feeling.onnx C/feeling.onnx

Needs the train extra (onnx).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def merge(members: list[Path], out: Path, weights: list[float] | None = None) -> dict:
    import onnx
    from onnx import TensorProto, helper

    models = [onnx.load(str(p)) for p in members]
    first = models[0].graph
    inputs = [i.name for i in first.input]
    nodes, inits, seen = [], [], {}  # seen: a tensor's bytes (name cleared) -> its name in the merge
    shared = 0
    for k, m in enumerate(models):
        g = m.graph
        if [i.name for i in g.input] != inputs or len(g.output) != 1:
            raise ValueError(f"{members[k]}: not a feeling model (inputs {[i.name for i in g.input]})")
        rename = {}
        for t in g.initializer:
            key = onnx.TensorProto()
            key.CopyFrom(t)
            key.name = ""
            blob = key.SerializeToString()
            if blob in seen:
                rename[t.name] = seen[blob]
                shared += len(blob)
                continue
            new = f"m{k}/{t.name}"
            rename[t.name] = seen[blob] = new
            t2 = onnx.TensorProto()
            t2.CopyFrom(t)
            t2.name = new
            inits.append(t2)

        def name(x: str, k: int = k, rename: dict = rename) -> str:
            if not x or x in inputs:
                return x
            return rename.get(x, f"m{k}/{x}")

        for j, n in enumerate(g.node):
            n2 = onnx.NodeProto()
            n2.CopyFrom(n)
            n2.name = f"m{k}/{n.name or f'node{j}'}"
            n2.input[:] = [name(x) for x in n.input]
            n2.output[:] = [name(x) for x in n.output]
            nodes.append(n2)
        # the log of the member's probabilities (a softmax: positive; the epsilon guards underflow)
        nodes.append(helper.make_node("Add", [name(g.output[0].name), "ensemble/eps"], [f"m{k}/probs_eps"],
                                      name=f"ensemble/eps{k}"))
        nodes.append(helper.make_node("Log", [f"m{k}/probs_eps"], [f"m{k}/log"], name=f"ensemble/log{k}"))
    inits.append(helper.make_tensor("ensemble/eps", TensorProto.FLOAT, [], [1e-12]))
    if weights is None or len(set(weights)) == 1:  # equal shares (the graph every earlier merge made)
        nodes.append(helper.make_node("Sum", [f"m{k}/log" for k in range(len(models))], ["ensemble/sum"],
                                      name="ensemble/sum"))
        inits.append(helper.make_tensor("ensemble/share", TensorProto.FLOAT, [], [1.0 / len(models)]))
        nodes.append(helper.make_node("Mul", ["ensemble/sum", "ensemble/share"], ["ensemble/mean"],
                                      name="ensemble/mean"))
    else:  # each member's log-probabilities times its share of the weights
        for k, w in enumerate(weights):
            inits.append(helper.make_tensor(f"ensemble/share{k}", TensorProto.FLOAT, [], [w / sum(weights)]))
            nodes.append(helper.make_node("Mul", [f"m{k}/log", f"ensemble/share{k}"], [f"m{k}/share"],
                                          name=f"ensemble/share{k}"))
        nodes.append(helper.make_node("Sum", [f"m{k}/share" for k in range(len(models))], ["ensemble/mean"],
                                      name="ensemble/mean"))
    nodes.append(helper.make_node("Softmax", ["ensemble/mean"], ["probs"], axis=-1, name="ensemble/softmax"))
    graph = helper.make_graph(nodes, "feeling_ensemble", list(first.input), [first.output[0]], inits)
    graph.output[0].name = "probs"
    opsets = {}
    for m in models:
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="keyframeface ensemble_feeling")
    model.ir_version = models[0].ir_version
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "feeling.onnx"))
    return {"members": len(models), "shared_bytes": shared}


def figures(model_path: Path) -> dict:
    """The weighted F1 the trainer reports, on the same sets: our own held-out lines and GoEmotions
    dev (the two that choices are made on), with the card's shift applied."""
    import random

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_feeling as tf

    from runtime.text.feeling import FeelingModel

    model = FeelingModel(model_path, model_path.with_name("feeling_vocab.txt"))
    _, held = tf.own_lines(tf.OWN)
    go_dev = tf.goemotions(tf.SHARED / "goemotions" / "dev.tsv", 0, random.Random(1))
    out = {}
    for name, rows in (("own_held", held), ("go_dev", go_dev)):
        pred = [model.classify(r["text"], r.get("heard", "")).label for r in rows]
        f1, acc = tf.scores([r["label"] for r in rows], pred)
        out[name] = {"weighted_f1": round(f1, 4), "accuracy": round(acc, 4), "lines": len(rows)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("members", nargs="+", type=Path, help="feeling.onnx files, each with its card beside it")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-figures", action="store_true", help="skip scoring the merged model (~1 min)")
    args = ap.parse_args(argv)
    cards = [json.loads(p.with_suffix(".json").read_text()) for p in args.members]
    # a model merged before counts as its members, so merging it with one more gives the mean of all
    weights = [float(len(c.get("members", [])) or 1) for c in cards]
    tmp = args.out / "ensemble.tmp"
    info = merge(args.members, tmp, weights)
    shutil.move(str(tmp / "feeling.onnx"), str(args.out / "feeling.onnx"))
    tmp.rmdir()
    vocab = args.members[0].with_name("feeling_vocab.txt")
    if vocab.resolve() != (args.out / "feeling_vocab.txt").resolve():
        shutil.copy(vocab, args.out / "feeling_vocab.txt")
    labels = cards[0]["labels"]
    bias = {k: round(sum(w * c.get("bias", {}).get(k, 0.0) for w, c in zip(weights, cards)) / sum(weights), 4)
            for k in {k for c in cards for k in c.get("bias", {})}}
    flat = [m for c in cards for m in (c["members"] if c.get("members") else [c])]
    card = {"model": "feeling.onnx",
            "what": cards[0].get("what", ""),
            "labels": labels,
            "input": cards[0].get("input", ""),
            "output": "probs[batch, 8]: the normalised geometric mean of the members' probabilities",
            "ensemble": f"{len(flat)} members, the embeddings stored once ({info['shared_bytes'] / 1e6:.1f} MB saved)",
            "bias": bias,
            "not_trained_on": "any evaluation file (../shared/eval, MELD)",
            "command": "tools/ensemble_feeling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "members": flat}
    (args.out / "feeling.json").write_text(json.dumps(card, indent=2) + "\n")  # read by figures: the shift
    if not args.no_figures:
        card["figures"] = figures(args.out / "feeling.onnx")
    card = {k: card[k] for k in [*[k for k in card if k != "members"], "members"]}  # members last
    (args.out / "feeling.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"out": str(args.out / "feeling.onnx"),
                      "mb": round((args.out / "feeling.onnx").stat().st_size / 1e6, 1), **info, "bias": bias}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
