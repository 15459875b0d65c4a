"""One case in one spawned process, talking over a pipe: an OOM, a segfault, a SIGKILL or a hang ends only
that case."""

from __future__ import annotations

import multiprocessing
import signal

from ovi_bench.job import Job
from ovi_bench.launchers.base import Failure, process_rss
from ovi_bench.protocol import Message, Result, decode
from ovi_bench.worker import worker_main


class SpawnLauncher:
    def __init__(self, job: Job) -> None:
        context = multiprocessing.get_context("spawn")
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(target=worker_main, args=(job.to_dict(), sender), daemon=True)
        self.process.start()
        sender.close()

    def poll(self, timeout: float) -> bool:
        return self.receiver.poll(timeout)

    def recv(self) -> Message:
        return decode(self.receiver.recv())

    def rss(self) -> int | None:
        return process_rss([self.process.pid or 0])

    def stop(self, result: Result | None) -> Failure | None:
        """Wait for the worker (kill it when it gave no result); without a result, what its exit says."""
        if result is None:
            self.process.kill()
        self.process.join(timeout=30)
        self.receiver.close()
        if result is not None:
            return None
        code = self.process.exitcode
        if code is not None and code < 0:
            return Failure("crash", f"worker died from signal {signal.Signals(-code).name}")
        return Failure("crash", f"worker exited with code {code} without a result")
