"""Workload the python-standard allowlist was derived from (strace) and is tested with.

Everything in strict.py plus subprocess and multiprocessing.
"""

import multiprocessing
import os
import runpy
import subprocess
import sys


def square(x):
    return x * x


if __name__ == "__main__":
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "strict.py"))
    out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42", out
    p = subprocess.Popen(["/bin/sh", "-c", "read x; echo $x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.communicate(b"hi\n")[0] == b"hi\n"
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert os.waitpid(pid, 0)[1] >> 8 == 3
    for method in ("fork", "spawn", "forkserver"):
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(2) as pool:
            assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        q = ctx.Queue()
        pr = ctx.Process(target=q.put, args=(7,))
        pr.start()
        assert q.get() == 7
        pr.join()
    print("ok standard")
