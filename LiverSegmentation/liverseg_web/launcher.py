"""Several people, one machine: the front page starts a separate session process (own port, own Slicer scene,
own temporary folder) for each browser that opens it and redirects the browser there. Sessions end on their own
when their browser has been gone for the idle timeout; the launcher stops them all when it stops."""
from __future__ import annotations

import html
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("liverseg.web")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, process: subprocess.Popen, timeout_s: float) -> bool:
    """True once the session accepts connections; False if it exits or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # it ended meanwhile
        pass


class Launcher:
    def __init__(self, host: str, port: int, session_args: list[str], max_sessions: int, start_timeout_s: float = 120,
                 stop_grace_s: float = 10.0):
        self.host, self.port = host, port
        self.session_args, self.max_sessions, self.start_timeout_s = session_args, max_sessions, start_timeout_s
        self.stop_grace_s = stop_grace_s  # how long stopping sessions waits for them to clean up before SIGKILL
        self.sessions: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def running(self) -> int:
        with self._lock:
            self.sessions = {p: proc for p, proc in self.sessions.items() if proc.poll() is None}
            return len(self.sessions)

    def start_session(self) -> int:
        """Start a session process and return its port once it answers."""
        if self.running() >= self.max_sessions:
            raise RuntimeError(f"All {self.max_sessions} sessions of this server are in use; try again in a few "
                               "minutes (a session ends shortly after its browser tab is closed).")
        port = free_port(self.host)
        cmd = [sys.executable, "-m", "liverseg_web", "--single", "--host", self.host, "--port", str(port), *self.session_args]
        proc = subprocess.Popen(cmd, start_new_session=True)  # own process group: stopped with its workers
        with self._lock:
            self.sessions[port] = proc
        if not wait_for_port(self.host, port, proc, self.start_timeout_s):
            self.stop(port)
            raise RuntimeError("The session did not start; see the server's log.")
        return port

    def stop(self, port: int) -> None:
        self._stop([port])

    def stop_all(self) -> None:
        self._stop(list(self.sessions))

    def _stop(self, ports: list[int]) -> None:
        """SIGTERM every session's process group at once (each then removes its files), one shared grace period,
        then SIGKILL what is left. Why at once: one by one, N slow sessions made Ctrl+C take N times the grace."""
        procs = {port: self.sessions[port] for port in ports if port in self.sessions}
        procs = {port: proc for port, proc in procs.items() if proc.poll() is None}
        for proc in procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for port, proc in procs.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("The session on port %d did not stop within %.0f s; killed (its temporary folder may "
                            "remain in %s).", port, self.stop_grace_s, os.environ.get("TMPDIR", "the system's temporary folder"))
                _signal_group(proc, signal.SIGKILL)
                proc.wait()

    def serve(self) -> None:
        launcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] not in ("/", "/index.html"):
                    self.send_error(404)
                    return
                try:
                    port = launcher.start_session()
                except RuntimeError as exc:
                    body = f"<html><body><h3>Liver Segmentation</h3><p>{html.escape(str(exc))}</p></body></html>".encode()
                    self.send_response(503)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                hostname = (self.headers.get("Host") or launcher.host).rsplit(":", 1)[0]
                self.send_response(302)
                self.send_header("Location", f"http://{hostname}:{port}/")
                self.end_headers()

            def log_message(self, fmt, *args):
                log.info("%s %s", self.address_string(), fmt % args)

        # Ctrl+C and SIGTERM (a service manager, `kill`) both stop every session: the sessions run in their own
        # process groups, so a launcher that simply died would leave them running. SIGINT is set explicitly because
        # a launcher started in the background inherits it ignored.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        print(f"Liver Segmentation web app: open http://{self.host}:{httpd.server_address[1]}/ in a browser "
              f"(Ctrl+C stops it and every session).", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            httpd.server_close()
            self.stop_all()
