"""Receives every message on a queue through AWS's SQS Extended Client for
Python (amazon-sqs-extended-client), exactly as a consumer would, and prints
one JSON line per message: its relay.chunk attribute and its body, which the
client has already resolved from S3 for a claim check.

Usage: extended_consumer.py QUEUE_URL EXPECTED_MESSAGES
Talks only to AWS_ENDPOINT_URL (the local emulator).
"""

import json
import sys
import time

import boto3
import sqs_extended_client  # noqa: F401  (patches boto3's SQS client)


def main() -> None:
    queue_url, expected = sys.argv[1], int(sys.argv[2])
    sqs = boto3.client("sqs")
    # Resolving pointers needs no bucket setting: the pointer names it.
    sqs.large_payload_support = "unused-for-receiving"
    seen = 0
    deadline = time.monotonic() + 60
    while seen < expected and time.monotonic() < deadline:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        )
        for m in response.get("Messages", []):
            attrs = m.get("MessageAttributes", {})
            print(
                json.dumps(
                    {
                        "chunk": int(attrs["relay.chunk"]["StringValue"]),
                        "body": m["Body"],
                    }
                ),
                flush=True,
            )
            seen += 1
    if seen < expected:
        sys.exit(f"received {seen} of {expected} messages")


if __name__ == "__main__":
    main()
