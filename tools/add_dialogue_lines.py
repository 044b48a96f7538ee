#!/usr/bin/env python3
"""Add newly written lines to the feeling model's own training data (tools/data/dialogue_lines.jsonl).

Each input is JSON lines ``{"text", "label", ["heard"]}``. A line is dropped when it is malformed,
has an unknown label, repeats a line already there (case and punctuation ignored), or is close to
any evaluation text we hold (the shared dialogue and stage-direction dev sets, MELD's dev split):
the same words, or most of its content words shared with one of them. What was dropped, and why,
is printed, so a writer's batch can be checked before it is committed.

    .venv/bin/python tools/add_dialogue_lines.py new_lines.jsonl [more.jsonl ...] [--dry-run]
    .venv/bin/python tools/add_dialogue_lines.py --clean     # re-check the lines already there
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.text.feeling import LABELS  # noqa: E402

OWN = ROOT / "tools" / "data" / "dialogue_lines.jsonl"
SHARED = ROOT.parent / "shared"
_WORD = re.compile(r"[a-z0-9']+")
_STOP = frozenset("a an the i you he she it we they me my your to of and or but is are was were be "
                  "in on at for that this what so oh just not no yes do did don't it's i'm".split())


def norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOP)


# MELD test-split utterances quoted in issue 16: that split is one the project is judged on
QUOTED = ["Please, don't hurt me. I'll give you whatever you want.",
          "How dare you touch my things without asking!",
          "That's the third time you've lied to my face. Get out!"]


def eval_texts(shared: Path = SHARED) -> list[str]:
    """Every evaluation text in shared/ (and quoted from a judged split) that a training line must
    not come close to."""
    out: list[str] = list(QUOTED)
    for p in sorted((shared / "eval").glob("*.jsonl")):
        out += [json.loads(line)["text"] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    meld = shared / "data" / "emotion" / "meld" / "dev_sent_emo.csv"
    if meld.exists():
        with meld.open(encoding="utf-8", errors="replace", newline="") as f:
            out += [row["Utterance"] for row in csv.DictReader(f)]
    return out


class LeakCheck:
    """Near-duplicates of evaluation texts: the same normalised words, or (for lines of 4+ content
    words) at least 60% of the words of either shared."""

    def __init__(self, texts: list[str]) -> None:
        self.exact = {norm(t) for t in texts}
        self.sets = [c for c in map(content, texts) if len(c) >= 4]
        self.index: dict[str, list[int]] = {}
        for i, c in enumerate(self.sets):
            for w in c:
                self.index.setdefault(w, []).append(i)

    def leaks(self, text: str) -> bool:
        if norm(text) in self.exact:
            return True
        c = content(text)
        if len(c) < 4:
            return False
        hits = Counter(i for w in c for i in self.index.get(w, ()))
        return any(n / min(len(c), len(self.sets[i])) >= 0.6 for i, n in hits.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", type=Path)
    ap.add_argument("--clean", action="store_true",
                    help="first drop the lines already there that come close to an eval text")
    ap.add_argument("--own", type=Path, default=OWN)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)

    check = LeakCheck(eval_texts())
    lines = [line for line in args.own.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines]
    if args.clean:
        keep = [k for k, r in enumerate(rows) if not check.leaks(r["text"]) and not check.leaks(r.get("heard") or "-")]
        print(f"{args.own.name}: {len(rows) - len(keep)} of {len(rows)} lines close to an eval text"
              + (" (dry run: kept)" if args.dry_run else ", dropped"))
        if not args.dry_run:
            args.own.write_text("".join(lines[k] + "\n" for k in keep), encoding="utf-8")
            rows = [rows[k] for k in keep]
    have = {norm(r["text"]) + "\t" + norm(r.get("heard", "")) for r in rows}
    added: list[dict] = []
    dropped: Counter[str] = Counter()
    for path in args.inputs:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = str(row["text"]).strip(), str(row["label"]).strip()
            except (ValueError, KeyError, TypeError):
                dropped["malformed"] += 1
                continue
            heard = str(row.get("heard") or "").strip()
            key = norm(text) + "\t" + norm(heard)
            why = ("unknown label" if label not in LABELS else "empty" if not norm(text) else
                   "repeat" if key in have else "close to an eval text" if check.leaks(text) or
                   (heard and check.leaks(heard)) else "")
            if why:
                dropped[why] += 1
                if why == "close to an eval text":
                    print(f"  dropped ({why}): {path.name}:{n} {text!r}")
                continue
            have.add(key)
            added.append({"text": text, "label": label, **({"heard": heard} if heard else {})})
    print(f"added {len(added)}: {dict(Counter(r['label'] for r in added))}; dropped {dict(dropped)}")
    if not args.dry_run and added:
        with args.own.open("a", encoding="utf-8") as f:
            for row in added:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
