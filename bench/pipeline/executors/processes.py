"""The processes executor: artifacts built in worker processes on this machine, several at once, each with its own
threads (``--threads``, default 1), one worker per share of the cores (``--workers``, default: the usable cores
divided by the threads).

Why: on a CPU a small network's convolutions do not keep every core busy from one process. ResNet-8 at batch 128
on 2 Zen 4 cores trained at about 2,630 images/s on 2 threads in one process, and at 3,060 together as two
processes of 1 thread each, training two models at once (``docs/runtime.md#threads-on-a-small-cpu-machine``).
So ``--executor auto``, the default, uses this executor on a machine that runs on its CPU with 2 cores or more.

A worker builds with one ``Builder``, so the datasets it loaded stay loaded between its artifacts; models
pass between workers through the model cache, as under Ray. A worker that dies (killed, out of memory) fails
the artifact it was building, with its exit status, and is replaced; a rerun builds that artifact again.
An artifact past ``runtime.cell_timeout_s`` ends itself on time (the worker's own alarm); one stuck in native
code past that has its worker killed and replaced.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from bench.pipeline.executors.base import Executor, register_executor
from transfer_core.cores import usable_cores

if TYPE_CHECKING:
    from bench.pipeline.build import BuildEnv, Outcome
    from bench.pipeline.plan import Artifact

STOP_WAIT_S = 10.0  # at close, how long an idle worker has to exit before it is killed


def _die_with(driver_pid: int) -> None:
    """Has the kernel kill this process when the driver dies (Linux's parent-death signal), so a driver killed
    mid-run leaves no worker building on without it (elsewhere a worker finishes what it builds, then ends)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != driver_pid:  # it died before the signal was asked for
        os._exit(1)


def _serve(connection, env: BuildEnv, driver_pid: int, threads: int) -> None:
    """A worker's life: build each artifact the driver sends, send back its outcome, until the driver hangs up."""
    _die_with(driver_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which stops the workers itself
    from bench.pipeline.build import Outcome
    from bench.pipeline.executors.remote import build_in_worker

    while True:
        try:
            task = connection.recv()
        except EOFError:  # the driver is gone
            return
        if task is None:
            return
        artifact, inputs = task
        try:
            outcome = build_in_worker(env, artifact, inputs, f"(worker pid={os.getpid()}) ", threads)
        except Exception as e:  # the builder turns errors into outcomes; this is what escapes it
            outcome = Outcome("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}")
        try:
            connection.send(outcome)
        except OSError:  # the driver is gone
            return


class _Worker:
    """One worker process and the driver's end of its pipe."""

    def __init__(self, context, env: BuildEnv, threads: int):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child_end, env, os.getpid(), threads), name="bench worker", daemon=False
        )
        with _ctrl_c_ignored():  # inherited: a Ctrl-C while it starts reaches the driver alone
            self.process.start()
        child_end.close()  # the worker holds the other end (and passes it to processes it forks)

    def answered(self) -> bool:
        """Whether it sent something, or its pipe closed."""
        return self.connection.poll()

    def ask_to_stop(self) -> None:
        """Tells an idle worker to exit once it reads this; its exit (the interpreter's teardown) takes a moment."""
        try:
            self.connection.send(None)
        except OSError:  # already gone
            pass

    def stop(self, kill: bool) -> None:
        """Waits up to ``STOP_WAIT_S`` for a worker asked to stop to exit, or kills it at once."""
        if not kill:
            self.process.join(STOP_WAIT_S)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.connection.close()

    def how_it_died(self) -> str:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            return "its worker process stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"its worker process was killed ({name}{', likely out of memory' if name == 'SIGKILL' else ''})"
        return f"its worker process exited with status {code}"


@contextlib.contextmanager
def _ctrl_c_ignored():
    """SIGINT ignored meanwhile, where this thread can set it (the main thread); a spawned process keeps an
    ignored signal ignored, until its ``_serve`` has set up its own handling."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@register_executor("processes")
class ProcessesExecutor(Executor):
    @dataclass(frozen=True)
    class Options(Executor.Options):
        workers: Optional[int] = None  # worker processes (None: the usable cores divided by the threads)

        def __post_init__(self):
            super().__post_init__()
            if self.workers is not None and self.workers < 1:
                raise ValueError(f"--workers: expected a positive number, got {self.workers}")

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument(
            "--workers",
            type=int,
            dest="workers",
            help="worker processes building at once (default: the usable cores divided by --threads)",
        )

    def __init__(self, options, log):
        super().__init__(options, log)
        self._workers: set[_Worker] = set()  # every worker alive, idle or not: close() stops them all
        self._idle: list[_Worker] = []
        self._unsent: list[tuple[str, Outcome]] = []  # artifacts that could not be sent to a worker
        self._closing = False

    def threads(self) -> int:
        return self.options.threads or 1

    def worker_count(self) -> int:
        return self.options.workers or max(1, usable_cores() // self.threads())

    def start(self, env: BuildEnv, data: dict) -> None:
        from bench.pipeline.executors.remote import RemoteTasks

        self._tasks = RemoteTasks(env, self.log)
        # spawned, not forked: a fork would copy the driver's torch thread pools and locks mid-use
        self._context = multiprocessing.get_context("spawn")
        for _ in range(self.worker_count()):
            self._idle.append(self._new_worker())
        self.log(
            f"processes: {len(self._idle)} worker(s) of {self.threads()} thread(s) each, "
            f"on {usable_cores()} usable core(s)"
        )

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._context, self._tasks.env, self.threads())
        self._workers.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        """Kills ``worker`` and, unless the executor is closing, starts a fresh one in its place."""
        worker.stop(kill=True)
        self._workers.discard(worker)
        if not self._closing:
            self._idle.append(self._new_worker())

    def has_room(self, artifact: Artifact) -> bool:
        return bool(self._idle)

    def submit(self, artifact: Artifact, inputs: dict[str, Outcome]) -> None:
        from bench.pipeline.build import Outcome

        worker = self._idle.pop()
        try:
            try:
                worker.connection.send((artifact, inputs))
            except OSError:  # it died while idle: a fresh one takes the artifact
                self._retire(worker)
                worker = self._idle.pop()
                worker.connection.send((artifact, inputs))
        except Exception as e:  # what cannot be pickled, or a fresh worker gone at once: nothing was sent
            self._idle.append(worker)
            self._unsent.append((artifact.key, Outcome("error", f"could not send it to a worker: {e}")))
            return
        self._tasks.started(worker, artifact)

    def wait(self, timeout: Optional[float]) -> list[tuple[str, Outcome]]:
        tasks = self._tasks
        finished, self._unsent = self._unsent, []
        if finished or not tasks.running:
            return finished
        # a worker's pipe, and its process's sentinel: a worker killed while processes it forked (DataLoader
        # workers) still hold its end of the pipe shows as dead before its pipe closes
        handles = {}
        for worker in tasks.running:
            handles[worker.connection] = worker
            handles[worker.process.sentinel] = worker
        woken = multiprocessing.connection.wait(list(handles), timeout=tasks.wait_at_most(timeout))
        ready = list(dict.fromkeys(handles[handle] for handle in woken))
        return tasks.collect(ready, tasks.late(set(ready)), self._retire, self._result)

    def _result(self, worker: _Worker) -> Outcome:
        """The outcome a worker sent, or, when it died instead, why; a fresh worker takes a dead one's place."""
        from bench.pipeline.build import Outcome

        if worker.answered():
            try:
                outcome = worker.connection.recv()
                self._idle.append(worker)
                return outcome
            except (EOFError, OSError):
                pass
        outcome = Outcome("error", f"{worker.how_it_died()}; a rerun builds it again")
        self._retire(worker)
        return outcome

    def close(self) -> None:
        self._closing = True
        if hasattr(self, "_tasks"):
            self._tasks.close(self._retire)
        for worker in self._idle:
            worker.ask_to_stop()  # all at once: they exit side by side, not one after the other
        for worker in list(self._workers):
            worker.stop(kill=worker not in self._idle)
        self._workers.clear()
        self._idle = []
