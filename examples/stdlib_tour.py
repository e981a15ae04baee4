"""A short tour of the standard library inside the sandbox: json, re,
hashlib, an in-memory sqlite3 database and a few threads."""
import hashlib
import json
import re
import sqlite3
import threading

report = {}

# json: a round trip.
doc = {"name": "pyward", "tags": ["sandbox", "python"], "n": 3}
report["json_round_trip"] = json.loads(json.dumps(doc)) == doc

# re: find the words with a double letter.
text = "the sandbox keeps all the bees in the hollow tree"
report["re_double_letters"] = [m.group(0) for m in re.finditer(r"\b\w*(\w)\1\w*\b", text)]

# hashlib: a digest anyone can check with sha256sum.
report["sha256_of_pyward"] = hashlib.sha256(b"pyward").hexdigest()[:16]

# sqlite3: an in-memory database, nothing touches the disk.
db = sqlite3.connect(":memory:")
db.execute("create table runs (verdict text, ms integer)")
db.executemany("insert into runs values (?, ?)", [("ok", 12), ("ok", 9), ("timeout", 2000)])
report["sqlite_ok_avg_ms"] = db.execute("select avg(ms) from runs where verdict = 'ok'").fetchone()[0]
db.close()

# threads: four workers, one shared counter behind a lock.
counter = 0
lock = threading.Lock()


def work(n):
    global counter
    for _ in range(n):
        with lock:
            counter += 1


workers = [threading.Thread(target=work, args=(1000,)) for _ in range(4)]
for w in workers:
    w.start()
for w in workers:
    w.join()
report["threads_counter"] = counter

for key, value in report.items():
    print(f"{key}: {value}")
