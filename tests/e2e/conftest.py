"""Fixtures for Strata's end-to-end tests.

`broker` starts one single-node Strata broker (`$STRATA_BIN server ...`) on a
free port with a fresh data dir; `broker_factory(*sets)` starts more, with
extra `--set NAME=VALUE` args. Every broker's stderr goes to a file that is
attached to the test report on failure, and after each test we assert that no
broker log contains a "panicked" line.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from e2e_util import (
    E2E_DIR,
    REPO_ROOT,
    free_port,
    probe_broker,
    wait_until,
)

STOP_TIMEOUT = 20.0  # SIGTERM -> exit 0 within this many seconds
READY_TIMEOUT = 30.0


def strata_bin() -> Path:
    return Path(os.environ.get("STRATA_BIN", REPO_ROOT / "target" / "debug" / "strata"))


def _die_with_parent():
    """preexec_fn: the broker gets SIGKILL if pytest dies (no orphans)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class Broker:
    """One Strata broker process. Same port and data dir across restarts."""

    def __init__(self, workdir: Path, sets=(), name: str = "broker"):
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / f"{name}.stderr.log"
        self.port = free_port()
        self.sets = list(sets)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = [
            str(strata_bin()), "server",
            "--data-dir", str(self.data_dir),
            "--listen", self.bootstrap,
            "--advertise", self.bootstrap,
            "--node-id", "1",
        ]
        for s in self.sets:
            argv += ["--set", s]
        return argv

    def start(self, ready_timeout: float = READY_TIMEOUT) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        binary = strata_bin()
        if not binary.exists():
            pytest.fail(f"STRATA_BIN {binary} does not exist (build it: cargo build -p strata-server)")
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(f"\n----- [e2e] start #{self.starts}: {' '.join(self.argv())}\n".encode())
        logf = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                cwd=self.workdir, env=env, preexec_fn=_die_with_parent,
            )
        finally:
            logf.close()
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        last = {"err": None}

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before becoming ready\n"
                    + self.log_tail())
            try:
                probe_broker("127.0.0.1", self.port, expect_port=self.port)
                return True
            except Exception as e:  # noqa: BLE001 - keep polling
                last["err"] = e
                return False

        wait_until(ready, timeout, interval=0.05,
                   message=lambda: f"{self.name} not ready on {self.bootstrap} after {timeout}s "
                                   f"(last probe error: {last['err']!r})\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> float:
        """SIGTERM; assert exit code 0 within `timeout` s; return elapsed seconds."""
        assert self.running(), f"{self.name} is not running"
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s of SIGTERM (killed it)\n" + self.log_tail())
        elapsed = time.monotonic() - t0
        self.exit_codes.append(rc)
        assert rc == 0, f"{self.name} exited with {rc} after SIGTERM (expected 0)\n" + self.log_tail()
        return elapsed

    def kill(self):
        """SIGKILL (simulated crash)."""
        assert self.running(), f"{self.name} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.exit_codes.append(self.proc.returncode)

    def restart(self, graceful: bool = True) -> float:
        """stop() (or kill()) then start() on the same port and data dir. Returns stop time."""
        elapsed = 0.0
        if graceful:
            elapsed = self.stop()
        else:
            self.kill()
        self.start()
        return elapsed

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()
        return f"--- last {min(lines, len(text))} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def panic_lines(self) -> list[str]:
        return [l for l in self.log_text().splitlines() if "panicked" in l]


# ------------------------------------------------------------------ fixtures

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    brokers = getattr(item, "_strata_brokers", [])
    if rep.failed and brokers:
        for b in brokers:
            rep.sections.append((f"{b.name} stderr ({b.log_path})", b.log_tail(200)))


@pytest.fixture
def broker_factory(request, tmp_path):
    brokers: list[Broker] = []
    request.node._strata_brokers = brokers

    def make(*sets: str, name: str | None = None, start: bool = True) -> Broker:
        n = name or f"broker{len(brokers)}"
        b = Broker(tmp_path / n, sets=sets, name=n)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in brokers:
        b.cleanup()
    panics = {b.name: b.panic_lines() for b in brokers if b.panic_lines()}
    if panics:
        pytest.fail("broker log contains 'panicked':\n" + "\n".join(
            f"{n}: {l}" for n, ls in panics.items() for l in ls), pytrace=False)


@pytest.fixture
def closer(broker_factory):
    """closer(obj) -> obj; obj.close() is called at teardown (before the brokers stop)."""
    objs = []

    def track(obj):
        objs.append(obj)
        return obj

    yield track
    for o in reversed(objs):
        try:
            o.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture
def topic_name(request) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-")
    return f"{base}-{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------ CI: no silent skips

ALLOWLIST = E2E_DIR / "skip-allowlist.txt"


def load_skip_allowlist() -> list[tuple[str, str]]:
    """(node id or prefix ending in '*', reason) entries of skip-allowlist.txt."""
    out = []
    for line in ALLOWLIST.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = line.partition(" # ")
        if not sep or not reason.strip():
            raise pytest.UsageError(f"{ALLOWLIST.name}: entry without a reason: {line!r}")
        out.append((pattern.strip(), reason.strip()))
    return out


def skip_allowed(nodeid: str, allowlist: list[tuple[str, str]]) -> bool:
    nodeid = nodeid if nodeid.startswith("tests/e2e/") else f"tests/e2e/{nodeid}"
    return any(nodeid.startswith(p[:-1]) if p.endswith("*") else nodeid == p for p, _ in allowlist)


_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    """With CI=true a skipped test fails the run unless skip-allowlist.txt names it."""
    from e2e_util import is_ci
    if not is_ci() or not _skipped:
        return
    allowlist = load_skip_allowlist()
    unexpected = [(n, r) for n, r in _skipped if not skip_allowed(n, allowlist)]
    if unexpected:
        lines = "\n".join(f"  {n}: {r}" for n, r in unexpected)
        session.config.get_terminal_writer().line(
            f"\nCI=true: {len(unexpected)} test(s) skipped that tests/e2e/{ALLOWLIST.name} does not allow "
            f"(fix the environment or the test, or add an entry with its reason):\n{lines}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config):
    b = strata_bin()
    return [f"STRATA_BIN: {b} ({'exists' if b.exists() else 'MISSING'})",
            f"e2e dir: {E2E_DIR}"]
