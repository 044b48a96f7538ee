"""The feeling model's own training lines: well-formed, and clear of every evaluation text we hold."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import add_dialogue_lines as add  # noqa: E402

from runtime.text.feeling import LABELS  # noqa: E402


def test_leak_check_flags_near_copies_only():
    check = add.LeakCheck(["I tried everything, but it still wasn't enough to save the old mill.", "No."])
    assert check.leaks("no")  # the same words, punctuation aside
    assert check.leaks("I tried everything. It still wasn't enough to save the mill.")
    assert not check.leaks("The mill burned down last winter and nobody rebuilt it.")
    assert not check.leaks("No way.")


def test_adding_drops_repeats_leaks_and_bad_lines(tmp_path, monkeypatch):
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"text": "Fine, take it.", "label": "neutral"}) + "\n")
    new = tmp_path / "new.jsonl"
    new.write_text("\n".join([
        json.dumps({"text": "fine take it", "label": "anger"}),          # a repeat
        json.dumps({"text": "The quay floods at every spring tide.", "label": "neutral"}),
        json.dumps({"text": "Something.", "label": "boredom"}),          # unknown label
        "{not json",
        json.dumps({"text": "A copy of an eval line, nearly word for word.", "label": "joy"}),
    ]) + "\n")
    monkeypatch.setattr(add, "eval_texts", lambda: ["A copy of an eval line, nearly word for word!"])
    assert add.main([str(new), "--own", str(own)]) == 0
    rows = [json.loads(line) for line in own.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["Fine, take it.", "The quay floods at every spring tide."]


def test_committed_lines_are_clean():
    rows = [json.loads(line) for line in add.OWN.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) > 5000 and all(r["label"] in LABELS and r["text"].strip() for r in rows)
    if not (add.SHARED / "eval").is_dir():
        pytest.skip("../shared/eval not beside the checkout")
    check = add.LeakCheck(add.eval_texts())
    leaks = [r["text"] for r in rows if check.leaks(r["text"]) or check.leaks(r.get("heard") or "-")]
    assert leaks == []
