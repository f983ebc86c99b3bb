"""A call for test_sweep's worker processes, in a module light enough to import in each of them."""

import os
import signal


def square_or_die(n: int) -> int:
    if n == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
    print(f"squaring {n}")
    return n * n
