"""Run a multi-process launcher (torchrun, accelerate launch) from a test so that nothing outlives it.

torch elastic starts each rank in a session of its own (`start_new_session=True`), so killing the
launcher, or its process group, leaves the ranks running: a rank hung in its teardown was seen alive
an hour after its test had failed. Every process started here carries a unique token in its
environment (inherited by the ranks and anything they start); on a timeout the native and Python
stacks of each of them are collected (gdb, where installed) for the failure message, then every
process with the token is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

TOKEN_VAR = "VITPOSE_TEST_LAUNCH_TOKEN"


@dataclass
class LaunchResult:
    returncode: int | None  # None: timed out (everything was killed)
    stdout: str
    stderr: str
    stacks: str  # gdb stacks of the processes alive at the timeout ("" when it ended in time)
    leftovers: list[int]  # pids that carried the token after the launcher ended (then killed)


def processes_with_token(token: str) -> list[int]:
    """Pids of the live processes whose environment holds `TOKEN_VAR=token` (Linux /proc)."""
    needle = f"{TOKEN_VAR}={token}".encode()
    pids = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _stacks(pids: list[int]) -> str:
    gdb = shutil.which("gdb")
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:300]
        except OSError:
            continue
        out.append(f"--- pid {pid}: {cmd}")
        if gdb is None:
            out.append("(gdb not installed: no native stack)")
            continue
        try:
            proc = subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt 25"],
                                  capture_output=True, text=True, timeout=60)
            out.append("\n".join(line for line in proc.stdout.splitlines() if line.startswith(("#", "Thread"))))
        except (OSError, subprocess.TimeoutExpired) as err:
            out.append(f"(gdb failed: {err})")
    return "\n".join(out)


def kill_all(token: str, rounds: int = 5) -> list[int]:
    """SIGKILL every process with the token (repeated: a dying launcher may still fork)."""
    killed: list[int] = []
    for _ in range(rounds):
        pids = processes_with_token(token)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        time.sleep(0.2)
    return sorted(set(killed))


def run_launcher(cmd: list[str], env: dict[str, str], timeout: float, collect_stacks: bool = True) -> LaunchResult:
    """Run `cmd`; on `timeout` collect stacks and kill the launcher and every process it started.

    Output goes through temporary files (a pipe that fills up would block the ranks)."""
    token = uuid.uuid4().hex
    env = dict(env, **{TOKEN_VAR: token})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True)
        stacks = ""
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
            if collect_stacks:
                stacks = _stacks(processes_with_token(token))
        leftovers = processes_with_token(token)
        kill_all(token)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        out.seek(0)
        err.seek(0)
        return LaunchResult(returncode, out.read(), err.read(), stacks, leftovers)
