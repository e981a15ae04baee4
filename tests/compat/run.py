#!/usr/bin/python3
"""CPython's regression suite, bare and inside `pyward run`: the compatibility yardstick.

Owns: running each module of Debian's `libpython3.11-testsuite` once bare and
once in the sandbox, parsing unittest's verbose output, the results JSON, the
fast subset's verdict for CI and docs/COMPAT.md. It only calls `pyward run`
as any user would; it never touches policies, allowlists or pyward's code.

Standard library only; run it with Debian's interpreter (/usr/bin/python3),
the same one the native runtime's `host` rootfs runs:

    # the whole suite, bare and sandboxed (results JSON, resumable)
    /usr/bin/python3 tests/compat/run.py run --policy tests/compat/standard-loopback.toml \\
        --out target/compat/standard-loopback.json
    # docs/COMPAT.md from one or more result files
    /usr/bin/python3 tests/compat/run.py report target/compat/*.json
    # the fast subset CI runs: exits 1 on a sandbox-only failure not in expected.toml
    /usr/bin/python3 tests/compat/run.py subset

Each module runs as `python3 -s -c 'from test.libregrtest.main import main; main()'
-v --timeout T MODULE` (pyward runs `python3 -s`), in a fresh temporary cwd when bare, with the same
environment the policy sets in the sandbox (a clean one). Bare runs as the
user running this script; the sandbox runs as the policy's uid.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import fnmatch
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field, asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = "/usr/bin/python3"
# The program both sides run: libregrtest's main, which parses sys.argv[1:]
# exactly as `python3 -m test` does.
REGRTEST = "from test.libregrtest.main import main; main()"
# The environment the shipped policies set in the sandbox; the bare run gets
# the same (HOME is the fresh cwd there) so that only the sandbox differs.
CLEAN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
# How much of a failure's traceback the results keep.
TRACEBACK_LINES = 40
OUTPUT_TAIL_LINES = 40

PASSED, FAILED, SKIPPED, TIMEOUT = "passed", "failed", "skipped", "timeout"


# --------------------------------------------------------------------------
# Parsing unittest's and libregrtest's verbose output

# The blocks after the run: a line of '=', "FAIL: name (id)", a line of '-',
# then the traceback up to the next separator.
BLOCK_HEAD = re.compile(r"^(?P<kind>FAIL|ERROR|UNEXPECTED SUCCESS): (?P<title>.*)$")
SEP_EQ = "=" * 70
SEP_DASH = "-" * 70
# "Ran 12 tests in 0.3s" then "OK", "OK (skipped=3)" or "FAILED (failures=1, errors=2)".
RAN = re.compile(r"^Ran (\d+) tests? in ", re.M)
SUMMARY = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$", re.M)
TESTS_RESULT = re.compile(r"^(?:== )?Tests result: (.*?)(?: ==)?$", re.M)
MODULE_SKIPPED = re.compile(r"^(test_\S+) skipped(?: -- (.*))?$", re.M)
# faulthandler's dump when libregrtest's --timeout fires; it follows the
# verbose line of the test that hung, on the same line.
TIMEOUT_DUMP = re.compile(r"Timeout \(\d+:\d\d:\d\d\)!$", re.M)
SKIPPED_TEST = re.compile(r"^(\S+) \(([^)]*)\)(?: \(.*\))? \.\.\. skipped (.*)$", re.M)
VERBOSE_BAD = re.compile(r"^(\S+) \(([^)]*)\)(?: \(.*\))? \.\.\. (FAIL|ERROR)$", re.M)
UNEXPECTED = re.compile(r"^(\S+) \(([^)]*)\)(?: \(.*\))? \.\.\. unexpected success$", re.M)


def test_id(title: str) -> str:
    """The stable id of a failing test from its block title.

    "test_x (test.test_os.Foo.test_x)" -> "test.test_os.Foo.test_x";
    "test_x (test.test_os.Foo.test_x) (sub=1)" -> the same (subtests fold);
    "setUpClass (test.test_os.Foo)" -> "test.test_os.Foo.setUpClass".
    """
    m = re.match(r"^(\S+) \(([^)]*)\)", title)
    if not m:
        return title.strip()
    name, ident = m.group(1), m.group(2)
    if ident.endswith("." + name) or ident == name:
        return ident
    return f"{ident}.{name}"


def parse_failures(text: str) -> list[dict]:
    """Every FAIL/ERROR block after the run: id, kind, the traceback's first lines."""
    lines = text.splitlines()
    out: dict[str, dict] = {}
    i = 0
    while i < len(lines):
        if lines[i] == SEP_EQ and i + 2 < len(lines):
            head = BLOCK_HEAD.match(lines[i + 1])
            # The test's docstring, when it has one, sits between the title and the dashes.
            dash = next((k for k in range(i + 2, min(i + 6, len(lines))) if lines[k] == SEP_DASH), None)
            if head and dash is not None:
                j = dash + 1
                body = []
                while j < len(lines) and lines[j] not in (SEP_EQ, SEP_DASH):
                    body.append(lines[j])
                    j += 1
                while body and not body[-1].strip():
                    body.pop()
                ident = test_id(head.group("title"))
                kind = head.group("kind")
                entry = out.setdefault(ident, {"id": ident, "kind": kind, "traceback": [], "error": ""})
                if not entry["traceback"]:
                    entry["traceback"] = body[:TRACEBACK_LINES]
                    entry["error"] = last_exception_line(body)
                i = j
                continue
        i += 1
    # A run killed before unittest's summary prints no blocks: take the verdicts of the verbose lines.
    for m in VERBOSE_BAD.finditer(text):
        ident = test_id(f"{m.group(1)} ({m.group(2)})")
        out.setdefault(ident, {"id": ident, "kind": m.group(3), "traceback": [],
                               "error": f"{m.group(3)} (no traceback: the run ended before unittest printed it)"})
    for m in UNEXPECTED.finditer(text):
        ident = test_id(f"{m.group(1)} ({m.group(2)})")
        out.setdefault(ident, {"id": ident, "kind": "UNEXPECTED SUCCESS", "traceback": [], "error": "unexpected success"})
    return sorted(out.values(), key=lambda e: e["id"])


def parse_skips(text: str) -> dict[str, str]:
    """Skipped tests: id -> the reason unittest printed."""
    return {test_id(f"{m.group(1)} ({m.group(2)})"): m.group(3).strip("'\"")[:200]
            for m in SKIPPED_TEST.finditer(text)}


def last_exception_line(body: list[str]) -> str:
    """The line naming the exception (the last non-indented one), e.g. 'PermissionError: [Errno 1] ...'."""
    for line in reversed(body):
        if line and not line.startswith(" ") and not line.startswith("Traceback"):
            return line[:400]
    return body[-1].strip()[:400] if body else ""


def classify(text: str, exit_code: int | None, timed_out: bool, module: str) -> tuple[str, str]:
    """(status, detail) from libregrtest's output and the way the run ended."""
    result = TESTS_RESULT.findall(text)
    verdict = result[-1] if result else ""
    if timed_out or TIMEOUT_DUMP.search(text):
        return TIMEOUT, "timed out" + (" (libregrtest's --timeout dumped the stacks)" if TIMEOUT_DUMP.search(text) else "")
    skipped = [m for m in MODULE_SKIPPED.finditer(text) if m.group(1) == module]
    if "NO TEST RUN" in verdict or "NO TESTS RAN" in verdict:
        return SKIPPED, "no test ran"
    if verdict.startswith("SUCCESS") and exit_code == 0:
        if skipped:
            return SKIPPED, (skipped[-1].group(2) or "skipped").strip()
        if not sum(int(n) for n in RAN.findall(text)):
            # setUpModule raised SkipTest: "Ran 0 tests ... OK (skipped=1)".
            reasons = set(parse_skips(text).values())
            return SKIPPED, "; ".join(sorted(reasons)) or "no test ran"
        return PASSED, ""
    if not verdict:
        return FAILED, f"ended without a result (exit code {exit_code})"
    return FAILED, verdict


def counts(text: str) -> dict:
    ran = RAN.findall(text)
    summary = SUMMARY.findall(text)
    out = {"ran": sum(int(n) for n in ran)}
    if summary:
        out["summary"] = " ".join(s[0] + (f" ({s[1]})" if s[1] else "") for s in summary)
    return out


# --------------------------------------------------------------------------
# Running one module


@dataclass
class Run:
    module: str
    side: str  # "bare" or "sandbox"
    status: str
    detail: str
    seconds: float
    exit_code: int | None
    tests_ran: int = 0
    summary: str = ""
    failures: list = field(default_factory=list)
    skips: dict = field(default_factory=dict)  # skipped test id -> reason
    verdict: str | None = None  # pyward's verdict (sandbox only)
    message: str | None = None  # pyward's message (sandbox only)
    output_tail: list = field(default_factory=list)


# Extra libregrtest arguments for every module (--regrtest-args), e.g. `-i PATTERN`
# to leave out the one test that kills a module and see the rest.
EXTRA_ARGS: list[str] = []
# Per module, from a subset file's line "MODULE ARGS...".
MODULE_ARGS: dict[str, list[str]] = {}


def regrtest_args(module: str, timeout: int) -> list[str]:
    # libregrtest's own per-test timeout fires a little before ours, so that a
    # hang leaves a stack dump naming the test that hung.
    return ["-v", "--timeout", str(max(timeout - 15, 10)), *EXTRA_ARGS, *MODULE_ARGS.get(module, []), module]


def finish(module, side, text, exit_code, timed_out, seconds, verdict=None, message=None) -> Run:
    status, detail = classify(text, exit_code, timed_out, module)
    if verdict is not None and verdict not in ("ok", "runtime_error") and status != TIMEOUT:
        if verdict == "timeout":
            status, detail = TIMEOUT, "pyward verdict timeout"
        else:
            status, detail = FAILED, f"pyward verdict {verdict}" + (f": {message}" if message else "")
    c = counts(text)
    return Run(
        module=module, side=side, status=status, detail=detail, seconds=round(seconds, 1),
        exit_code=exit_code, tests_ran=c["ran"], summary=c.get("summary", ""),
        failures=parse_failures(text) if status != PASSED else [],
        skips=parse_skips(text),
        verdict=verdict, message=message,
        output_tail=text.splitlines()[-OUTPUT_TAIL_LINES:] if status in (FAILED, TIMEOUT) else [],
    )


def run_bare(module: str, timeout: int) -> Run:
    cwd = tempfile.mkdtemp(prefix=f"compat-{module}-")
    env = dict(CLEAN_ENV, HOME=cwd, TMPDIR=cwd)
    start = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(
            [PYTHON, "-s", "-c", REGRTEST, *regrtest_args(module, timeout)],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc)
            out, _ = proc.communicate()
        return finish(module, "bare", out.decode("utf-8", "replace"), proc.returncode, timed_out,
                      time.monotonic() - start)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the run and every process it started (its own session)."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass


def run_sandbox(module: str, timeout: int, pyward: str, policy: str, runtime: str, image: str | None) -> Run:
    cmd = [pyward, "run", "--json", "--policy", policy, "--runtime", runtime,
           "--wall-time", f"{timeout}s"]
    if image:
        cmd += ["--image", image]
    cmd += ["-c", REGRTEST, "--", *regrtest_args(module, timeout)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        # pyward enforces the wall time itself; this is only a guard against pyward hanging.
        out, err = proc.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        return finish(module, "sandbox", "", None, True, time.monotonic() - start,
                      verdict="pyward_hung", message="pyward did not end 60s after the wall time")
    seconds = time.monotonic() - start
    try:
        outcome = json.loads(out)
    except json.JSONDecodeError:
        return finish(module, "sandbox", err.decode("utf-8", "replace"), proc.returncode, False, seconds,
                      verdict="no_json", message=err.decode("utf-8", "replace")[-400:])
    text = decode_stream(outcome, "stdout") + decode_stream(outcome, "stderr")
    return finish(module, "sandbox", text, outcome.get("exit_code"), outcome.get("verdict") == "timeout",
                  seconds, verdict=outcome.get("verdict"), message=outcome.get("message"))


def decode_stream(outcome: dict, name: str) -> str:
    data = outcome.get(name) or ""
    if outcome.get(f"{name}_encoding") == "base64":
        import base64
        return base64.b64decode(data).decode("utf-8", "replace")
    return data


# --------------------------------------------------------------------------
# The results file


def list_modules() -> list[str]:
    out = subprocess.run([PYTHON, "-m", "test", "--list-tests"], check=True, capture_output=True, text=True,
                         env=CLEAN_ENV, cwd=tempfile.gettempdir()).stdout
    return [line.strip() for line in out.splitlines() if line.strip().startswith("test_")]


def machine() -> dict:
    def read(path):
        try:
            return Path(path).read_text()
        except OSError:
            return ""
    mem = re.search(r"MemTotal:\s+(\d+) kB", read("/proc/meminfo"))
    model = re.search(r"model name\s*:\s*(.*)", read("/proc/cpuinfo"))
    return {
        "kernel": platform.release(),
        "os": re.search(r'PRETTY_NAME="(.*)"', read("/etc/os-release")).group(1) if read("/etc/os-release") else "",
        "cpus": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else "",
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "python": subprocess.run([PYTHON, "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True).stdout.strip(),
        "arch": platform.machine(),
    }


def pyward_commit() -> str:
    """The commit the pyward binary is built from, if it was built from this tree."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
    paths = ["src", "policies", "build.rs", "Cargo.toml", "Cargo.lock"]
    # The last commit that changed what the binary is built from (commits that
    # only touch tests/ or docs/ do not change pyward).
    commit = git("log", "-1", "--format=%h %s", "--", *paths)
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    return commit + (" (+ uncommitted changes)" if dirty else "")


class Results:
    """A results JSON written after every finished run, so a long run can stop and resume."""

    def __init__(self, path: Path, meta: dict, resume: bool):
        self.path = path
        self.lock = threading.Lock()
        self.data = {"meta": meta, "modules": {}}
        if resume and path.exists():
            old = json.loads(path.read_text())
            self.data["modules"] = old.get("modules", {})
            self.data["meta"]["segments"] = old.get("meta", {}).get("segments", [])
            self.data["meta"]["started"] = old.get("meta", {}).get("started", meta["started"])

    def has(self, module: str, side: str) -> bool:
        return side in self.data["modules"].get(module, {})

    def add(self, run: Run) -> None:
        with self.lock:
            self.data["modules"].setdefault(run.module, {})[run.side] = asdict(run)
            self.save()

    def save(self) -> None:
        self.data["meta"]["updated"] = now()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.replace(self.path)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def execute(args, modules: list[str], results: Results, sides: list[str]) -> float:
    """Run every (module, side) not yet in results, `args.jobs` at a time; the wall time it took."""
    pyward = str(Path(args.pyward).resolve())
    policy = str(Path(args.policy).resolve()) if Path(args.policy).exists() else args.policy
    tasks = [(m, s) for m in modules for s in sides if not results.has(m, s)]
    start = time.monotonic()
    done = 0

    def one(task):
        module, side = task
        if side == "bare":
            return run_bare(module, args.timeout)
        return run_sandbox(module, args.timeout, pyward, policy, args.runtime, args.image)

    # Wall time per invocation, kept as it goes: a run stopped and resumed
    # (--resume) still adds up to the time the whole pass took.
    segments = results.data["meta"].setdefault("segments", [])
    segments.append({"sides": "+".join(sides), "tasks": len(tasks), "wall_s": 0.0})
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(one, t): t for t in tasks}
        for fut in concurrent.futures.as_completed(futures):
            run = fut.result()
            segments[-1]["wall_s"] = round(time.monotonic() - start, 1)
            results.add(run)
            done += 1
            note = f" {run.detail}" if run.status != PASSED else ""
            print(f"[{done}/{len(tasks)} {time.monotonic() - start:6.0f}s] {run.side:7} {run.module:40} "
                  f"{run.status:7} {run.seconds:6.1f}s{note[:100]}", flush=True)
    return time.monotonic() - start


# --------------------------------------------------------------------------
# Comparing the two sides


def normalize(modules: dict) -> dict:
    """Results written by an earlier version of this script, classified as the current one does."""
    for sides in modules.values():
        for key in ("bare", "sandbox"):
            run = sides.get(key)
            if not run:
                continue
            if run["status"] == PASSED and run.get("tests_ran") == 0:
                run["status"], run["detail"] = SKIPPED, "no test ran (setUpModule skipped)"
            if run["status"] == FAILED and any(TIMEOUT_DUMP.search(l) for l in run.get("output_tail", [])):
                run["status"], run["detail"] = TIMEOUT, "timed out (libregrtest's --timeout dumped the stacks)"
    return modules


def failing_ids(run: dict) -> set[str]:
    return {f["id"] for f in run.get("failures", [])}


def differences(modules: dict) -> dict[str, dict]:
    """Modules that pass bare (or are partly skipped) but do not pass in the sandbox.

    A module counts as differing when the sandbox's status is worse than the
    bare one (passed -> failed/timeout/skipped), or when both fail but the
    sandbox fails tests that bare does not.
    """
    out = {}
    for name, sides in sorted(modules.items()):
        bare, sand = sides.get("bare"), sides.get("sandbox")
        if not bare or not sand:
            continue
        if bare["status"] == PASSED and sand["status"] != PASSED:
            new = sorted(failing_ids(sand))
        elif bare["status"] == FAILED and sand["status"] in (FAILED, TIMEOUT):
            new = sorted(failing_ids(sand) - failing_ids(bare))
            if not new and sand["status"] == FAILED:
                continue
        else:
            continue
        out[name] = {"bare": bare, "sandbox": sand, "new_failures": new}
    return out


def load_expected(path: Path, label: str, fixed: bool = True) -> dict:
    """expected.toml's causes for this policy: {"modules": {name: cause}, "tests": {id or prefix: cause}}.

    The file holds, per policy file stem, a list of causes, each with a kind
    ("intent": the policy means it; "defect": to fix; "limit": a limit of the
    compat policy; "environment": this machine; "fixed": a defect fixed since
    the results were recorded, which the report still names for those results
    and the subset, run against today's pyward, no longer tolerates: `fixed=False`),
    the reason with the evidence,
    the fix where there is one, and the modules or tests (ids, or class or
    module prefixes of ids, or fnmatch patterns with `*`) it costs, or texts its
    failures' error lines contain. `[inherit]` lets a policy take another's
    causes too (strict has every difference standard has).
    """
    out = {"modules": {}, "tests": {}, "errors": [], "frames": []}
    if not path.exists():
        return out
    data = tomllib.loads(path.read_text())
    labels = [label]
    while data.get("inherit", {}).get(labels[-1]):
        labels.append(data["inherit"][labels[-1]])
    for name in reversed(labels):
        for cause in data.get(name, []):
            if cause.get("kind") == "fixed" and not fixed:
                continue
            for module in cause.get("modules", []):
                out["modules"][module] = cause
            for ident in cause.get("tests", []):
                out["tests"][ident] = cause
            for text in cause.get("errors", []):
                out["errors"].append((text, cause))
            if cause.get("frames"):
                out["frames"].append((cause["frames"], cause.get("frame_errors", []), cause))
    return out


def explain(expected: dict, module: str, ident: str | None = None, error: str = "",
            frames: list[str] = ()) -> dict | None:
    """The expected.toml cause covering a test: by its id (or a class or module
    prefix of it, or a pattern), by a text its error line contains, by a frame of
    its traceback together with its error (`frames`, `frame_errors`), or by its module."""
    if ident:
        parts = ident.split(".")
        for n in range(len(parts), 1, -1):
            entry = expected["tests"].get(".".join(parts[:n]))
            if entry:
                return entry
        for pattern, entry in expected["tests"].items():
            if "*" in pattern and fnmatch.fnmatchcase(ident, pattern):
                return entry
        for text, entry in expected["errors"]:
            if error and text in error:
                return entry
        for wanted, errors, entry in expected["frames"]:
            if any(w in f for w in wanted for f in frames) and (not errors or any(e in error for e in errors)):
                return entry
        entry = expected["modules"].get(module)
        return entry if entry and entry.get("covers_tests") else None
    return expected["modules"].get(module)


def label_of(policy: str, runtime: str) -> str:
    return f"{runtime}-{Path(policy).stem}"


# --------------------------------------------------------------------------
# Commands


def cmd_run(args) -> int:
    EXTRA_ARGS[:] = args.regrtest_args.split()
    modules = read_subset(args.subset) if args.subset else list_modules()
    if args.modules:
        modules = [m for m in modules if m in args.modules.split(",")] or args.modules.split(",")
    out = Path(args.out or REPO / "target" / "compat" / f"{label_of(args.policy, args.runtime)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "started": now(), "label": label_of(args.policy, args.runtime), "policy": args.policy,
        "runtime": args.runtime, "image": args.image or "host", "timeout_s": args.timeout,
        "jobs": args.jobs, "pyward_commit": pyward_commit(), "machine": machine(),
        "modules_listed": len(modules), "subset": args.subset, "regrtest_args": EXTRA_ARGS,
        "module_args": MODULE_ARGS,
    }
    results = Results(out, meta, args.resume)
    if args.bare_from:
        # The bare side does not depend on the policy: take it from another run of the same machine.
        other = json.loads(Path(args.bare_from).read_text())
        for module, sides_ in other["modules"].items():
            if "bare" in sides_ and module in modules:
                results.data["modules"].setdefault(module, {})["bare"] = sides_["bare"]
        results.data["meta"]["bare_from"] = {"file": rel(str(Path(args.bare_from).resolve())),
                                             "label": other["meta"].get("label"),
                                             "wall_s": other["meta"].get("wall_s")}
    sides = args.sides.split(",")
    wall = execute(args, modules, results, sides)
    results.data["meta"]["finished"] = now()
    results.data["meta"].setdefault("wall_s", {})["+".join(sides)] = round(
        sum(seg["wall_s"] for seg in results.data["meta"]["segments"] if seg["sides"] == "+".join(sides)), 1)
    results.save()
    if args.rerun_differences:
        rerun_differences(args, results)
    print(f"results: {out}")
    return 0


def rerun_differences(args, results: Results) -> None:
    """Run each differing module once more on both sides; keep the reruns beside the first runs.

    A difference that does not repeat is marked flaky in the report.
    """
    diffs = differences(results.data["modules"])
    print(f"rerunning {len(diffs)} differing modules on both sides", flush=True)
    rerun = Results(results.path.with_name(results.path.stem + ".rerun.json"), dict(results.data["meta"]), False)
    execute(args, list(diffs), rerun, ["bare", "sandbox"])
    for module, sides in rerun.data["modules"].items():
        results.data["modules"][module]["rerun"] = sides
    results.save()


def read_subset(path) -> list[str]:
    """The modules a subset file lists, one a line: "MODULE [libregrtest args]  # comment".

    The args (e.g. `-i PATTERN` to leave out a test that kills the module)
    apply on both sides, bare and sandboxed.
    """
    modules = []
    for line in Path(path).read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            modules.append(words[0])
            if words[1:]:
                MODULE_ARGS[words[0]] = words[1:]
    return modules


def cmd_subset(args) -> int:
    """The CI gate: exit 1 when a subset module fails in the sandbox on a test bare passes, unexplained."""
    modules = read_subset(args.subset)
    label = label_of(args.policy, args.runtime)
    out = Path(args.out or REPO / "target" / "compat" / f"subset-{label}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"started": now(), "label": f"subset {label}", "policy": args.policy, "runtime": args.runtime,
            "image": args.image or "host", "timeout_s": args.timeout, "jobs": args.jobs,
            "pyward_commit": pyward_commit(), "machine": machine(), "subset": args.subset}
    meta["module_args"] = MODULE_ARGS
    results = Results(out, meta, False)
    start = time.monotonic()
    execute(args, modules, results, ["bare", "sandbox"])
    expected = load_expected(Path(args.expected), Path(args.policy).stem, fixed=False)
    bad, stale = [], []
    for module in modules:
        sides = results.data["modules"][module]
        bare, sand = sides["bare"], sides["sandbox"]
        if bare["status"] in (TIMEOUT,) or (bare["status"] == SKIPPED):
            continue
        new = sorted(failing_ids(sand) - failing_ids(bare))
        unexplained = [t for t in new if not explain(expected, module, t, error_of(sand, t), frames_of(sand, t))]
        if sand["status"] in (TIMEOUT, FAILED) and not new and bare["status"] == PASSED:
            # Failed without a test block (a crash, a kill, a timeout): only a module entry explains it.
            if not explain(expected, module):
                bad.append((module, sand["status"], [sand["detail"]]))
            continue
        if sand["status"] == SKIPPED and bare["status"] == PASSED and not explain(expected, module):
            bad.append((module, "skipped", [sand["detail"]]))
            continue
        if unexplained:
            bad.append((module, sand["status"], [f"{t}: {error_of(sand, t)}" for t in unexplained]))
        failing_now = failing_ids(sand)
        args_ = MODULE_ARGS.get(module, [])
        ignored = [args_[i + 1] for i, a in enumerate(args_[:-1]) if a in ("-i", "--ignore")]
        for key in expected["tests"]:
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in ignored):
                continue  # not run: left out with -i
            if key.startswith(module_prefix(module)) and not any(
                    t == key or t.startswith(key + ".") or fnmatch.fnmatchcase(t, key) for t in failing_now):
                stale.append(key)
    elapsed = time.monotonic() - start
    results.data["meta"]["finished"] = now()
    results.data["meta"]["wall_s"] = {"bare+sandbox": round(elapsed, 1)}
    results.save()
    for key in stale:
        print(f"note: expected.toml lists {key} under [{Path(args.policy).stem}] but it no longer fails: "
              "remove the entry if the fix has landed")
    if bad:
        print(f"compat subset: FAILED ({label}, {elapsed:.0f}s): sandbox-only failures not in {args.expected}:")
        for module, status, lines in bad:
            print(f"  {module}: {status}")
            for line in lines:
                print(f"    {line}")
        return 1
    print(f"compat subset: ok ({label}, {len(modules)} modules, {elapsed:.0f}s)")
    return 0


def module_prefix(module: str) -> str:
    return f"test.{module}."


def frames_of(run: dict, ident: str) -> list[str]:
    for f in run.get("failures", []):
        if f["id"] == ident:
            return f.get("frames") or [l.strip() for l in f.get("traceback", []) if l.startswith("  File ")]
    return []


def error_of(run: dict, ident: str) -> str:
    for f in run.get("failures", []):
        if f["id"] == ident:
            return f["error"]
    return ""


# --------------------------------------------------------------------------
# docs/COMPAT.md


def cmd_report(args) -> int:
    sections = []
    summary_rows = []
    for path in args.results:
        data = json.loads(Path(path).read_text())
        meta, modules = data["meta"], normalize(data["modules"])
        label = meta["label"]
        expected = load_expected(Path(args.expected), Path(meta["policy"]).stem)
        diffs = differences(modules)
        both = [m for m, s in modules.items() if "bare" in s and "sandbox" in s]
        tally = {side: {s: 0 for s in (PASSED, FAILED, SKIPPED, TIMEOUT)} for side in ("bare", "sandbox")}
        for m in both:
            for side in ("bare", "sandbox"):
                tally[side][modules[m][side]["status"]] += 1
        passed_bare = [m for m in both if modules[m]["bare"]["status"] == PASSED]
        passed_both = [m for m in passed_bare if modules[m]["sandbox"]["status"] == PASSED]
        summary_rows.append(
            f"| {label} | `{rel(meta['policy'])}` | {len(both)} | {len(passed_bare)} | {len(passed_both)} | "
            f"{len(diffs)} | {fmt_walls(meta)} |")
        sections.append(report_section(meta, modules, tally, diffs, expected))
    head = [
        "# Compatibility: CPython's regression suite in the sandbox",
        "",
        "Generated by `tests/compat/run.py report` from the result files of `tests/compat/run.py run`",
        "(do not edit by hand; rerun). Each module of Debian's `libpython3.11-testsuite` runs once bare",
        "and once inside `pyward run`, as `python3 -s -c 'from test.libregrtest.main import main; main()'",
        "-v --timeout T MODULE`, with the same clean environment on both sides. Bare runs as root in a",
        "fresh temporary cwd; the sandbox runs as the policy's uid (65534).",
        "",
        "A module *differs* when it passes bare but not in the sandbox, or when both fail and the",
        "sandbox fails tests bare does not. The cause of each difference comes from",
        "`tests/compat/expected.toml`, where each entry says whether it is the policy's intent or a",
        "defect to fix, and why (found with the test output, `strace -f` of the bare run or a probe",
        "under `pyward run`).",
        "",
        "A difference marked \"a rerun repeated it\" ran a second time on both sides after the pass",
        "(`--rerun-differences`) and failed again in the sandbox; \"did not repeat\" marks a flaky one.",
        "Modules that time out or fail bare are not differences (the sandbox cannot be blamed), and",
        "tests that fail on both sides are not counted either.",
        "",
        "Rerun it:",
        "",
        "```sh",
        "cargo build --release --bin pyward",
        "/usr/bin/python3 tests/compat/run.py run --rerun-differences          # standard, loopback (about 35 min here)",
        "/usr/bin/python3 tests/compat/run.py run --rerun-differences --policy tests/compat/strict-roomy.toml \\",
        "    --sides sandbox --bare-from target/compat/native-standard-loopback.json",
        "/usr/bin/python3 tests/compat/run.py report target/compat/native-*.json target/compat/subset-*.json",
        "/usr/bin/python3 tests/compat/run.py subset --pyward target/debug/pyward   # what CI runs",
        "/usr/bin/python3 tests/compat/run.py syscalls test_os                    # a cause: strace bare vs the allowlist",
        "```",
        "",
        "| run | policy | modules | pass bare | pass bare and sandboxed | differ | wall time of the pass |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *summary_rows,
        "",
    ]
    if args.keep:
        keep_results(args.results, Path(args.keep))
    runtimes = {json.loads(Path(path).read_text())["meta"]["runtime"] for path in args.results}
    if "docker" not in runtimes:
        head += [
            "No Docker run in this report. The Docker runtime runs an image, and pyward's images carry",
            "Debian's python3 without the regression suite (only `test/support` and `libregrtest`",
            "come with libpython3.11-stdlib). `tests/compat/image/python3.11-bookworm-compat` is the",
            "default recipe plus `libpython3.11-testsuite` (which depends only on python3.11 and",
            "net-tools); build it and run the suite in it with",
            "",
            "```sh",
            "pyward image build tests/compat/image/python3.11-bookworm-compat --arch amd64",
            "/usr/bin/python3 tests/compat/run.py run --runtime docker --image python3.11-bookworm-compat \\",
            "    --sides sandbox --bare-from target/compat/native-standard-loopback.json",
            "```",
            "",
        ]
    text = "\n".join(head + sections) + "\n"
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0


def keep_results(paths: list[str], into: Path) -> None:
    """Slim copies of the result files beside the report (statuses, failing ids and their error
    lines, skips; no tracebacks or output), so that docs/COMPAT.md can be regenerated from the repo."""
    into.mkdir(parents=True, exist_ok=True)
    for path in paths:
        data = json.loads(Path(path).read_text())
        for sides in normalize(data["modules"]).values():
            for run in [r for k, r in sides.items() if k != "rerun"] + list(sides.get("rerun", {}).values()):
                run.pop("output_tail", None)
                for failure in run.get("failures", []):
                    tb = failure.pop("traceback", None) or []
                    failure["frames"] = [l.strip()[:120] for l in tb if l.startswith("  File ")]
        (into / Path(path).name).write_text(json.dumps(data, indent=0, sort_keys=True))


def fmt_walls(meta: dict) -> str:
    """The pass's wall time, per set of sides it ran (bare and sandbox interleaved, or one side)."""
    parts = [f"{value / 60:.0f} min ({key.replace('+', ' and ')}, {meta['jobs']} at a time)"
             for key, value in meta.get("wall_s", {}).items()]
    if meta.get("bare_from"):
        parts.append(f"bare side taken from {meta['bare_from']['label']}")
    return "; ".join(parts) or "—"


def fmt_wall(meta: dict, side: str) -> str:
    if side == "bare" and meta.get("bare_from"):
        return f"taken from {meta['bare_from']['label']}"
    walls = meta.get("wall_s", {})
    for key, value in walls.items():
        if side in key.split("+"):
            return f"{value / 60:.0f} min" + (" (both sides interleaved)" if "+" in key else "")
    return "—"


def report_section(meta, modules, tally, diffs, expected) -> str:
    m = meta["machine"]
    lines = [
        f"## {meta['label']}",
        "",
        f"- pyward commit: `{meta['pyward_commit']}`",
        f"- run: {meta['started']} to {meta.get('finished', meta.get('updated'))}",
        f"- machine: {m['os']}, kernel {m['kernel']}, {m['arch']}, {m['cpus']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB; CPython {m['python']}",
        f"- runtime `{meta['runtime']}`, image `{meta['image']}`, policy `{rel(meta['policy'])}`, "
        f"per-module timeout {meta['timeout_s']}s, {meta['jobs']} at a time",
    ]
    if meta.get("module_args") or meta.get("regrtest_args"):
        given = [f"`{m} {' '.join(a)}`" for m, a in meta.get("module_args", {}).items()]
        if meta.get("regrtest_args"):
            given.insert(0, f"every module: `{' '.join(meta['regrtest_args'])}`")
        lines += [f"- libregrtest arguments (both sides): {', '.join(given)}"]
    lines += [
        "",
        "| side | passed | failed | skipped entirely | timed out | sum of the modules' run times |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for side in ("bare", "sandbox"):
        t = tally[side]
        total = sum(s[side]["seconds"] for s in modules.values() if side in s)
        lines.append(f"| {side} | {t[PASSED]} | {t[FAILED]} | {t[SKIPPED]} | {t[TIMEOUT]} | {total / 60:.1f} min |")
    lines += ["", f"### Modules that differ ({len(diffs)})", ""]
    used: dict[str, dict] = {}
    if not diffs:
        lines.append("None.")
    for name, d in diffs.items():
        bare, sand = d["bare"], d["sandbox"]
        rerun = modules[name].get("rerun", {})
        again = ""
        if rerun.get("sandbox"):
            again = (" — a rerun repeated it" if rerun["sandbox"]["status"] != PASSED
                     else " — **did not repeat** on a rerun (flaky)")
            if rerun.get("bare", {}).get("status") != bare["status"]:
                again += f" (rerun: bare {rerun.get('bare', {}).get('status')}, sandbox {rerun['sandbox']['status']})"
        lines.append(f"#### {name}: bare {bare['status']}, sandbox {sand['status']}{again}")
        lines.append("")
        ended = sand["status"] == TIMEOUT or sand.get("verdict") not in (None, "ok", "runtime_error")
        if not d["new_failures"] or ended:
            entry = explain(expected, name)
            lines.append(f"- the whole module: {sand['detail']}"
                         + (f" (pyward verdict `{sand['verdict']}`)" if sand.get("verdict") else "")
                         + f" — {cause_ref(entry, used)}")
        groups: dict[str, list[str]] = {}
        for ident in d["new_failures"]:
            entry = explain(expected, name, ident, error_of(sand, ident), frames_of(sand, ident))
            key = cause_ref(entry, used) if entry else ""
            groups.setdefault(key, []).append(ident)
        for key, idents in groups.items():
            if key:
                first = error_of(sand, idents[0])
                lines.append(f"- {key}: {len(idents)} test(s), e.g. `{short(first)}`")
                lines.append("  " + ", ".join(f"`{short_id(i, name)}`" for i in idents))
            else:
                for ident in idents:
                    lines.append(f"- **unexplained**: `{short_id(ident, name)}`: `{short(error_of(sand, ident))}`")
        lines.append("")
    skips = more_skips(modules)
    recorded = sum(1 for s in modules.values() if "skips" in s.get("bare", {}) and "skips" in s.get("sandbox", {}))
    lines += [f"### Modules that pass on both sides but skip more tests in the sandbox ({len(skips)})", "",
              f"(skipped tests are recorded for {recorded} of {len(modules)} modules in this run; "
              "results written before run.py recorded them have none)", ""]
    for name, new in skips.items():
        lines.append(f"- {name}: " + "; ".join(f"`{short_id(i, name)}` ({short(r)})" for i, r in new.items()))
    if not skips:
        lines.append("None.")
    lines += ["", "### Causes", "",
              "| cause | kind | evidence | fix |", "| --- | --- | --- | --- |"]
    for cid, cause in sorted(used.items()):
        lines.append(f"| {cid} | {cause.get('kind', '?')} | {cell(cause.get('reason', ''))} | "
                     f"{cell(cause.get('fix', '—'))} |")
    lines.append("")
    return "\n".join(lines)


def rel(path: str) -> str:
    return os.path.relpath(path, REPO) if path.startswith(str(REPO) + "/") else path


def cause_ref(entry: dict | None, used: dict) -> str:
    if not entry:
        return "**unexplained**"
    used[entry["id"]] = entry
    return f"**{entry['id']}** ({entry.get('kind', '?')})"


def more_skips(modules: dict) -> dict[str, dict]:
    """Modules passing on both sides whose sandbox run skips tests the bare run ran."""
    out = {}
    for name, sides in sorted(modules.items()):
        bare, sand = sides.get("bare"), sides.get("sandbox")
        if bare and sand and bare["status"] == PASSED and sand["status"] == PASSED:
            new = {i: r for i, r in sand.get("skips", {}).items() if i not in bare.get("skips", {})}
            if new:
                out[name] = new
    return out


def short(text: str, n: int = 160) -> str:
    text = " ".join(text.split()).replace("`", "'")
    return text if len(text) <= n else text[: n - 1] + "…"


def short_id(ident: str, module: str) -> str:
    return ident.removeprefix(f"test.{module}.")


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def cmd_syscalls(args) -> int:
    """Which syscalls a module (or one test) makes bare that the policy's allowlist does not list.

    A lead for finding why a test fails in the sandbox, not a verdict: a
    syscall listed with argument conditions is shown as "conditional" (the
    filter may still deny it for the arguments the test passes), and a denied
    call that the test tolerates does not explain a failure.
    """
    allowlist = load_allowlist(args.allowlist)
    cwd = tempfile.mkdtemp(prefix="compat-strace-")
    trace = Path(cwd) / "trace"
    target = [args.module] + (["-m", args.match] if args.match else [])
    env = dict(CLEAN_ENV, HOME=cwd, TMPDIR=cwd)
    try:
        subprocess.run(["strace", "-f", "-qq", "-o", str(trace), PYTHON, "-s", "-c", REGRTEST, "-v", *target],
                       cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=args.timeout)
        calls: dict[str, dict] = {}
        call = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)\((.*?)(?:\) += (-?\d+|\?)(?: (E[A-Z0-9]+))?.*)?$")
        for line in trace.read_text(errors="replace").splitlines():
            m = call.match(line)
            if not m or "resumed>" in line:
                continue
            name = m.group(1)
            entry = calls.setdefault(name, {"count": 0, "errors": {}, "example": line.split(None, 1)[1][:160]})
            entry["count"] += 1
            if m.group(4):
                entry["errors"][m.group(4)] = entry["errors"].get(m.group(4), 0) + 1
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    for name, entry in sorted(calls.items()):
        rule = allowlist.get(name)
        if rule is None:
            state = "DENIED"
        elif rule == "KILLED":
            state = "KILLED"
        elif isinstance(rule, dict) and rule.get("args"):
            state = "conditional"
        else:
            continue
        errors = ", ".join(f"{e} x{n}" for e, n in entry["errors"].items())
        print(f"{state:11} {name:24} x{entry['count']:<6} {errors:30} {entry['example']}")
    return 0


def load_allowlist(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.exists():
        path = REPO / "policies" / "seccomp" / f"{name_or_path}.toml"
    rules = dict(tomllib.loads(path.read_text())["syscalls"])
    dangerous = tomllib.loads((REPO / "policies" / "seccomp" / "dangerous.toml").read_text())["syscalls"]
    for name in dangerous:
        rules[name] = "KILLED"
    return rules


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--policy", default=str(HERE / "standard-loopback.toml"),
                        help="policy file or name for `pyward run --policy`")
        sp.add_argument("--runtime", default="native", choices=["native", "docker"])
        sp.add_argument("--image", default=None, help="`pyward run --image` (default: the host rootfs)")
        sp.add_argument("--pyward", default=str(REPO / "target" / "release" / "pyward"))
        sp.add_argument("-j", "--jobs", type=int, default=2, help="runs at a time (default 2)")
        sp.add_argument("--timeout", type=int, default=600, help="seconds per module and side (default 600)")
        sp.add_argument("--out", default=None, help="results JSON (default target/compat/LABEL.json)")

    r = sub.add_parser("run", help="run modules bare and sandboxed, write a results JSON")
    common(r)
    r.add_argument("--sides", default="bare,sandbox", help="bare, sandbox or both (default)")
    r.add_argument("--subset", default=None, help="only the modules listed in this file")
    r.add_argument("--modules", default=None, help="only these modules (comma-separated)")
    r.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    r.add_argument("--bare-from", default=None,
                   help="take the bare runs from this results file (same machine) instead of running them")
    r.add_argument("--regrtest-args", default="",
                   help="extra libregrtest arguments, space-separated (e.g. '-i *test_oserror_filename')")
    r.add_argument("--rerun-differences", action="store_true",
                   help="run each differing module once more on both sides to spot flaky ones")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("subset", help="the CI gate: the fast subset, exit 1 on an unexplained sandbox-only failure")
    common(s)
    s.add_argument("--subset", default=str(HERE / "subset.txt"))
    s.add_argument("--expected", default=str(HERE / "expected.toml"))
    s.set_defaults(func=cmd_subset)

    rep = sub.add_parser("report", help="write docs/COMPAT.md from result files")
    rep.add_argument("results", nargs="+")
    rep.add_argument("--expected", default=str(HERE / "expected.toml"))
    rep.add_argument("--output", default=str(REPO / "docs" / "COMPAT.md"))
    rep.add_argument("--keep", default=None, help="also write slim copies of the result files here")
    rep.set_defaults(func=cmd_report)

    sc = sub.add_parser("syscalls", help="strace a module bare and list the syscalls the allowlist lacks")
    sc.add_argument("module")
    sc.add_argument("--match", default=None, help="only tests matching this (libregrtest -m)")
    sc.add_argument("--allowlist", default="python-standard", help="allowlist name or file")
    sc.add_argument("--timeout", type=int, default=600)
    sc.set_defaults(func=cmd_syscalls)

    args = p.parse_args()
    # A shell starts a background job with SIGINT ignored, and an ignored
    # signal stays ignored across exec: bare runs would then fail the tests
    # that expect KeyboardInterrupt. A handler (unlike SIG_IGN) is reset by
    # exec, so the children start with the default, as in the sandbox.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
