"""Reads the demo's output queue to the end and prints what arrived.

Losses and duplicates are counted by the records' unique `id` field (the load
generator numbers every record); latency is each message's SQS SentTimestamp
minus the write time in its source file's name (epoch milliseconds).

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
            latencies_ms.append(int(m["Attributes"]["SentTimestamp"]) - written_ms)
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
    sys.exit(0 if duplicates == 0 and lost == 0 else 1)


if __name__ == "__main__":
    main()
