"""What real faces do, measured from Live Link Face capture: the numbers the life layers use.

``capture.npz`` is written by ``python tools/measure_coupling.py`` from the recordings in
../shared/data/recordings (natural takes of two people): ``W`` the channel couplings, ``tone`` the
resting face, ``micro`` the motion of holds in three bands, ``gain_sigma`` how unequally the two
sides of a face move. Loaded once; read-only after that.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

PATH = Path(__file__).with_name("capture.npz")


@lru_cache(maxsize=1)
def load() -> dict[str, np.ndarray]:
    with np.load(PATH) as z:
        return {k: np.array(z[k]) for k in z.files}
