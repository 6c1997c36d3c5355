"""Training metrics as a CSV file (one row per :meth:`MetricsLogger.log` call) and TensorBoard scalars, plus
:func:`plot_metrics` to draw a PNG from the CSV.

Columns: the union of the keys logged so far, ``step`` first. When a call brings a key not seen before, the
file is rewritten once with the wider header (earlier rows get empty cells), so any mix of keys works and
the CSV always parses with one header. Keys follow SB3's names where the quantity is the same
(``rollout/ep_rew_mean``, ``train/approx_kl``, ``time/fps``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Write ``out_dir/csv_name`` and (if ``tensorboard`` is installed and asked for) TensorBoard events.

    ``resume=True`` appends to an existing CSV (keeping its rows and columns); otherwise it is overwritten.
    Non-finite values are written as ``nan``/``inf`` in the CSV (never dropped: they are what a reader
    needs to see).
    """

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True, csv_name: str = "metrics.csv",
                 resume: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out_dir / csv_name
        self._columns: list[str] = ["step"]
        self._rows: list[dict[str, Any]] = []  # kept only to rewrite the file when the header widens
        if resume and self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            with self.csv_path.open(newline="") as f:
                reader = csv.DictReader(f)
                self._columns = list(reader.fieldnames or ["step"])
                self._rows = list(reader)
        else:
            self.csv_path.write_text("")
        self._file = self.csv_path.open("a", newline="")
        self._writer: csv.DictWriter | None = None
        if self._rows or (resume and self.csv_path.stat().st_size > 0):
            self._writer = csv.DictWriter(self._file, fieldnames=self._columns)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard (or torch) not installed: CSV only
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one row ``{step, **metrics}`` to the CSV and each metric as a TensorBoard scalar."""
        if self._file.closed:
            raise ValueError("MetricsLogger.log called after close()")
        row: dict[str, Any] = {"step": int(step)}
        for k, v in metrics.items():
            if k == "step":
                raise ValueError("'step' is the logger's own column; pass it as the step argument")
            row[k] = float(v)
        new = [k for k in row if k not in self._columns]
        if new or self._writer is None:
            self._columns += new
            self._rewrite()
        assert self._writer is not None
        self._writer.writerow(row)
        self._file.flush()
        self._rows.append(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))

    def _rewrite(self) -> None:
        self._file.close()
        with self.csv_path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._columns)
            w.writeheader()
            w.writerows(self._rows)
        self._file = self.csv_path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self._columns)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(csv_path: str | Path) -> dict[str, list[float]]:
    """The CSV as ``{column: values}`` (empty cells become nan)."""
    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows] for k in rows[0]}


def plot_metrics(csv_path: str | Path, keys: Sequence[str], out_png: str | Path, *, x: str = "step",
                 title: str | None = None) -> Path:
    """One subplot per key of a metrics CSV against column ``x``; saved as a PNG (matplotlib, Agg backend)."""
    from textgym._optional import require

    matplotlib = require("matplotlib", "plotting metrics")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not keys:
        raise ValueError("plot_metrics needs at least one key to plot")
    data = read_metrics(csv_path)
    missing = [k for k in [x, *keys] if k not in data]
    if missing:
        raise ValueError(f"columns {missing} are not in {csv_path}; it has {sorted(data)}")
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 1.8 * len(keys) + 0.6), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        pts = [(a, b) for a, b in zip(data[x], data[key]) if not math.isnan(b)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(x)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
