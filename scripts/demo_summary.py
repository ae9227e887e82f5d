"""Reads the demo's output queue to the end and prints what arrived.

Losses and duplicates are counted by the records' unique `id` field (the load
generator numbers every record); latency is each message's SQS SentTimestamp
minus the write time in its source file's name (epoch milliseconds), and a
file's latency is its last message's. The processor's own measure of the
latter (relay_file_latency_seconds, from the file's mtime) is read from its
histogram as Prometheus's histogram_quantile would, and set beside it.

usage: demo_summary.py QUEUE_URL EXPECTED_RECORDS EXPECTED_FILES [TIMEOUT_SECS [PROCESSOR_METRICS_URL]]
"""
import json
import os
import sys
import time

import urllib.request

import boto3


def scrape(metrics_url):
    """The processor's Prometheus samples: {name: {labels: value}}."""
    samples = {}
    if not metrics_url:
        return samples
    text = urllib.request.urlopen(metrics_url).read().decode()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        samples.setdefault(name, {})[labels.rstrip("}")] = float(value)
    return samples


def total(samples, name):
    return sum(samples.get(name, {}).values())


def state_requests_per_object(samples):
    """S3 requests on markers and leases per object sent, by op."""
    objects = samples.get("relay_processor_objects_total", {}).get('outcome="sent"', 0)
    if not objects:
        return "unknown"
    ops = samples.get("relay_processor_state_requests_total", {})
    parts = [f"{label.split('=', 1)[1].strip(chr(34))} {value / objects:.2f}"
             for label, value in sorted(ops.items())]
    return f"{total(samples, 'relay_processor_state_requests_total') / objects:.2f} ({', '.join(parts)})"


def canary_lag(samples):
    """Each source's last canary lag (creation on the host to SQS), and how
    many canaries reached the canary queue."""
    lags = samples.get("relay_canary_lag_seconds", {})
    if not lags:
        return "no canary processed"
    sent = samples.get("relay_processor_canaries_total", {}).get('outcome="sent"', 0)
    per_source = ", ".join(f"{label.split('=', 1)[1].strip(chr(34))} {value:.2f} s"
                           for label, value in sorted(lags.items()))
    return f"{per_source} (last canary; {int(sent)} sent to the canary queue)"


def histogram_quantile(samples, name, q):
    """Prometheus's histogram_quantile over every series of `name`: the
    buckets summed by their bound, interpolated linearly within one."""
    buckets = {}
    for labels, value in samples.get(name + "_bucket", {}).items():
        le = [part.split("=", 1)[1].strip('"') for part in labels.split(",") if part.startswith("le=")]
        if le:
            bound = float("inf") if le[0] == "+Inf" else float(le[0])
            buckets[bound] = buckets.get(bound, 0) + value
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return float("nan")
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(buckets[bound] - below, 1e-9)
        lower, below = bound, buckets[bound]
    return float("nan")


def ledger(samples):
    """Manifests reconciled, and what they found (RELAY_LEDGER_GRACE_SECS)."""
    reconciled = samples.get("relay_processor_objects_total", {}).get('outcome="reconciled"', 0)
    return f"{int(reconciled)} manifests reconciled, {int(total(samples, 'relay_processor_ledger_findings_total'))} findings"


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    queue, expected, files_expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 120
    metrics_url = sys.argv[5] if len(sys.argv) > 5 else None
    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    ids, seen_ids, latencies_ms, sources = 0, set(), [], set()
    file_done_ms = {}
    messages, duplicates = 0, 0
    last_progress = time.time()
    while True:
        out = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"], AttributeNames=["SentTimestamp"])
        batch = out.get("Messages", [])
        for m in batch:
            messages += 1
            source = m["MessageAttributes"]["relay.source_key"]["StringValue"]
            sources.add(source)
            written_ms = int(source.rsplit("/", 1)[-1].split(".", 1)[0])
            sent_ms = int(m["Attributes"]["SentTimestamp"])
            latencies_ms.append(sent_ms - written_ms)
            file_done_ms[source] = max(file_done_ms.get(source, 0), sent_ms - written_ms)
            for line in m["Body"].splitlines():
                rid = json.loads(line)["id"]
                ids += 1
                if rid in seen_ids:
                    duplicates += 1
                seen_ids.add(rid)
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        if batch:
            last_progress = time.time()
        if len(seen_ids) >= expected and not batch:
            break
        if time.time() - last_progress > timeout:
            break
    lost = expected - len(seen_ids)
    print(f"  files             {len(sources)} of {files_expected}")
    print(f"  records in        {expected}")
    print(f"  records out       {ids} ({len(seen_ids)} distinct)")
    print(f"  SQS messages      {messages}")
    print(f"  duplicates        {duplicates}")
    print(f"  losses            {lost}")
    samples = scrape(metrics_url)
    print(f"  rejected records  {int(total(samples, 'relay_processor_rejected_records_total')) if samples else 'unknown'}")
    print(f"  state requests per object  {state_requests_per_object(samples)}")
    print(f"  canary lag        {canary_lag(samples)}")
    print(f"  latency, file write to message in SQS: p50 {percentile(latencies_ms, 50):.0f} ms, "
          f"p99 {percentile(latencies_ms, 99):.0f} ms")
    demo_p99 = percentile(list(file_done_ms.values()), 99)
    relay_p99 = histogram_quantile(samples, "relay_file_latency_seconds", 0.99) * 1000
    print(f"  latency per file (its last message), p99: {demo_p99:.0f} ms measured here, "
          f"{relay_p99:.0f} ms by the processor's relay_file_latency_seconds "
          f"({(relay_p99 - demo_p99) / demo_p99:+.0%})")
    print(f"  ledger            {ledger(samples) if samples else 'unknown'}")
    sys.exit(0 if duplicates == 0 and lost == 0 else 1)


if __name__ == "__main__":
    main()
