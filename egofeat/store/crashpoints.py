"""A test hook: die at a named point of a write, exactly as ``kill -9`` would.

Crash-safety tests set ``EGOFEAT_TEST_CRASH_AT=<point>:<n>`` in the environment of a process;
the ``n``-th time (default 1) that process reaches ``point`` it sends itself SIGKILL, so no
``finally`` block, ``atexit`` handler or lease release runs. With ``EGOFEAT_TEST_CRASH_FLAG=
<file>`` the crash happens only if that file does not exist yet (it is created first), so a
crash fires once across processes that restart (dask workers restarted by their nanny).

Points: ``before_commit`` (a part's features and manifest are written, its commit record is
not), ``create_exclusive`` (the temporary file of a file created exclusively, a commit record or
the store's marker, is written and not yet linked into place), ``replace`` (the temporary of a
file replaced atomically, e.g. ``stream.json``, ``plan.json``, a consolidated manifest or a
segment batch, is written and not yet renamed into place), ``after_commit`` (the record exists;
the writer has not returned); executors add ``decode`` (a dask task starts decoding its part)
and ``after_part`` (a driver has logged a finished part and decodes the next ones).
Without the variable this module does nothing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_AT_ENV = "EGOFEAT_TEST_CRASH_AT"
CRASH_FLAG_ENV = "EGOFEAT_TEST_CRASH_FLAG"

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """SIGKILL this process if ``EGOFEAT_TEST_CRASH_AT`` names this point and hit count."""
    spec = os.environ.get(CRASH_AT_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] != int(nth or 1):
        return
    flag = os.environ.get(CRASH_FLAG_ENV)
    if flag:
        try:
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # it already fired once
            return
    os.kill(os.getpid(), signal.SIGKILL)
