"""PNG of the training curves (matplotlib's Agg canvas, no display needed)."""
from __future__ import annotations

import io
from pathlib import Path

from ..io.atomic import atomic_write_bytes


def plot_history(history: list[dict], path: str | Path, prior_log_prob: float | None = None, title: str = "") -> Path:
    """Plot mean train / validation log-prob per epoch and write a PNG.

    Parameters
    ----------
    history : list of dict
        Rows with ``epoch``, ``train_log_prob``, ``val_log_prob`` (nats per
        simulation, in the parameters' own units).
    path : str or Path
        Output PNG, written atomically.
    prior_log_prob : float, optional
        The prior's log density, drawn as a reference line.
    title : str
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_log_prob"] for h in history], "o-", ms=3, label="train")
    ax.plot(epochs, [h["val_log_prob"] for h in history], "s-", ms=3, label="validation")
    if prior_log_prob is not None:
        ax.axhline(prior_log_prob, color="0.5", ls=":", label="prior")
    if history:
        best = max(history, key=lambda h: h["val_log_prob"])
        ax.axvline(best["epoch"], color="0.7", ls="--", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean log q(theta | x)  [nats]")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
