"""PNG plots of a take: the channels that moved, with the keyframes marked.

matplotlib is an optional extra (``pip install -e .[plot]``): plots are for people, the runtime
never needs them.
"""

from __future__ import annotations

import numpy as np

from runtime import channels


def plot_take(frames: np.ndarray, fps: float, keys: list, path: str, title: str = "",
              top: int = 10) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install -e '.[plot]'") from None
    t = np.arange(len(frames)) / fps
    span = frames.max(axis=0) - frames.min(axis=0)
    moved = [i for i in np.argsort(-span)[:top] if span[i] > 1e-3]
    fig, ax = plt.subplots(figsize=(11, 5), dpi=100)
    for i in moved:
        (line,) = ax.plot(t, frames[:, i], label=channels.NAMES[i], lw=1.6)
        kt = np.array([k for k, _ in keys])
        kv = np.array([kf.values[i] for _, kf in keys])
        if len(kt):
            ax.plot(kt, kv, "o", color=line.get_color(), ms=5)
    for k, kf in keys:
        ax.axvline(k, color="0.85", lw=0.8, zorder=0)
        ax.text(k, 1.02, " ".join(f"{n} {lv}" for n, lv in kf.items), rotation=45, fontsize=7, va="bottom")
    ax.set_xlabel("seconds")
    ax.set_ylabel("value")
    ax.set_ylim(min(-0.02, float(frames.min()) - 0.02), 1.1)
    ax.set_title(title, fontsize=10, pad=28)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
