#!/usr/bin/env python3
"""What a store's log files and history image files hold, by keyspace.

usage: store-file-stats.py FILE...

FILE is a log file (`<data-dir>/wal/NNN.wal`, layout `HAECHIW2` or `1` of
store/src/overlay.rs `write_wal`) or a history image file
(`<data-dir>/history/{base,delta}-NNN.img`, layout `HAECHII1` of
store/src/image.rs). For each: its epoch, entries, bytes, and per keyspace
(the key's first byte: s sellers, l listings, b text bands, p prices,
i identifiers, c review cases, q review queue, m meta, d dictionary ...)
the entries, removals, bytes and average entry size. Checks the CRC-32 at
the end. To see, e.g., what a batch of the history bench writes: copy the
wal/ directory of its temporary store while it runs.
"""
import struct
import sys
import zlib
from collections import Counter


def field(b, off):
    """A u32-length-prefixed field at `off`: (bytes, offset after it)."""
    (n,) = struct.unpack_from("<I", b, off)
    return b[off + 4 : off + 4 + n], off + 4 + n


def entries_log(b):
    """(key, value or None) of a log file (HAECHIW1/2): key, tag, value."""
    off = 24
    for _ in range(struct.unpack_from("<Q", b, 16)[0]):
        k, off = field(b, off)
        tag, off = b[off], off + 1
        v, off = field(b, off) if tag else (None, off)
        yield k, v


def entries_image(b):
    """(key, value or None) of a HAECHII1 image file: tag, key, value."""
    off = 16
    while b[off] != 2:
        tag, off = b[off], off + 1
        k, off = field(b, off)
        v, off = field(b, off) if tag == 1 else (None, off)
        yield k, v


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for path in paths:
        b = open(path, "rb").read()
        magic = b[:8]
        if magic in (b"HAECHIW1", b"HAECHIW2"):
            read = entries_log
        elif magic == b"HAECHII1":
            read = entries_image
        else:
            print(f"{path}: not a haechi log or image file", file=sys.stderr)
            return 1
        crc_ok = zlib.crc32(b[:-4]) == struct.unpack("<I", b[-4:])[0]
        (epoch,) = struct.unpack_from("<Q", b, 8)
        count, removed, size = Counter(), Counter(), Counter()
        for k, v in read(b):
            p = chr(k[0]) if k else "(empty)"
            count[p] += 1
            size[p] += len(k) + (len(v) if v is not None else 0)
            if v is None:
                removed[p] += 1
        print(
            f"{path}: {magic.decode()} epoch {epoch}, {sum(count.values())} entries, "
            f"{len(b) / 1e6:.2f} MB, checksum {'ok' if crc_ok else 'MISMATCH'}"
        )
        for p in sorted(count, key=lambda p: -size[p]):
            print(
                f"  {p:8} {count[p]:9d} entries {removed[p]:7d} removed "
                f"{size[p] / 1e6:9.2f} MB  {size[p] / count[p]:7.0f} B/entry"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
