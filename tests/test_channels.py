import numpy as np
import pytest

from runtime import channels


def test_table_matches_protocols_order():
    assert channels.COUNT == 61 and channels.SHAPES == 52
    assert channels.NAMES[0] == "EyeBlinkLeft"
    assert channels.NAMES[15] == "JawLeft" and channels.NAMES[16] == "JawRight"
    assert channels.NAMES[51] == "TongueOut" and channels.NAMES[52] == "HeadYaw"
    assert channels.NAMES[60] == "RightEyeRoll"
    assert len(set(channels.NAMES)) == 61


@pytest.mark.parametrize("spelling", ["EyeBlinkLeft", "eyeBlinkLeft", "eyeBlink_L", "EYEBLINKLEFT"])
def test_every_spelling_finds_the_channel(spelling):
    assert channels.lookup(spelling) == 0


def test_apple_spellings_roundtrip():
    for name in channels.NAMES:
        assert channels.lookup(channels.camel(name)) == channels.INDEX[name]
        assert channels.lookup(channels.apple_raw(name)) == channels.INDEX[name]
    assert channels.apple_raw("MouthSmileRight") == "mouthSmile_R"
    assert channels.apple_raw("JawOpen") == "jawOpen"


def test_unknown_name_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown ARKit channel 'MouthSmil'"):
        channels.lookup("MouthSmil")


def test_mirror_swaps_sides_and_is_an_involution():
    m = channels.MIRROR
    assert channels.NAMES[m[channels.INDEX["EyeBlinkLeft"]]] == "EyeBlinkRight"
    assert channels.NAMES[m[channels.INDEX["LeftEyeYaw"]]] == "RightEyeYaw"
    assert m[channels.INDEX["JawOpen"]] == channels.INDEX["JawOpen"]
    assert (m[m] == np.arange(61)).all()
    assert len(channels.PAIRS) == 23
    sign = channels.MIRROR_SIGN
    assert [channels.NAMES[i] for i in np.flatnonzero(sign < 0)] == [
        "HeadYaw", "HeadRoll", "LeftEyeYaw", "LeftEyeRoll", "RightEyeYaw", "RightEyeRoll"]
    f = np.random.default_rng(0).uniform(-1, 1, 61).astype(np.float32)
    np.testing.assert_array_equal((f[m] * sign)[m] * sign, f)  # mirroring twice is the identity


def test_symmetric_name_means_both_sides():
    assert channels.indices("MouthSmile") == (23, 24)
    f = channels.from_dict({"MouthSmile": 0.5, "HeadYaw": -0.2})
    assert f[23] == f[24] == 0.5 and f[52] == pytest.approx(-0.2)


def test_clamp_uses_each_channels_range():
    f = np.full(61, 2.0, dtype=np.float32)
    f[52:] = -3.0
    out = channels.clamp(f)
    assert (out[:52] == 1.0).all() and (out[52:] == -1.0).all()
