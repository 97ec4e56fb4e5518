#!/usr/bin/env python3
"""Builds the committed seed corpora in fuzz/seeds/ from captured traffic (Python 3.11 stdlib).

Inputs: the frames written by capture_proxy.py (default fuzz/corpus/request_decode/) and a
broker data directory (log.dirs) after a clean shutdown. Outputs, replacing what is there:

- seeds/request_decode/        the captured frames (deduplicated, < 64 KiB)
- seeds/request_decode_keyed/  the same frames re-encoded for that target: 2-byte API key,
                               2-byte version, then the body after the header
- seeds/record_batch/          record batches found in Produce frames (CRC32C-verified)
- seeds/log_recovery/          segment files of the data dir, in log_recovery's input layout
                               (plain, with indexes + clean marker, two segments, torn tail)

    python3 fuzz/capture/make_seeds.py --frames fuzz/corpus/request_decode --data-dir /tmp/fz
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import struct
from pathlib import Path

MAX_SEED = 64 * 1024 - 1

# API keys whose frames can be re-encoded for request_decode_keyed: (api key, min decodable
# version, first version using the flexible request header v2). Order does not matter.
SUPPORTED = [
    (0, 3, 9),    # Produce (decodable from v3)
    (1, 4, 12),   # Fetch
    (2, 1, 6),    # ListOffsets
    (3, 0, 9),    # Metadata
    (18, 0, 3),   # ApiVersions
    (19, 2, 5),   # CreateTopics
    (20, 1, 4),   # DeleteTopics
    (21, 0, 2),   # DeleteRecords
    (22, 0, 2),   # InitProducerId
    (32, 1, 4),   # DescribeConfigs
    (33, 0, 2),   # AlterConfigs
    (37, 0, 2),   # CreatePartitions
    (44, 0, 1),   # IncrementalAlterConfigs
    (60, 0, 0),   # DescribeCluster
]


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def body_offset(frame: bytes) -> tuple[int, int, int] | None:
    """(api key, version, offset of the body) for a request frame, or None."""
    api_key, version = struct.unpack(">hh", frame[:4])
    entry = next((e for e in SUPPORTED if e[0] == api_key), None)
    if entry is None:
        return None
    pos = 8
    (n,) = struct.unpack(">h", frame[pos:pos + 2])
    pos += 2 + max(n, 0)
    if version >= entry[2]:  # header v2: tagged fields
        count, pos = uvarint(frame, pos)
        for _ in range(count):
            _, pos = uvarint(frame, pos)
            size, pos = uvarint(frame, pos)
            pos += size
    return api_key, version, pos


def batches_in(buf: bytes) -> list[bytes]:
    """Every RecordBatch v2 with a valid CRC32C found anywhere in `buf`."""
    found = []
    i = 0
    while i + 61 <= len(buf):
        if buf[i + 16] == 2:
            (length,) = struct.unpack(">i", buf[i + 8:i + 12])
            end = i + 12 + length
            if length >= 49 and end <= len(buf):
                (crc,) = struct.unpack(">I", buf[i + 17:i + 21])
                if crc32c(buf[i + 21:end]) == crc:
                    found.append(buf[i:end])
                    i = end
                    continue
        i += 1
    return found


def write(dir_: Path, name: str, data: bytes) -> None:
    if len(data) <= MAX_SEED:
        (dir_ / name).write_bytes(data)


def log_input(log: bytes, *, flags: int = 0, index: bytes = b"", timeindex: bytes = b"",
              checkpoint: int | None = None, second: tuple[int, int] | None = None) -> bytes:
    """Encodes fuzz/src/log.rs's input layout."""
    out = bytearray([flags, 0])
    if flags & 1:
        out += struct.pack(">H", len(index)) + index
    if flags & 2:
        out += struct.pack(">H", len(timeindex)) + timeindex
    if flags & 8:
        out += struct.pack(">I", checkpoint or 0)
    if flags & 16:
        split, base = second or (0, 0)
        out += struct.pack(">II", split, base)
    return bytes(out + log)


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", default=str(here / "corpus" / "request_decode"))
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default=str(here / "seeds"))
    p.add_argument("--max-frames", type=int, default=150)
    args = p.parse_args()

    out = Path(args.out)
    dirs = {n: out / n for n in ["request_decode", "request_decode_keyed", "record_batch", "log_recovery"]}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)

    # Only capture_proxy.py's files (`<key>-v<version>-<hash>`): a fuzzer may share the directory.
    frames = sorted(f for f in Path(args.frames).iterdir() if re.fullmatch(r"-?\d+-v\d+-[0-9a-f]{16}", f.name))
    # Prefer variety: at most 12 frames per (api key, version), smallest first.
    by_kind: dict[str, list[Path]] = {}
    for f in sorted(frames, key=lambda f: f.stat().st_size):
        by_kind.setdefault(f.name.rsplit("-", 1)[0], []).append(f)
    chosen = [f for fs in by_kind.values() for f in fs[:12]][: args.max_frames]
    batches: dict[str, bytes] = {}
    for f in chosen:
        frame = f.read_bytes()
        write(dirs["request_decode"], f.name, frame)
        parsed = body_offset(frame)
        if parsed is not None:
            api_key, version, pos = parsed
            keyed = struct.pack(">HH", api_key, version) + frame[pos:]
            write(dirs["request_decode_keyed"], f.name, keyed)
            if api_key == 0:
                for b in batches_in(frame[pos:]):
                    batches.setdefault(hashlib.sha1(b).hexdigest()[:16], b)
    for digest, b in list(batches.items())[:60]:
        write(dirs["record_batch"], f"produced-{digest}", b)

    data_dir = Path(args.data_dir)
    parts = sorted(d for d in data_dir.iterdir() if d.is_dir())
    for part in parts:
        segs = sorted(part.glob("*.log"))
        for seg in segs:
            log = seg.read_bytes()
            tag = f"{part.name}-{seg.stem.lstrip('0') or '0'}"
            write(dirs["log_recovery"], f"plain-{tag}", log_input(log))
            idx = seg.with_suffix(".index")
            tidx = seg.with_suffix(".timeindex")
            write(dirs["log_recovery"], f"clean-{tag}", log_input(
                log, flags=1 | 2 | 4, index=idx.read_bytes() if idx.exists() else b"",
                timeindex=tidx.read_bytes() if tidx.exists() else b""))
            bs = batches_in(log)
            if len(bs) >= 2:
                torn = log[: len(bs[0]) + len(bs[1]) // 2]
                write(dirs["log_recovery"], f"torn-{tag}", log_input(torn, flags=8, checkpoint=1))
            # A few whole batches of a real log, concatenated, for record_batch.
            if bs:
                write(dirs["record_batch"], f"segment-{tag}", b"".join(bs[:3]))
        if len(segs) >= 2:
            a, b = segs[0].read_bytes(), segs[1].read_bytes()
            base = int(segs[1].stem)
            # Keep the two-segment seeds under the size cap: cut each at a batch boundary.
            def head(buf: bytes, limit: int) -> bytes:
                n = 0
                for x in batches_in(buf):
                    if n + len(x) > limit:
                        break
                    n += len(x)
                return buf[:n]
            a, b = head(a, 24 * 1024), head(b, 24 * 1024)
            idx = segs[0].with_suffix(".index").read_bytes()
            tidx = segs[0].with_suffix(".timeindex").read_bytes()
            write(dirs["log_recovery"], f"two-{part.name}",
                  log_input(a + b, flags=16, second=(len(a), base)))
            write(dirs["log_recovery"], f"two-indexed-{part.name}",
                  log_input(a + b, flags=16 | 1 | 2, index=idx, timeindex=tidx, second=(len(a), base)))
    for name, d in dirs.items():
        files = list(d.iterdir())
        print(f"{name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
