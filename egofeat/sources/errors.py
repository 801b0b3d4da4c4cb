"""The error raised for malformed annotation files and segment tables."""

from __future__ import annotations

from pathlib import Path

ROW_CONVENTION = "1-based data row, header not counted"


class SegmentTableError(ValueError):
    """An annotation file or segment table is malformed.

    ``file``, ``row`` and ``column`` say where (each ``None`` when it does not apply).
    ``row`` is the 1-based data row as a user counts it in the file: the header line is not
    counted, so data row ``n`` of a CSV is on line ``n + 1``.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        self.problem = problem
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        where = [self.file or "segment table"]
        if self.row is not None:
            where.append(f"row {self.row} ({ROW_CONVENTION})")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        message = f"{', '.join(where)}: {self.problem}"
        return f"{message}. Fix: {self.fix}" if self.fix else message
