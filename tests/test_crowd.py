import numpy as np

from runtime.animate.crowd import Crowd
from runtime.animate.spline import monotone_cubic
from runtime.sinks.livelink import decode_packet


def test_crowd_equals_the_spline_per_avatar_and_packets_decode():
    crowd = Crowd(5, keys=6, seed=3)
    q = np.linspace(0, crowd.loop.min() - 1e-6, 50)
    ours = np.stack([crowd.evaluate(t).copy() for t in q], axis=1)  # (5, 50, 61)
    for i in range(5):
        ref = np.clip(monotone_cubic(crowd.times[i], crowd.values[i], q), -1, 1)
        ref[:, :52] = np.clip(ref[:, :52], 0, 1)
        np.testing.assert_allclose(ours[i], ref, atol=1e-5)
    crowd.send(7, 7 / 60)
    p = decode_packet(bytes(crowd._rows[3]))
    assert p.subject == "npc00003" and p.frame_number == 7
    np.testing.assert_array_equal(p.values, crowd.frame[3])
    crowd.close()
