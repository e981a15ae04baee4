"""Workload the python-strict allowlist was derived from (strace) and is tested with.

Exercises json, re, hashlib, sqlite3 in memory, threading, stdin, /tmp,
time, random, math, socket import and asyncio; starts no process.
"""

import asyncio
import datetime
import faulthandler
import gzip
import hashlib
import json
import math
import mmap
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import zoneinfo

data = json.loads(json.dumps({"a": [1, 2.5, "x"], "b": None}))
assert data["a"][1] == 2.5
assert re.fullmatch(r"(\w+)@(\w+)\.com", "me@example.com").group(2) == "example"
assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
hashlib.md5(b"x").hexdigest()
hashlib.blake2b(b"x").hexdigest()

db = sqlite3.connect(":memory:")
db.execute("create table t (k integer primary key, v text)")
db.executemany("insert into t (v) values (?)", [(str(i),) for i in range(100)])
assert db.execute("select count(*) from t").fetchone()[0] == 100
db.close()

results = []
lock = threading.Lock()


def work(n):
    with lock:
        results.append(sum(range(n)))


threads = [threading.Thread(target=work, args=(1000,)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(results) == 4

stdin_text = sys.stdin.read()

with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "f.txt")
    with open(path, "w") as f:
        f.write("hello")
    os.rename(path, path + ".bak")
    with open(path + ".bak") as f:
        assert f.read() == "hello"
    os.listdir(d)
    os.stat(d)
    shutil.copy(path + ".bak", path)
    os.chmod(path, 0o600)
    os.utime(path)
    with open(path, "r+b") as f:
        f.truncate(3)
        os.fsync(f.fileno())
        with mmap.mmap(f.fileno(), 3) as m:
            assert m[:] == b"hel"
    with gzip.open(os.path.join(d, "g.gz"), "wb") as f:
        f.write(b"x" * 1000)
    for _ in os.walk(d):
        pass
    os.unlink(path + ".bak")

time.sleep(0.01)
time.monotonic()
time.time()
random.seed(1)
random.random()
os.urandom(16)
assert math.isclose(math.sqrt(2) ** 2, 2.0)
socket.gethostname()
os.cpu_count()
os.getppid()
os.times()
time.process_time()
time.thread_time()
resource.getrusage(resource.RUSAGE_SELF)
resource.getrlimit(resource.RLIMIT_NOFILE)
faulthandler.enable()
signal.signal(signal.SIGUSR1, lambda *_: None)
os.kill(os.getpid(), signal.SIGUSR1)
r, w = os.pipe()
os.write(w, b"x")
assert select.select([r], [], [], 1)[0] == [r]
os.close(os.dup(r))
os.close(r)
os.close(w)
datetime.datetime.now(zoneinfo.ZoneInfo("UTC")).isoformat()
sys.stderr.write("")


async def main():
    await asyncio.sleep(0.001)
    return 42


assert asyncio.run(main()) == 42
print("ok", len(stdin_text))
