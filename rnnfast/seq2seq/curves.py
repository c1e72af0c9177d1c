"""The learning curves a training run keeps (in its checkpoints) and draws into curves.png."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class History:
    """Per-validation curves, kept in the checkpoint so a resumed run continues them."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    valid_accuracy: list[float] = field(default_factory=list)


def plot_history(history: History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(history.epochs, history.train_loss, label="train")
    loss_axes.plot(history.epochs, history.valid_loss, label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy per token", yscale="log", title="loss")
    loss_axes.legend()
    accuracy_axes.plot(history.epochs, [100 * a for a in history.valid_accuracy])
    accuracy_axes.set(xlabel="epoch", ylabel="%", title="validation exact match (greedy)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
