"""Where a stream's files live, as docs/FORMAT.md lays them out (the names are in layout.py).

Readers (:mod:`egofeat.store.stream`) and the writer (:mod:`egofeat.store.writer`) both take a
:class:`StreamPaths`, so neither has to reach into the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from egofeat.store import layout


@dataclass(frozen=True)
class StreamPaths:
    """Paths of one stream's files under a store root (a local path or a bucket path)."""

    root: str
    name: str

    def path(self, *parts: str) -> str:
        """``parts`` below the stream's folder ``streams/<name>/``."""
        return "/".join([self.root, layout.STREAMS_DIR, *self.name.split("/"), *parts])

    @property
    def folder(self) -> str:
        return self.path()

    @property
    def stream_file(self) -> str:
        return self.path(layout.STREAM_FILE)

    @property
    def commits(self) -> str:
        return self.path(layout.COMMITS_DIR)

    def commit(self, part_id: str) -> str:
        """The commit record of a part: its existence is what makes the part visible."""
        return self.path(layout.COMMITS_DIR, f"{part_id}.json")

    @property
    def parts(self) -> str:
        return self.path(layout.PARTS_DIR)

    def part(self, part_id: str) -> str:
        return self.path(layout.PARTS_DIR, part_id)

    def attempt(self, part_id: str, attempt: str) -> str:
        return self.path(layout.PARTS_DIR, part_id, attempt)

    def features(self, part_id: str, attempt: str) -> str:
        return self.path(layout.PARTS_DIR, part_id, attempt, layout.FEATURES)

    def manifest(self, part_id: str, attempt: str) -> str:
        return self.path(layout.PARTS_DIR, part_id, attempt, layout.MANIFEST)

    def lease(self, part_id: str) -> str:
        return self.path(layout.LEASES_DIR, f"{part_id}.lock")

    @property
    def plan_leases(self) -> str:
        return self.path(layout.LEASES_DIR, "plans")

    @property
    def plan_file(self) -> str:
        return self.path(layout.PLAN_FILE)

    @property
    def consolidated_file(self) -> str:
        return self.path(layout.CONSOLIDATED_FILE)
