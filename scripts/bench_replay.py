"""Replay at scale against the emulator: `cloud-processor replay --mode
missing` over RELAY_BENCH_REPLAY_OBJECTS raw objects (default 100,000; two
sources, a month of days), a third of them done, next to the script a user
would write in ten minutes (paginate, HEAD each marker, SendMessageBatch of
ten). Reports objects per second, requests per object and peak RSS, and the
relay's peak RSS over 1,000 objects for comparison. Run by
`scripts/bench.sh replay`, which starts a private emulator.
"""

import json
import os
import random
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
BINARY = sys.argv[1]
OBJECTS = int(os.environ.get("RELAY_BENCH_REPLAY_OBJECTS", "100000"))
# The baseline's rate per object does not improve with scale (one HEAD per
# object, one request at a time), so it is measured over the first
# RELAY_BENCH_BASELINE_OBJECTS raw objects listed rather than all of them.
BASELINE_OBJECTS = int(os.environ.get("RELAY_BENCH_BASELINE_OBJECTS", "10000"))
config = Config(max_pool_connections=32, retries={"max_attempts": 10, "mode": "standard"})
s3 = boto3.client("s3", endpoint_url=ENDPOINT, config=config)
sqs = boto3.client("sqs", endpoint_url=ENDPOINT, config=config)


def populate(bucket, n):
    """n raw objects over two sources and 30 days, a random third done."""
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(7)
    keys = []
    for i in range(n):
        source = ("edge-a", "edge-b")[i % 2]
        day = 1 + (i // 2) % 30
        key = f"raw/{source}/2026/11/{day:02}/{i % 24:02}/{i:08}.json.zst"
        keys.append(key)
        if rng.randrange(3) == 0:
            keys.append(key.replace("raw/", "state/done/", 1))
    started = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"{}"), keys))
    print(f"populated {len(keys)} objects in {time.time() - started:.0f} s", file=sys.stderr)


def queue(name):
    return sqs.create_queue(QueueName=name)["QueueUrl"]


def relay(bucket, url):
    """The relay's replay, as an operator runs it (no rate ceiling), under
    GNU time for its peak RSS: a child forked from this Python process
    would count Python's pages until it execs."""
    rss_file = f"/tmp/bench-replay-rss-{os.getpid()}"
    started = time.time()
    # moto answers a LIST in time proportional to the whole bucket (about
    # a second at 100,000 objects) and one request at a time: the AWS
    # timeouts are raised so that queueing behind it is not taken for a
    # dead connection.
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", rss_file,
         BINARY, "replay", "--bucket", bucket, "--notification-queue-url", url,
         "--s3-path-style", "--rate-per-sec", "0",
         "--aws-attempt-timeout-secs", "60", "--aws-operation-timeout-secs", "180"],
        capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"replay failed ({out.returncode}):\n{out.stderr}")
    elapsed = time.time() - started
    summary = json.loads([l for l in out.stderr.splitlines() if l.startswith("{")][-1])
    with open(rss_file) as f:
        rss_mib = int(f.read().split()[-1]) / 1024
    return elapsed, summary, rss_mib


def baseline(bucket, url):
    """The obvious boto3 script: paginate, HEAD each marker, batches of ten."""
    started = time.time()
    requests = listed = sent = 0
    batch = []

    def flush():
        nonlocal requests, batch
        if batch:
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(batch)]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
            requests += 1
            batch = []

    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/"):
        requests += 1
        for obj in page.get("Contents", []):
            listed += 1
            marker = obj["Key"].replace("raw/", "state/done/", 1)
            requests += 1
            try:
                s3.head_object(Bucket=bucket, Key=marker)
                continue
            except s3.exceptions.ClientError:
                pass
            event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Replay",
                                  "s3": {"bucket": {"name": bucket},
                                         "object": {"key": obj["Key"], "size": obj["Size"],
                                                    "eTag": obj["ETag"].strip('"')}}}]}
            batch.append(json.dumps(event))
            sent += 1
            if len(batch) == 10:
                flush()
            if listed >= BASELINE_OBJECTS:
                break
        if listed >= BASELINE_OBJECTS:
            break
    flush()
    return time.time() - started, listed, sent, requests


def main():
    small = f"bench-replay-small-{os.getpid()}"
    populate(small, 1000)
    _, _, small_rss = relay(small, queue(f"{small}-q"))

    bucket = f"bench-replay-{os.getpid()}"
    populate(bucket, OBJECTS)
    elapsed, s, big_rss = relay(bucket, queue(f"{bucket}-relay"))
    b_elapsed, b_listed, b_sent, b_requests = baseline(bucket, queue(f"{bucket}-boto3"))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| replay --mode missing, {s['listed']:,} raw objects ({s['already_done']:,} done) | "
          f"objects/s | requests/object | peak RSS |")
    print("|---|---|---|---|")
    print(f"| cloud-processor replay | **{s['listed'] / elapsed:,.0f}** | "
          f"{s['requests'] / s['listed']:.3f} | {big_rss:.1f} MiB ({small_rss:.1f} MiB over 1,000 objects) |")
    print(f"| boto3 script (paginate, HEAD each marker, batches of 10; first {b_listed:,} objects) | "
          f"{b_listed / b_elapsed:,.0f} | "
          f"{b_requests / b_listed:.3f} | {base_rss:.1f} MiB (the Python process) |")
    print(f"relay: {elapsed:.1f} s, sent {s['sent']:,}; boto3: {b_elapsed:.1f} s, sent {b_sent:,}",
          file=sys.stderr)


main()
