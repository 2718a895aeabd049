#!/usr/bin/env python3
"""Writes the fuzz seeds from the project's own data: the `where` cases of shapes/tests, the
captured pgoutput streams, bodies for the mutations and splitter targets, and shape-log files
laid out as proxy/src/shape_log (record.rs, snapshot_file.rs, LogAppender) writes them, whole
and damaged."""

import hashlib
import json
import pathlib
import re
import struct
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[3]
SEEDS = pathlib.Path(__file__).resolve().parent
COLUMNS = ["id", "i2", "i4", "i8", "n", "f4", "f8", "b", "t", "vc", "c", "u", "d", "tm", "ts",
           "tz", "iv", "j", "jb", "e", "ai", "at", "Mixed Case", "p", "dom"]
STRING = r'"((?:[^"\\]|\\.)*)"'


def unescape(s):
    return re.sub(r'\\u\{([0-9a-fA-F]+)\}|\\(.)',
                  lambda m: chr(int(m.group(1), 16)) if m.group(1) else
                  {"n": "\n", "t": "\t", "0": "\0", "r": "\r"}.get(m.group(2), m.group(2)), s)


def write(target, data):
    name = hashlib.sha1(data).hexdigest()[:16]
    (SEEDS / target / name).write_bytes(data)


def where_seeds():
    cases = (ROOT / "shapes/tests/where_cases.rs").read_text()
    # `#[case::name("where", is(&[("column", "value"), …], expected))]`
    for m in re.finditer(r'#\[case::\w+\(\s*' + STRING + r'\s*,\s*is\(&\[(.*?)\]\s*,', cases, re.S):
        values = dict((unescape(c), unescape(v)) for c, v in
                      re.findall(STRING + r'\s*,\s*' + STRING, m.group(2)))
        row = [values.get(c, "\x01") for c in COLUMNS]
        while row and row[-1] == "\x01":
            row.pop()
        write("where_clause", "\0".join([unescape(m.group(1))] + row).encode())
    corpus = (ROOT / "shapes/tests/properties.rs").read_text()
    block = corpus[corpus.index("const CORPUS"):corpus.index("];")]
    for s in re.findall(STRING, block):
        write("where_clause", unescape(s).encode())


def pgoutput_seeds():
    for path in sorted((ROOT / "proxy/src/replication/pgoutput/fixtures").glob("*.hex")):
        messages = [bytes.fromhex(line.split()[1]) for line in path.read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
        framed = b"".join(struct.pack("<H", len(m)) + m for m in messages)
        write("pgoutput", framed)


def mutation_seeds():
    base = {"id": "m1", "table": "notes", "op": "upsert",
            "key": {"id": "5d0c9c1e-0000-4000-8000-000000000001"},
            "values": {"title": "x", "updated_at": None}, "timestamp": "2026-11-22T10:30:00.123456Z"}
    bodies = [
        {"client_id": "d1", "mutations": [base]},
        {"client_id": "d1", "atomic": True, "mutations": [
            base, dict(base, id="m2", op="delete", values={}),
            dict(base, id="m3", op="insert", table='"public"."notes"', values={"title": 1.5}),
            dict(base, id="m4", op="update", values={"slug": "s", "nope": [1, {"a": None}]}),
            dict(base, id="m5", values={}, merge={"body": "AAA="}),
            dict(base, id="m6", key={"id": "x", "title": "y"}, timestamp="2026-11-22 10:30:00+02")]},
        {"client_id": " ", "mutations": []},
    ]
    for body in bodies:
        write("mutations", json.dumps(body).encode())


def splitter_seeds():
    messages = [
        {"headers": {"operation": "insert", "lsn": "1234", "op_position": 0, "txids": [7]},
         "key": '"public"."items"/"1"',
         "value": {"id": "1", "title": "a \"q\" \\ é", "done": "true", "n": "1.50", "f": "NaN",
                   "tags": "{a,\"b c\"}", "doc": "{\"k\": [1]}", "at": "2024-01-01 00:00:00+00",
                   "body": "\\xdeadbeef", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}},
        {"headers": {"operation": "delete"}, "key": "k", "value": {"id": "2"}},
        {"headers": {"control": "snapshot-end", "xmin": "1", "xmax": "2", "xip_list": []}},
        {"headers": {"control": "up-to-date", "global_last_seen_lsn": "99"}},
        {"headers": {"control": "must-refetch"}},
    ]
    texts = [json.dumps(m) for m in messages]
    write("splitters", b"\x00" + ("[" + ",".join(texts) + "]").encode())
    write("splitters", b"\x03" + (" [ " + " , ".join(texts[:2]) + " ] ").encode())
    sse = ": keep-alive\n\n" + "".join("data: " + t + "\n\n" for t in texts)
    write("splitters", b"\x07" + sse.encode())
    write("splitters", b"\x01" + b"data:a\r\ndata: b\r\rid: 1\nevent: x\ndatafoo\n\ndata\n\n")


def record(kind, tx, op, payload=b""):
    """A shape-log record (proxy/src/shape_log/record.rs, format version 1)."""
    head = struct.pack("<BQQ", kind, tx, op)
    return struct.pack("<I", len(payload)) + head + struct.pack("<I", zlib.crc32(head + payload)) + payload


def shape_log_seeds():
    entry, commit, complete = 1, 2, 3
    chunk_bytes = 96
    snapshot = b"".join(record(entry, 0, i // 3, b'{"key":"k%d","value":{"id":"%d"}}' % (i, i))
                        for i in range(6))
    snapshot += record(entry, 0, 2, b'{"headers":{"control":"snapshot-end"}}') + record(complete, 0, 2)
    changes = b""
    for tx in range(1, 5):
        lsn = 1000 * tx
        changes += b"".join(record(entry, lsn, 2 * op, b'{"key":"k%d","lsn":"%d"}' % (op, lsn))
                            for op in range(tx))
        changes += record(commit, lsn, lsn + 8)
    torn = changes + record(entry, 9000, 0, b'{"torn":true}')

    def seed(snapshot, changes):
        write("shape_log", bytes([chunk_bytes // 16]) + struct.pack("<H", len(snapshot)) + snapshot + changes)

    seed(snapshot, torn)
    seed(snapshot, torn[:-5])
    flipped = bytearray(changes)
    flipped[len(changes) // 2] ^= 0x10
    seed(snapshot[:-30], bytes(flipped))
    seed(b"", changes)

    # A compacted range (compaction/build.rs): marks, a merged entry, a retraction (a commit
    # record with a payload of its own), then the tail.
    def mark(flags, rows):
        return struct.pack("<BBq", 1, flags, rows)
    chunk_end, range_start, range_end, fresh = 1, 2, 4, 8
    retraction = b"R\x01" + struct.pack("<QQ", 1000, 0) + b'{"key":"k9","headers":{"operation":"delete"}}'
    compacted = (record(commit, 0, 0, mark(range_start | fresh, 0))
                 + record(entry, 1000, 0, b'{"key":"k0","lsn":"1000"}')
                 + record(commit, 1000, 2, retraction)
                 + record(commit, 1000, 1008, mark(chunk_end | range_end, 1))
                 + changes[len(record(entry, 1000, 0, b'{"key":"k0","lsn":"1000"}')) + 25:])
    seed(snapshot, compacted)
    # A range's opening mark after entries (a copy of the one above, as the fuzzer made it):
    # it ends no transaction, the commit after it does.
    seed(snapshot, record(entry, 1000, 0, b'{"key":"k0"}') + record(commit, 0, 0, mark(range_start | fresh, 0))
         + record(commit, 1000, 1008))


where_seeds()
pgoutput_seeds()
shape_log_seeds()
mutation_seeds()
splitter_seeds()
