"""The feeling model: its tokenizer against BERT's, its reading of dialogue, intensity, and beats."""

from __future__ import annotations

import pytest

from runtime.generate import beats, prompt
from runtime.generate.prompt import LineRequest
from runtime.text import feeling as feeling_mod
from runtime.text.wordpiece import WordPiece

# ids from Hugging Face's BertTokenizer (do_lower_case) on the same vocabulary, computed once
REFERENCE = {
    "You sold my sword? MY sword?! For two silver coins?!":
        [101, 2017, 2853, 2026, 4690, 1029, 2026, 4690, 1029, 999, 2005, 2048, 3165, 7824, 1029, 999, 102],
    "Héllo, naïve café-goers... it's 3.5°C!":
        [101, 7592, 1010, 15743, 7668, 1011, 2175, 2545, 1012, 1012, 1012, 2009, 1005, 1055, 1017, 1012, 1019,
         7737, 2278, 999, 102],
    "I'm unbelievably UNIMPRESSED — truly.":
        [101, 1045, 1005, 1049, 4895, 8671, 2666, 3567, 6321, 4895, 5714, 19811, 1517, 5621, 1012, 102],
    "ok\tcool\n\nwhatever 🙄 日本語": [101, 7929, 4658, 3649, 100, 1864, 1876, 1950, 102],
    "Supercalifragilisticexpialidocious!!!":
        [101, 3565, 9289, 10128, 29181, 24411, 4588, 10288, 19312, 21273, 10085, 6313, 999, 999, 999, 102],
}


@pytest.fixture(scope="module")
def tok():
    return WordPiece(feeling_mod.default_paths()[1])


@pytest.fixture(scope="module")
def model():
    m = feeling_mod.load()
    assert m is not None, "exported_models/feeling.onnx is shipped"
    return m


@pytest.mark.parametrize("text", list(REFERENCE))
def test_wordpiece_matches_bert(tok, text):
    assert tok.encode(text)[0].tolist() == REFERENCE[text]


def test_pair_is_two_segments_and_the_heard_line_is_cut_first(tok):
    ids, types = tok.encode("Okay.", "I'm pregnant.")
    assert ids.tolist() == [101, 3100, 1012, 102, 1045, 1005, 1049, 6875, 1012, 102]
    assert types.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    ids, types = tok.encode("Fine.", "word " * 200, max_len=32)
    assert len(ids) == 32 and ids[:4].tolist() == [101, 2986, 1012, 102]  # the reply is whole
    long_ids, _ = tok.encode("word " * 200, max_len=32)
    assert len(long_ids) == 32 and long_ids[-1] == tok.sep


def test_an_mpnet_vocabulary_marks_a_pair_as_mpnet_does(tmp_path):
    # MPNet's vocabulary is BERT's after its four specials (<s> <pad> </s> <unk>); ids checked against
    # transformers' MPNetTokenizer on all-mpnet-base-v2's own file
    vocab = tmp_path / "vocab.txt"
    bert = feeling_mod.default_paths()[1].read_text(encoding="utf-8")
    vocab.write_text("<s>\n<pad>\n</s>\n<unk>\n" + bert, encoding="utf-8")
    mp = WordPiece(vocab)
    ids, types = mp.encode("Okay.", "I'm pregnant.")
    assert ids.tolist() == [0, 3104, 1016, 2, 2, 1049, 1009, 1053, 6879, 1016, 2] and not types.any()
    ids, _ = mp.encode("Fine.", "word " * 200, max_len=32)
    assert len(ids) == 32 and ids[:5].tolist() == [0, 2990, 1016, 2, 2] and ids[-1] == 2


def test_runs_on_the_cpu_provider(model):
    assert model.sess.get_providers()[0] == "CPUExecutionProvider"


@pytest.mark.parametrize("text,label", [
    # lines written for this test, none from an evaluation set
    ("Put the knife down. Please, I have children, I'll give you anything.", "fear"),
    ("You touched my notebook AGAIN? Get out of my room!", "anger"),
    ("We won! We actually won the whole tournament!", "joy"),
    ("She never came back from the war. I still set a plate for her.", "sadness"),
    ("The eastern gate closes at sundown, traveller.", "neutral"),
    ("Eww, there's hair in the soup and it smells like old socks.", "disgust"),
])
def test_hears_the_feeling_in_dialogue(model, text, label):
    got = model.classify(text)
    assert got.label == label, got.probs


def test_heard_changes_the_reading_of_a_short_reply(model):
    calm = model.classify("Okay.", "Dinner's on the table.")
    shaken = model.classify("Okay.", "The biopsy came back. It's cancer.")
    assert calm.label == "neutral"
    assert shaken.probs["neutral"] < calm.probs["neutral"]


def test_intensity_follows_delivery():
    angry = {"anger": 0.9, "neutral": 0.05}
    assert feeling_mod.intensity("MY sword?!", angry) > feeling_mod.intensity("I'm a bit cross.", angry)
    assert feeling_mod.intensity("Get out!", angry) > feeling_mod.intensity("Please leave now.", angry)
    assert feeling_mod.intensity("The shop opens at nine.", {"neutral": 0.9, "joy": 0.1}) == 0.0
    lo, hi = prompt.level_range(0.2, 4)
    lo2, hi2 = prompt.level_range(1.0, 4)
    assert 4 <= lo <= hi < hi2 == 9 and lo2 > lo


def test_a_turn_whose_feeling_changes_gets_two_beats(model):
    turn = "Haha, look at your face, you're covered in flour! Wait, why is your arm bent like that? Call an ambulance!"
    parts = beats.plan(LineRequest(turn), model)
    assert len(parts) >= 2
    assert max(parts[0].prior, key=parts[0].prior.get) == "joy"
    assert max(parts[-1].prior, key=parts[-1].prior.get) == "fear"
    assert all(p.intensity is not None for p in parts)


def test_a_turn_of_one_feeling_keeps_it(model):
    # the opening question may read calm or surprised; what follows is one feeling, not a change
    # per sentence
    parts = beats.plan(LineRequest("Did you make this yourself? It's wonderful. Thank you so much!"), model)
    feelings = [max(p.prior, key=p.prior.get) for p in parts]
    assert feelings[-1] == "joy" and len(feelings) <= 2, feelings
    assert feelings[0] in ("joy", "neutral", "surprise")
    parts = beats.plan(LineRequest("Turn left at the bakery and walk until you reach the river."), model)
    assert len(parts) == 1  # "until" cuts a stage direction only when the feeling changes there


def test_stage_directions_keep_their_connective_cuts(model):
    parts = beats.plan(LineRequest("She laughs at the joke, then suddenly looks worried."), model)
    assert [p.text for p in parts] == prompt.clauses("She laughs at the joke, then suddenly looks worried.")


def test_a_turn_word_starts_a_beat_on_any_change(model):
    # written for this test: the second sentence opens with a turn word and is read as another
    # feeling, however unsure; without the turn word the same unsure reading joins the first beat
    first = "We lost the final, after all that training."
    second = "nobody got hurt, and the coach is buying dinner."
    got = model.classify("but hey, " + second)
    assert got.label != model.classify(first).label and got.probs[got.label] < 0.99
    parts = beats.plan(LineRequest(f"{first} But hey, {second}"), model, rules=beats.Rules(change=0.99))
    assert len(parts) == 2
    assert len(beats.plan(LineRequest(f"{first} {second.capitalize()}"), model, rules=beats.Rules(change=0.99))) == 1


@pytest.mark.parametrize("text,label", [
    # two of our own held-out lines (tools/data/own_held400.jsonl): each sentence alone reads
    # otherwise (nobody in room 12 is a plain fact; holding the horses is a chore), the line around
    # it tells how it sounds. ("He's been hitting on his student. That's beyond creepy." was the first
    # example until stop 29: the reader with the MPNet beside it hears the disgust in the sentence alone.)
    ("Room 12 keeps pressing the call button. Nobody's in room 12. Nobody's been in room 12 since Tuesday.",
     "fear"),
    ("I'm not going into that crypt. I'll hold the horses. Somebody has to hold the horses.", "fear"),
])
def test_a_beat_hears_the_line_around_it(model, text, label):
    def felt(parts):
        # the face shows its surest feeling, as tools/sim_beats.py scores it
        best = max(parts, key=lambda p: max(p.prior.values()))
        return max(best.prior, key=best.prior.get)

    assert felt(beats.plan(LineRequest(text), model)) == label
    alone = beats.Rules(change=0.65, blend=0.0)  # each beat read alone, as until stop 26
    assert felt(beats.plan(LineRequest(text), model, rules=alone)) != label


def test_speech_connectives_need_a_sure_change(model):
    # "until" in speech is a word, not a cut: the clause after it counts like a sentence
    sure = beats.Rules(change=1.01)
    parts = beats.plan(LineRequest("Please keep your ticket until the end of the journey."), model, rules=sure)
    assert len(parts) == 1
    told = "She laughs at the joke, then suddenly looks worried."
    assert len(beats.plan(LineRequest(told), model, rules=sure)) == 2


def test_without_a_feeling_model_only_connectives_cut():
    parts = beats.plan(LineRequest("Ha! You fell in the mud! Wait, are you bleeding?"), None)
    assert len(parts) == 1 and parts[0].prior is None


def test_a_missing_model_file_is_a_log_line_not_a_crash(tmp_path, caplog):
    assert feeling_mod.load(tmp_path / "nope.onnx") is None
    assert "not found" in caplog.text


# -- with the real default model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(config, language):
    from runtime import assemble

    b = assemble.local_backend(config, language)
    yield b
    b.close()


@pytest.fixture(scope="module")
def probe():
    import importlib.util

    from tests.conftest import SHARED

    spec = importlib.util.spec_from_file_location("emotion_probe", SHARED / "eval" / "emotion_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _faces(backend, language, probe, req, count):
    from runtime.generate import stream_keyframes
    from runtime.keyframes.parser import KeyframeParser

    keys = [k.to_json() for k in stream_keyframes(backend, KeyframeParser(language, strict=True), req)]
    return [probe.label_segment(seg) for seg in probe.segments(keys, count)], keys


@pytest.mark.model
@pytest.mark.parametrize("text,expect", [
    # written for this test: dialogue that names no feeling
    ("Please, don't shoot. I'll open the vault, just let my daughter go.", ["fear"]),
    ("You dented my car and you're LAUGHING about it?", ["anger"]),
    ("You remembered my birthday! Oh, you're the best.", ["joy"]),
    ("The ferry to the mainland leaves at six.", ["neutral"]),
    ("Haha, look at your face, you're covered in flour! Wait, why is your arm bent like that? Call an ambulance!",
     ["joy", "fear"]),
])
def test_dialogue_faces_read_as_meant(local, language, probe, text, expect):
    got, keys = _faces(local, language, probe, LineRequest(text), len(expect))
    assert got == expect, keys
    ts = [k["t"] for k in keys]
    assert ts == sorted(ts)


@pytest.mark.model
@pytest.mark.parametrize("text", [
    # written for this test: a flash of surprise, then the line's joy (two beats, no turn word)
    "You got the job? That's wonderful, I'm so proud of you!",
    "Is that a new puppy? Oh, he's adorable, look at his little ears!",
])
def test_a_feeling_in_passing_peaks_below_the_lines_own(local, language, probe, text):
    from dataclasses import replace

    assert len(beats.plan(LineRequest(text), local.feeling, rules=local.beat_rules)) == 2
    assert _faces(local, language, probe, LineRequest(text), 1)[0] == ["joy"]
    shipped = local.beat_rules
    local.beat_rules = replace(shipped, aside=0.0)  # each beat at its own intensity: surprise peaks
    try:
        assert _faces(local, language, probe, LineRequest(text), 1)[0] == ["surprise"]
    finally:
        local.beat_rules = shipped


@pytest.mark.model
def test_intensity_reaches_the_levels(local, language):
    from runtime.generate import stream_keyframes
    from runtime.keyframes.parser import KeyframeParser

    def peak(text):
        keys = list(stream_keyframes(local, KeyframeParser(language), LineRequest(text)))
        return max([lv for k in keys for n, lv in k.items if language.preset(n) == "anger"], default=0)

    assert peak("You sold MY sword?! Get OUT!") > peak("Hm, I'm a bit cross that you were late.")


@pytest.mark.parametrize("sentences,expect", [
    (["Best.", "Birthday.", "Ever."], ["Best. Birthday. Ever."]),
    (["Ha!", "You fell right in the mud!", "Wait, are you bleeding?"],
     ["Ha! You fell right in the mud!", "Wait, are you bleeding?"]),
    (["Are you sure?", "Good."], ["Are you sure? Good."]),
    (["No."], ["No."]),
])
def test_very_short_sentences_are_read_with_a_neighbour(sentences, expect):
    assert beats._whole_sentences(sentences) == expect


@pytest.mark.parametrize("text,narration", [
    ("He slumps onto the bench, staring at his hands.", True),
    ("Maria waves at the departing train.", True),
    ("(sighing) Fine, take it.", True),
    ("She shouts at him: 'Give it back!'", True),
    ("You took the last slice again?", False),
    ("I can't believe it worked!", False),
    ("Don't touch the red wire.", False),
    ("That's the best news all week!", False),
    # spoken without I/you: a discourse marker first, or a spoken contraction
    ("Sure, that works.", False),
    ("Okay, the bus leaves at nine.", False),
    ("His toy's still under the porch.", False),
    ("The man sighs and sits down.", True),
])
def test_stage_directions_are_told_from_speech(text, narration):
    assert feeling_mod.is_narration(text) is narration
