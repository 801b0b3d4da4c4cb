"""One progress reporter, for extraction and training alike.

On a terminal it draws a rich progress bar. When the output is not a terminal (a SLURM or
nohup log, a pipe), it prints a plain line every ``interval`` seconds instead, and once at the
end, so a log shows progress while a long job runs; ``mode="json"`` prints the same as JSON
lines. Every line holds what was done of the total, the rate, the ETA and the reporter's
fields (e.g. ``ok 120 errors 2 frames/s 830``)::

    extract: 12/40 parts (30%) | 1,204 segments/s | ETA 3m20s | ok 1,180 errors 24 frames/s 2,310

A reporter that is not enabled does nothing, so callers never branch on it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, Any, Literal

__all__ = ["Mode", "ProgressReporter", "format_duration"]

Mode = Literal["auto", "bar", "lines", "json", "off"]


def format_duration(seconds: float) -> str:
    """``3m20s``, ``1h02m``, ``45s``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class ProgressReporter:
    """Progress of ``total`` units of work, reported as a bar, plain lines or JSON lines.

    Args:
        what: the job's name, first on every line (``"extract"``, ``"train"``).
        total: units of work in all (0: unknown or nothing to do).
        unit: what a unit is, for the lines (``"parts"``, ``"steps"``).
        mode: ``auto`` (a bar on a terminal, lines otherwise), ``bar``, ``lines``, ``json`` or
            ``off``.
        interval: seconds between plain/JSON lines.
        stream: where lines and the bar go (default: stderr).
        rate_of: ``(done, elapsed) -> (value, label)``: the rate shown (default units/s).
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        unit: str = "",
        mode: Mode = "auto",
        interval: float = 30.0,
        stream: IO[str] | None = None,
        rate_of: Callable[[float, float], tuple[float, str]] | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, int(total), unit
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if _is_terminal(self.stream) else "lines"
        self.mode: Mode = mode
        self.interval = float(interval)
        self.rate_of = rate_of or (lambda done, elapsed: (done / elapsed, f"{unit or 'units'}/s"))
        self.done = 0.0
        self.fields: dict[str, Any] = {}
        self.description = ""
        self._started = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar: Any = None
        self._bar_task: Any = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    # ---- reporting ------------------------------------------------------------------------
    def advance(self, units: float = 1, **fields: Any) -> None:
        """Count ``units`` more done; ``fields`` replace the shown fields of the same names."""
        with self._lock:
            self.done += units
            self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._bar_task, completed=self.done, info=self._field_text())

    def set(self, *, description: str | None = None, **fields: Any) -> None:
        """Change the description or fields without counting work."""
        with self._lock:
            if description is not None:
                self.description = description
            self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._bar_task, description=self._bar_description(),
                             info=self._field_text())

    def snapshot(self) -> dict[str, Any]:
        """What the reporter shows now, as a dict (the JSON line)."""
        elapsed = max(1e-9, time.perf_counter() - self._started)
        with self._lock:
            done, fields = self.done, dict(self.fields)
        rate, rate_label = self.rate_of(done, elapsed)
        eta = (self.total - done) * elapsed / done if done and self.total else None
        record: dict[str, Any] = {
            "what": self.what, "done": round(done, 3), "total": self.total, "unit": self.unit,
            "elapsed_sec": round(elapsed, 1), "rate": round(rate, 3), "rate_unit": rate_label,
            "eta_sec": None if eta is None else round(eta, 1),
        }
        if self.description:
            record["description"] = self.description
        return record | fields

    def line(self) -> str:
        """The plain progress line (see the module docstring)."""
        record = self.snapshot()
        done, total = record["done"], record["total"]
        count = f"{_number(done)}/{_number(total)}" if total else _number(done)
        parts = [f"{self.what}: {count} {self.unit}".rstrip()]
        if total:
            parts[0] += f" ({100 * done / total:.0f}%)"
        parts.append(f"{_number(record['rate'])} {record['rate_unit']}")
        if record["eta_sec"] is not None:
            parts.append(f"ETA {format_duration(record['eta_sec'])}")
        elif total:  # nothing done yet: no rate to tell from
            parts.append("ETA --")
        if self.description:
            parts.append(self.description)
        if self.fields:
            parts.append(self._field_text())
        return " | ".join(parts)

    def _field_text(self) -> str:
        return " ".join(f"{key.replace('_', ' ')} {_number(value)}" for key, value in self.fields.items())

    def _bar_description(self) -> str:
        return f"{self.what} {self.description}".strip()

    def _emit(self) -> None:
        if self.mode == "json":
            print(json.dumps(self.snapshot()), file=self.stream, flush=True)
        elif self.mode == "lines":
            print(self.line(), file=self.stream, flush=True)

    # ---- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> ProgressReporter:
        self._started = time.perf_counter()
        if self.mode == "bar":
            self._start_bar()
        elif self.mode in ("lines", "json"):
            self._ticker = threading.Thread(target=self._tick, name=f"egofeat-{self.what}-progress",
                                            daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            if kind is None:  # the final state, once (a failure says its own one line)
                self._emit()
        if self._bar is not None:
            self._bar.stop()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(self.unit), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(file=self.stream), transient=True,
        )
        self._bar.start()
        self._bar_task = self._bar.add_task(self._bar_description(), total=self.total or None,
                                            info=self._field_text())


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _number(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    return str(value)
