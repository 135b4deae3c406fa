"""The training progress bar: steps, step rate, ETA and a few metrics on one terminal line."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from samjax.train.writers import format_value


class ProgressBar:
    """A tqdm bar over training steps, with step rate, ETA and a few metrics.

    Disabled (no output at all) when ``enabled`` is False or on a non-chief process. Redraws at most once a
    second (``mininterval``), so logs captured from a non-tty (CI, ``nohup``) are not flooded.
    """

    def __init__(
        self,
        total_steps: int,
        initial_step: int = 0,
        *,
        enabled: bool = True,
        desc: str = "train",
        is_chief: bool = True,
        mininterval: float = 1.0,
        file: Any = None,
    ):
        self.total_steps = int(total_steps)
        self.enabled = bool(enabled and is_chief)
        self._step = int(initial_step)
        self._file = file if file is not None else sys.stderr
        self._bar = tqdm(
            total=self.total_steps,
            initial=self._step,
            desc=desc,
            unit="step",
            mininterval=mininterval,
            dynamic_ncols=True,
            smoothing=0.1,
            disable=not self.enabled,
            file=self._file,
        )

    @property
    def n(self) -> int:
        """The step the bar is at (tracked even when the bar is disabled)."""
        return self._step

    def update(self, step: int, **postfix: Any) -> None:
        """Move the bar to ``step`` and show ``postfix`` metrics compactly (``loss=0.4132, lr=1.0e-04``)."""
        step = int(step)
        delta = step - self._step
        self._step = step
        if not self.enabled:
            return
        if postfix:
            text = ", ".join(f"{name}={format_value(name, value)}" for name, value in postfix.items())
            self._bar.set_postfix_str(text, refresh=False)
        self._bar.update(delta)

    def write(self, message: str) -> None:
        """Print a log line above the bar, to the bar's stream, without breaking it (nothing when disabled)."""
        if self.enabled:
            tqdm.write(message, file=self._file)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
