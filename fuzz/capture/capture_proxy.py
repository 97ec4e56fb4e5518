#!/usr/bin/env python3
"""Capture Kafka client->broker request frames as fuzz seeds.

A TCP proxy (Python 3.11 stdlib only): listens on --listen, forwards every connection to
--upstream, and writes each complete client->broker frame *without* its 4-byte size prefix to
its own file in --out (default fuzz/corpus/request_decode/). Broker->client bytes are forwarded
untouched and not recorded.

Start the broker advertising the proxy's address, so clients come back through it after the
bootstrap Metadata call:

    target/debug/strata server --data-dir /tmp/fz --listen 127.0.0.1:19500 \
        --advertise 127.0.0.1:19501
    python3 fuzz/capture/capture_proxy.py --listen 127.0.0.1:19501 --upstream 127.0.0.1:19500

File names are `<api key>-v<version>-<sha1 prefix>`, so identical frames are written once.
Frames above --max-frame bytes are forwarded but not saved. Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import struct
import sys
from pathlib import Path


class Recorder:
    """Cuts a byte stream into size-prefixed frames and saves each body."""

    def __init__(self, out: Path, max_frame: int) -> None:
        self.out = out
        self.max_frame = max_frame
        self.saved = 0

    def save(self, body: bytes) -> None:
        if len(body) > self.max_frame or len(body) < 4:
            return
        api_key, version = struct.unpack(">hh", body[:4])
        digest = hashlib.sha1(body).hexdigest()[:16]
        path = self.out / f"{api_key}-v{version}-{digest}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(body)
            os.replace(tmp, path)
            self.saved += 1


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               recorder: Recorder | None) -> None:
    """Copies reader to writer; when `recorder` is set, also splits the stream into frames."""
    pending = bytearray()
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            if recorder is None:
                continue
            pending += data
            while len(pending) >= 4:
                (size,) = struct.unpack(">i", pending[:4])
                if size <= 0:
                    # Not Kafka framing: stop recording this connection, keep forwarding.
                    recorder = None
                    pending.clear()
                    break
                if len(pending) < 4 + size:
                    break
                recorder.save(bytes(pending[4:4 + size]))
                del pending[:4 + size]
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing a dead socket is best effort
            pass


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:19501", help="HOST:PORT to accept clients on")
    p.add_argument("--upstream", default="127.0.0.1:19500", help="broker HOST:PORT")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "corpus" / "request_decode"),
                   help="directory for the captured frames")
    p.add_argument("--max-frame", type=int, default=1 << 20, help="largest frame body to save")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(out, args.max_frame)
    up_host, up_port = args.upstream.rsplit(":", 1)
    host, port = args.listen.rsplit(":", 1)

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection(up_host, int(up_port))
        except OSError as e:
            print(f"capture_proxy: cannot reach {args.upstream}: {e}", file=sys.stderr)
            c_writer.close()
            return
        await asyncio.gather(pump(c_reader, b_writer, recorder), pump(b_reader, c_writer, None))

    server = await asyncio.start_server(handle, host, int(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"capture_proxy: {args.listen} -> {args.upstream}, frames to {out}", flush=True)
    async with server:
        await stop.wait()
    print(f"capture_proxy: saved {recorder.saved} new frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
