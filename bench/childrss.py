"""Run a command and write its wall time, CPU time and peak RSS: `python -I -S childrss.py OUT CMD...`.

A child's `ru_maxrss` also counts the memory of the process that forked it (Linux records the old
address space's high-water mark at exec), so a command started straight from the benchmark process would
never show less than the benchmark's own RSS. This script, a bare interpreter with no imports, is the
process that forks instead: its own few MB are the floor. Standard library only, run by path.
"""

import os
import sys
import time


def main() -> int:
    out, cmd = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    with open(out, "w") as f:
        cpu = usage.ru_utime + usage.ru_stime
        f.write(f"{seconds} {cpu} {usage.ru_maxrss * 1024}\n")  # ru_maxrss is in KiB on Linux
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
