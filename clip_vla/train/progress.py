"""A progress bar with the running loss (tqdm when installed, a plain stderr line otherwise)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", enabled: bool = True, initial: int = 0) -> None:
        self.total, self.desc, self.enabled, self.n = total, desc, enabled, initial
        self._bar = None
        self._t0 = time.time()
        self._last = 0.0
        self._postfix = ""
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True, file=sys.stderr,
                                 mininterval=1.0)
            except ImportError:
                self._bar = None

    def update(self, k: int = 1, **postfix: float) -> None:
        self.n += k
        if not self.enabled:
            return
        text = " ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in postfix.items())
        if self._bar is not None:
            if text:
                self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(k)
            return
        now = time.time()
        if now - self._last > 2.0 or self.n >= self.total:
            self._last = now
            sys.stderr.write(f"\r{self.desc} {self.n}/{self.total} {text} [{now - self._t0:.0f}s]")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
