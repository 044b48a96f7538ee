"""The bench's pacing receiver: the kernel's arrival stamp of every datagram (what left the
sender, without the receiver's own wake-up) and the frame numbers it carried."""

import multiprocessing as mp
import socket
import sys
import threading
import time

import numpy as np
import pytest

from runtime import bench, channels
from runtime.sinks.livelink import encode_packet


@pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS is Linux's")
def test_receiver_reports_kernel_stamps_of_each_datagram():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parent, child = mp.Pipe()
    rx = threading.Thread(target=bench._receiver, args=(port, 0.5, child), daemon=True)
    rx.start()
    assert parent.recv() == "ready"
    sent = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for n in range(6):
            sent.append(time.time())
            tx.sendto(encode_packet(np.zeros(channels.COUNT, np.float32), "dev", "bench", n, 0.0,
                                    (60, 1)), ("127.0.0.1", port))
            time.sleep(0.03)
    arrivals, kernel, frames = parent.recv()
    rx.join(2)
    assert frames == list(range(6))
    assert len(kernel) == len(arrivals) == 6
    # each stamp is the wall time the datagram reached the socket: just after it was sent
    assert all(0 <= k - t < 0.01 for k, t in zip(kernel, sent))
    assert np.all(np.diff(kernel) > 0.025)
