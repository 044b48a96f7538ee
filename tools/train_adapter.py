#!/usr/bin/env python3
"""Fit a LoRA adapter for the default model on CPU and export it as a llama.cpp GGUF LoRA adapter.

    .venv/bin/pip install -e ".[train]"
    .venv/bin/python tools/make_corpus.py --n 3000 --out /tmp/corpus
    nice .venv/bin/python tools/train_adapter.py --corpus /tmp/corpus/train.jsonl --steps 600 \\
        --out exported_models/keyframes-lora-smollm2.gguf

The base weights are the same GGUF the runtime loads (transformers dequantizes it); the training
prompt is the runtime's own, byte for byte: ``prompt.prefix(ADAPTER_SYSTEM, examples=[])`` +
``prompt.line_part`` (a model with an adapter gets one short instruction line and no few-shot
examples; see ``LlamaBackend``). Only the
answer tokens carry loss. LoRA goes on v/o projections and the MLP, never on q/k, because llama.cpp
stores q/k rows permuted for rotary embeddings and an adapter there would need the same permutation.

The GGUF adapter is written directly with the ``gguf`` package (``general.type = adapter``,
``blk.N.<tensor>.weight.lora_a/.lora_b``), so no llama.cpp checkout or converter version has to match;
the file is checked by loading it with the runtime's llama.cpp before the tool reports success.
A model card (.json beside it) records the corpus recipe, seed, steps, losses and base checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGETS = {  # HF module -> llama.cpp tensor
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_pairs(corpus: Path, limit: int) -> list[tuple[str, str]]:
    from runtime.generate import prompt as prompts

    head = prompts.prefix(prompts.ADAPTER_SYSTEM, examples=[])
    out = []
    for line in open(corpus):
        rec = json.loads(line)
        for ex in rec["examples"]:
            out.append((head + ex["prompt"], ex["answer"] + "<|im_end|>"))
            if limit and len(out) >= limit:
                return out
    return out


def export_gguf(model, out: Path, alpha: float) -> int:
    """Write the peft LoRA weights as a llama.cpp adapter; returns the number of tensor pairs."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(out), arch="llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    pairs = 0
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        layer = int(name.split(".layers.")[1].split(".")[0])
        suffix = next((v for k, v in TARGETS.items() if name.endswith(k)), None)
        if suffix is None:
            continue
        a = module.lora_A["default"].weight.detach().float().numpy()  # (r, in)
        b = module.lora_B["default"].weight.detach().float().numpy()  # (out, r)
        base = f"blk.{layer}.{suffix}.weight"
        writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
        pairs += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return pairs


def plot_loss(tsv: Path, png: Path, window: int = 25) -> None:
    """The loss log as a curve (raw steps faint, a moving average on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.loadtxt(tsv, skiprows=1, ndmin=2)
    steps, loss = data[:, 0], data[:, 1]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(steps, loss, color="0.8", lw=0.8, label="step")
    if len(loss) >= window:
        avg = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], avg, color="C0", lw=1.8, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(f"LoRA training: {png.stem}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="train.jsonl from tools/make_corpus.py")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 cores are shared: keep 1)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N (prompt, answer) pairs")
    ap.add_argument("--out", required=True, help="the .gguf adapter to write")
    ap.add_argument("--log", help="loss log (default: OUT.loss.tsv)")
    ap.add_argument("--plot", help="draw the loss curve to this PNG at the end")
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.generate.models import resolve

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    base = resolve(args.model)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
    model = AutoModelForCausalLM.from_pretrained(base.parent, gguf_file=base.name, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                             target_modules=[k.split(".")[-1] for k in TARGETS]))
    pairs = load_pairs(Path(args.corpus), args.limit)
    if not pairs:
        raise SystemExit(f"{args.corpus}: no training pairs")
    encoded = []
    for prompt_text, answer in pairs:
        p = tok(prompt_text, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        encoded.append((p, a))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / args.steps))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = open(args.log or str(out) + ".loss.tsv", "w")
    log.write("step\tloss\n")
    rng = random.Random(args.seed)
    model.train()
    losses: list[float] = []
    for step in tqdm(range(args.steps), desc="lora", unit="step"):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(args.batch)]
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id or 0, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, a) in enumerate(batch):
            seq = p + a
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p): len(seq)] = torch.tensor(a)
            mask[i, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        log.write(f"{step}\t{loss.item():.4f}\n")
        log.flush()
    log.close()
    if args.plot:
        plot_loss(Path(args.log or str(out) + ".loss.tsv"), Path(args.plot))
    pairs_written = export_gguf(model, out, args.alpha)

    from llama_cpp import Llama  # the runtime's llama.cpp must accept the file

    Llama(model_path=str(base), lora_path=str(out), n_ctx=256, n_threads=1, verbose=False)
    card = {
        "adapter": out.name, "base_model": args.model, "base_file": base.name, "base_sha256": sha256(base),
        "corpus": str(args.corpus), "corpus_recipe": "tools/make_corpus.py (phrase banks, held-out families)",
        "pairs": len(pairs), "seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr,
        "rank": args.rank, "alpha": args.alpha, "targets": list(TARGETS), "tensor_pairs": pairs_written,
        "threads": args.threads, "train_seconds": round(time.time() - t0, 1),
        "loss_first": round(sum(losses[:10]) / len(losses[:10]), 4),
        "loss_last": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "prompt": "runtime.generate.prompt.prefix(ADAPTER_SYSTEM, examples=[]) + line_part(req); "
                  "answer = prompt.answer()",
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
