"""One case on `job.nproc` ranks started by PyTorch's launcher (`python -m torch.distributed.run
--standalone`, NCCL_NVLS_ENABLE=0). Every rank runs `ovi_bench.worker` and writes its messages as JSON lines
to `rank<r>.jsonl` in a scratch directory. The parent follows rank 0's file as it follows the pipe of a
spawned worker; when rank 0 leaves no result, the other ranks' files and the launcher's log say which rank
failed, how, and in which stage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import psutil

from ovi_bench.job import Job
from ovi_bench.launchers.base import Failure, process_rss
from ovi_bench.protocol import Message, Result, StageEnd, StageStart, decode_line

# torchrun's summary
RANK_EXIT = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*exitcode\s*:\s*(-?\d+)")
ENDED_WELL = ("ok", "skipped", "unsupported")


class TorchrunLauncher:
    def __init__(self, job: Job) -> None:
        self.nproc = job.nproc
        self.dir = Path(tempfile.mkdtemp(prefix="ovi-bench-ranks-"))
        (self.dir / "job.json").write_text(json.dumps(job.to_dict()), encoding="utf-8")
        self.log = open(self.dir / "torchrun.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed in stop
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(self.nproc),
                   "--standalone", "-m", "ovi_bench.worker", str(self.dir)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env={**os.environ, "NCCL_NVLS_ENABLE": "0"})
        self.offset = 0
        self.pending: deque[Message] = deque()

    def _read(self) -> None:
        path = self.dir / "rank0.jsonl"
        if not path.exists():
            return
        with open(path, "rb") as messages:
            messages.seek(self.offset)
            data = messages.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += end
        self.pending.extend(decode_line(line) for line in data[:end].splitlines())

    def poll(self, timeout: float) -> bool:
        if not self.pending:
            self._read()
        if self.pending:
            return True
        if self.process.poll() is not None:
            self._read()  # what rank 0 wrote before the launcher ended; else recv() says EOF
            return True
        time.sleep(timeout)
        return False

    def recv(self) -> Message:
        if not self.pending:
            raise EOFError("torchrun ended")
        return self.pending.popleft()

    def rss(self) -> int | None:
        try:
            ranks = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return None
        return process_rss([p.pid for p in ranks])

    def stop(self, result: Result | None) -> Failure | None:
        """Wait for the launcher (kill every rank when rank 0 gave no result); the failure that explains
        the case when rank 0's result did not end well."""
        if result is None:
            _signal_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()
        try:
            return None if result is not None and result.status in ENDED_WELL else self._failure(result)
        finally:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _failure(self, result: Result | None) -> Failure | None:
        """The first cause among the ranks: one killed by a signal (torchrun's own SIGTERM to the survivors
        aside), else the earliest failed result (a peer's death reaches the others as a collective error)."""
        ranks = [_read_rank(self.dir / f"rank{r}.jsonl") for r in range(self.nproc)]
        self.log.seek(0)
        log = self.log.read()
        exits = {int(rank): int(code) for rank, code in RANK_EXIT.findall(log)}
        killed = sorted(r for r, code in exits.items() if code < 0 and -code != signal.SIGTERM
                        and r < self.nproc)
        if killed:
            rank = killed[0]
            return Failure("crash", f"rank {rank} died from signal {signal.Signals(-exits[rank]).name} "
                                    "without a result", ranks[rank][0])
        failed = sorted((r.at, rank, r) for rank, (_, r) in enumerate(ranks)
                        if r is not None and r.status not in ENDED_WELL)
        if failed:
            _, rank, first = failed[0]
            return None if rank == 0 else Failure(first.status, f"rank {rank}: {first.error}", first.stage)
        if result is not None:
            return None
        tail = " | ".join(log.strip().splitlines()[-3:])
        return Failure("crash",
                       f"torchrun exited with code {self.process.returncode} without a result: {tail}",
                       ranks[0][0])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the launcher and every rank (they share its session's process group)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _read_rank(path: Path) -> tuple[str | None, Result | None]:
    """A rank's last open stage and its result, from its messages file."""
    stages: list[str] = []
    result = None
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                message = decode_line(line)
            except json.JSONDecodeError:  # the last line of a killed rank may be cut short
                continue
            if isinstance(message, StageStart):
                stages.append(message.name)
            elif isinstance(message, StageEnd) and stages and stages[-1] == message.record.name:
                stages.pop()
            elif isinstance(message, Result):
                result = message
    return (stages[-1] if stages else None), result
