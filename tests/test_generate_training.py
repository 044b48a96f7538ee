"""tools/make_corpus.py and tools/train_adapter.py in tiny form: pairs in the runtime's own prompt
format with held-out phrase families, and a two-step LoRA that exports a GGUF adapter llama.cpp loads."""

import json
import subprocess
import sys

import pytest

from runtime.generate import prompt as prompts
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import make_corpus  # noqa: E402


def test_corpus_pairs_use_the_runtime_prompt_and_hold_out_families(tmp_path):
    holdout = "joy/state,fear/speech"
    assert make_corpus.main(["--n", "300", "--heldout-n", "20", "--seed", "3", "--out", str(tmp_path),
                             "--holdout", holdout]) == 0
    train = [json.loads(line) for line in open(tmp_path / "train.jsonl")]
    held = [json.loads(line) for line in open(tmp_path / "heldout.jsonl")]
    assert len(train) == 300 and len(held) == 20
    assert not any(f in holdout.split(",") for r in train for f in r["families"])
    assert all(any(f in holdout.split(",") for f in r["families"]) for r in held)
    seqs = [r for r in train if len(r["expect"]) == 2]
    assert len(seqs) > 50
    from runtime.keyframes.language import Language
    from runtime.keyframes.parser import KeyframeParser

    lang = Language()
    for r in train:
        for ex, emo in zip(r["examples"], r["expect"]):
            # byte-identical to what the backend sends, answer in the backend's format
            assert ex["prompt"].endswith(prompts.line_part(prompts.LineRequest("x"))[-30:])
            assert ex["answer"].startswith(f" {prompts.FEELINGS[emo][0]}.\n")
            keys = KeyframeParser(lang, strict=True).feed(ex["answer"].split("\n", 1)[1])
            assert keys and {lang.preset(n) for n, _ in keys[1].items} & {emo}
    # a sequence is taught clause by clause, as the runtime asks it
    assert all(len(r["examples"]) == 2 for r in seqs)


def test_same_seed_same_corpus(tmp_path):
    for d in ("a", "b"):
        make_corpus.main(["--n", "50", "--heldout-n", "5", "--seed", "7", "--out", str(tmp_path / d)])
    assert (tmp_path / "a" / "train.jsonl").read_text() == (tmp_path / "b" / "train.jsonl").read_text()


@pytest.mark.model
@pytest.mark.timeout(900)  # ~1 min on idle cores; the dequantized base and two CPU steps on a loaded box take longer
def test_two_step_lora_exports_an_adapter_llama_cpp_loads(tmp_path):
    pytest.importorskip("peft", reason="needs the train extra")
    pytest.importorskip("transformers", reason="needs the train extra")
    make_corpus.main(["--n", "10", "--heldout-n", "2", "--out", str(tmp_path)])
    out = tmp_path / "a.gguf"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "train_adapter.py"), "--corpus",
                          str(tmp_path / "train.jsonl"), "--steps", "2", "--batch", "1", "--limit", "2",
                          "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["steps"] == 2 and card["tensor_pairs"] == 30 * 5 and len(card["base_sha256"]) == 64
    assert (tmp_path / "a.gguf.loss.tsv").read_text().count("\n") == 3
    # the runtime loads it on top of the base model, and still writes lines that parse
    from runtime.generate.llama import LlamaBackend
    from runtime.generate.models import resolve
    from runtime.keyframes.grammar import gbnf
    from runtime.keyframes.language import Language
    from runtime.keyframes.parser import KeyframeParser

    lang = Language()
    b = LlamaBackend(resolve("smollm2-135m"), gbnf(lang), lora_path=str(out), language=lang, n_threads=1)
    assert b.examples == []  # the adapter's bare training prompt
    text = "".join(p for p, _ in b.stream(prompts.LineRequest("She laughs.")))
    assert KeyframeParser(lang, strict=True).feed(text)
    b.close()
