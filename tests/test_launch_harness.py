"""The multi-process test harness kills the launcher and every process it started, also those that sit
in sessions of their own (as torch elastic's ranks do)."""

import os
import sys
import time

import pytest

from launch import processes_with_token, run_launcher

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="the harness finds processes through /proc (Linux)")

# a "launcher" that starts a "rank" in a new session, both then hang (the rank ignores SIGTERM/SIGHUP)
HANGING_LAUNCHER = r"""
import os, signal, subprocess, sys, time
rank = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGHUP, signal.SIG_IGN); "
    "open(%r, 'w').write(str(__import__('os').getpid())); time.sleep(600)"], start_new_session=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_a_timeout_kills_the_launcher_and_a_rank_in_its_own_session(tmp_path):
    pid_file = tmp_path / "rank.pid"
    script = HANGING_LAUNCHER % str(pid_file)
    start = time.time()
    result = run_launcher([sys.executable, "-c", script], dict(os.environ), timeout=3, collect_stacks=False)
    assert result.returncode is None  # timed out
    assert time.time() - start < 30
    rank_pid = int(pid_file.read_text())
    assert rank_pid in result.leftovers
    deadline = time.time() + 10
    while _alive(rank_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(rank_pid), "the rank in its own session survived the timeout"


def test_a_run_that_ends_in_time_returns_its_code_and_output():
    result = run_launcher([sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"], dict(os.environ), timeout=60)
    assert (result.returncode, result.stdout.strip(), result.leftovers) == (3, "hello", [])


def test_processes_with_token_finds_only_the_marked_ones():
    assert processes_with_token("no-such-token") == []
