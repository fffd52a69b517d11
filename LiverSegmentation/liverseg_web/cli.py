"""``liverseg-web``: start the web app (``make web`` runs it from a checkout)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="liverseg-web",
        description="Liver and liver-tumor segmentation in a web browser: open a CT, click Segment liver, refine "
                    "with the segment editor, download .seg.nrrd / NIfTI / statistics CSV. Each browser gets its own "
                    "session (process, scene, temporary files).")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only; "
                   "0.0.0.0 serves the network, without authentication or TLS: put it behind a proxy that has both)")
    p.add_argument("--port", type=int, default=8080, help="port of the front page (default 8080; each session gets a "
                   "free port chosen by the system)")
    p.add_argument("--max-upload-mb", type=float, default=1024, help="largest upload accepted, in MB (default 1024)")
    p.add_argument("--max-sessions", type=int, default=4, help="sessions at the same time (default 4; each needs "
                   "about 1-2 GB of memory and, while segmenting, the CPU)")
    p.add_argument("--idle-timeout", type=int, default=60, help="a session ends this many seconds after its browser "
                   "tab closed (default 60); its files are then removed")
    p.add_argument("--single", action="store_true", help="serve one session in this process, without the launcher")
    args = p.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.getLogger("liverseg").addHandler(handler)
    logging.getLogger("liverseg").setLevel(logging.INFO)
    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        print("liverseg-web needs the web extra: pip install 'liverseg[web]' (or run 'make web' in a checkout).",
              file=sys.stderr)
        return 2
    if args.single:
        from .app import serve_session

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the cleanup in serve_session's finally/with
        serve_session(args.host, args.port, args.max_upload_mb, args.idle_timeout)
        return 0
    from .launcher import Launcher

    session_args = ["--max-upload-mb", str(args.max_upload_mb), "--idle-timeout", str(args.idle_timeout)]
    Launcher(args.host, args.port, session_args, args.max_sessions).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
