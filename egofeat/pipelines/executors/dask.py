"""The dask.distributed executor: one task per part, encoders loaded once per worker."""


from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from egofeat.config import ExtractConfig
from egofeat.extract import DecodePool
from egofeat.pipelines.executors.parts import (
    PartResult,
    held_elsewhere,
    part_outcomes,
    target_streams,
    uncommitted,
)
from egofeat.pipelines.extract import (
    PartOutcome,
    PartRunner,
    PartSpec,
    PreparedRun,
    build_sampler,
)
from egofeat.store import FeatureStore
from egofeat.store.crashpoints import crash_point

#: Worker plugins are named after their driver's dask client: ``egofeat-extract-<client id>``.
PLUGIN_PREFIX = "egofeat-extract-"


class ExtractWorkerPlugin(WorkerPlugin):
    """Builds a dask worker's part runner (its encoders) and decode pool once, at worker start.

    Only the options travel to the workers: encoders are never shipped through the scheduler.
    With ``gpu_per_worker`` (a plain LocalCluster on a GPU machine), worker ``i`` uses GPU ``i``.
    A worker runs one part at a time (its decode pool and encoders serve one part), whatever
    its number of threads.
    """

    def __init__(self, options: ExtractConfig, name: str, *, gpu_per_worker: bool = False) -> None:
        self.options = options
        self.name = name
        self.gpu_per_worker = gpu_per_worker
        self.runner: PartRunner | None = None
        self.pool: DecodePool | None = None

    def setup(self, worker: Any) -> None:
        options = self.options
        if self.gpu_per_worker:
            import torch

            options = options.model_copy(update={"device": f"cuda:{int(worker.name) % torch.cuda.device_count()}"})
        if options.workers and multiprocessing.current_process().daemon:
            raise RuntimeError(
                f"dask worker {worker.address} is a daemonic process and cannot start decode "
                "processes: start workers with DASK_DISTRIBUTED__WORKER__DAEMON=False, or pass --workers 0"
            )
        store = FeatureStore.open(options.store)
        self.runner = PartRunner(options, store, build_sampler(options))
        self.pool = DecodePool(options.workers, options.prefetch, options.decode_timeout)
        self._one_part_at_a_time = threading.Lock()

    def teardown(self, worker: Any) -> None:
        if self.pool is not None:
            self.pool.close()

    def run(self, part: PartSpec) -> PartOutcome:
        """One part on this worker; parts other writers hold or committed are not decoded."""
        if self.runner is None:
            raise RuntimeError(f"{self.name} did not set up on this worker: see the worker's log")
        streams = target_streams(self.runner)
        todo = uncommitted(streams, part)
        if todo is None or held_elsewhere(streams, todo):
            return PartOutcome(part.part_id, skipped=sorted(part.todo), segments=part.n_segments)
        with self._one_part_at_a_time:
            crash_point("decode")
            (outcome,) = part_outcomes(self.runner, [todo], self.pool)
        return outcome


def run_part_task(part: PartSpec, plugin_name: str) -> tuple[PartOutcome, str]:
    """The dask task of one part: (its outcome, the worker's address)."""
    worker = get_worker()
    return worker.plugins[plugin_name].run(part), worker.address


class DaskExecutor:
    """Runs each part as a dask task, on a LocalCluster or the cluster at ``scheduler``."""

    def __init__(self, run: PreparedRun, *, scheduler: str | None = None,
                 workers: int | None = None, retries: int = 2) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--dask-workers must be >= 1, not {workers}")
        if retries < 0:
            raise ValueError(f"--retries must be >= 0, not {retries}")
        self.options = run.options
        self.scheduler, self.workers, self.retries = scheduler, workers, retries
        # Task keys name the work (streams and part), not the run: the same part submitted by
        # two drivers to one scheduler is one task.
        stream_keys = sorted(t.stream.info.key for t in run.runner.targets)
        self._key_prefix = hashlib.sha256(",".join(stream_keys).encode()).hexdigest()[:12]
        self._stack = ExitStack()
        self._gpu_per_worker = False
        self._resources: dict[str, int] | None = None
        self._round = 0

    def __enter__(self) -> DaskExecutor:
        try:
            self.client = self._stack.enter_context(self._connect())
            self._unregister_dead_drivers_plugins()
            plugin = ExtractWorkerPlugin(self.options, PLUGIN_PREFIX + self.client.id,
                                         gpu_per_worker=self._gpu_per_worker)
            self.client.register_plugin(plugin, name=plugin.name)
            self._stack.callback(self.client.unregister_worker_plugin, plugin.name)
            self.plugin_name = plugin.name
            if any("GPU" in w.get("resources", {}) for w in self.client.scheduler_info()["workers"].values()):
                self._resources = {"GPU": 1}  # one part at a time per GPU
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _unregister_dead_drivers_plugins(self) -> None:
        """A killed driver never unregisters its plugin: free the encoders it left in the workers."""
        live = set(self.client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))
        loaded = self.client.run(lambda dask_worker: [n for n in dask_worker.plugins if n.startswith(PLUGIN_PREFIX)])
        for name in {name for names in loaded.values() for name in names}:
            if name.removeprefix(PLUGIN_PREFIX) not in live:
                self.client.unregister_worker_plugin(name)

    def _connect(self) -> Client:
        if self.scheduler:
            return Client(self.scheduler)
        gpus = _gpu_count(self.options.device)
        n_workers = self.workers or gpus or max(1, (os.cpu_count() or 2) // 2)
        if self.options.workers:  # decode processes are children of the worker processes
            self._stack.enter_context(dask.config.set({"distributed.worker.daemon": False}))
        kwargs: dict[str, Any] = {
            "n_workers": n_workers, "threads_per_worker": 1, "host": "127.0.0.1",
            "silence_logs": logging.ERROR,
        }
        if gpus:
            kwargs["resources"] = {"GPU": 1}
        try:
            from dask_cuda import LocalCUDACluster  # each worker sees its own GPU as cuda:0
        except ImportError:
            LocalCUDACluster = None  # noqa: N806
        if gpus and LocalCUDACluster is not None:
            cluster = LocalCUDACluster(**kwargs)
        else:
            self._gpu_per_worker = bool(gpus)
            cluster = LocalCluster(processes=True, **kwargs)
        self._stack.enter_context(cluster)
        return Client(cluster)

    def describe(self) -> dict[str, Any]:
        info = self.client.scheduler_info()
        return {"scheduler": info.get("address"), "dask_workers": len(info["workers"]),
                "dashboard": self.dashboard, "retries": self.retries, "resources": self._resources}

    @property
    def dashboard(self) -> str:
        return self.client.dashboard_link

    def map(self, parts: Sequence[PartSpec]) -> Iterator[PartResult]:
        """Submit one task per part; results as tasks complete."""
        self._round += 1
        futures = {
            self.client.submit(
                run_part_task, part, self.plugin_name, retries=self.retries, pure=False,
                resources=self._resources, key=f"egofeat-{self._key_prefix}-{part.part_id}{_retry_key(part)}-{self._round}",
            ): part
            for part in parts
        }
        for future in as_completed(futures):
            part = futures.pop(future)
            try:
                outcome, where = future.result()
            except Exception as error:  # after its retries; the part stays uncommitted
                yield PartResult(part, error=f"{type(error).__name__}: {error}")
            else:
                yield PartResult(part, outcome, where=where)
            future.release()


def _retry_key(part: PartSpec) -> str:
    """A retried part is other work than the part's first write: its task key says what it replaces."""
    if not part.replaces:
        return ""
    return "-retry-" + hashlib.sha256(repr(sorted(part.replaces.items())).encode()).hexdigest()[:8]


def _gpu_count(device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401  (the dashboard's dependency)
    except ImportError:
        return False
    return True


