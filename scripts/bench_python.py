"""The obvious Python Lambda for the relay's job, as the processor's baseline.

Reads one zstd file of comment lines then newline-delimited JSON records,
skips the preamble, parses each record with the json module, keeps six
fields, and packs the projections into 256 KiB bodies, as a Python
developer would write it. Prints one line: MB of decompressed JSON per
CPU-second of this process.

    python3 scripts/bench_python.py FILE.json.zst

`scripts/bench.sh processor` runs it (with the `zstandard` package, in the
project's virtualenv) on the benchmark's own file, in the same run.
"""

import io
import json
import sys
import time

import zstandard

# The same fields as cloud-processor/benches/pipeline.rs.
FIELDS = [
    ("id", ["id"]),
    ("ts", ["timestamp"]),
    ("type", ["type"]),
    ("user_id", ["user", "id"]),
    ("country", ["geo", "country"]),
    ("first_tag", ["tags", 0]),
]
MAX_BODY_BYTES = 256 * 1024 - 200


def pick(record, path):
    value = record
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def main(path):
    started = time.process_time()
    decompressed = 0
    records = bodies = 0
    body, body_bytes = [], 0
    in_body = False
    with open(path, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            decompressed += len(line.encode("utf-8"))
            if not in_body:
                if not line.startswith("{"):
                    continue
                in_body = True
            try:
                record = json.loads(line)
            except ValueError:
                continue
            projected = {}
            for name, field in FIELDS:
                value = pick(record, field)
                if value is not None:
                    projected[name] = value
            text = json.dumps(projected, separators=(",", ":"), ensure_ascii=False)
            size = len(text.encode("utf-8")) + 1
            if body_bytes + size > MAX_BODY_BYTES:
                bodies += 1
                body, body_bytes = [], 0
            body.append(text)
            body_bytes += size
            records += 1
    bodies += 1 if body else 0
    cpu = time.process_time() - started
    print(f"{decompressed / 1e6 / cpu:.1f} MB/CPU-s ({records} records, {bodies} bodies, {cpu:.2f} CPU-s)")


if __name__ == "__main__":
    main(sys.argv[1])
