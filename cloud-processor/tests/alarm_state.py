"""What a per-source alarm of the module says about metrics the processor
emitted. It plays CloudWatch's part for a Lambda's log: each Embedded Metric
Format document the function printed becomes the metric data CloudWatch
would extract from it (PutMetricData). It then creates the alarm, as the
module defines it, for each source given, and prints the state CloudWatch's
evaluation gives each, as JSON. The alarm's definition is read from the
alarms table of infra/README.md, which scripts/terraform-check.sh generates
from the module applied to the emulator and fails on when it differs.

Usage: alarm_state.py README EMF_FILE ALARM SOURCE...
  ALARM  the alarm's name in the table between `<name>-` and `-<source>`,
         such as `ledger`
Talks only to AWS_ENDPOINT_URL: LocalStack, whose CloudWatch evaluates
alarms (moto's does not).
"""

import json
import re
import sys
import time

import boto3

OPS = {
    ">": "GreaterThanThreshold",
    "<": "LessThanThreshold",
    ">=": "GreaterThanOrEqualToThreshold",
    "<=": "LessThanOrEqualToThreshold",
}


def definition(readme, alarm):
    """The alarm's row of the generated table, as PutMetricAlarm fields."""
    row = re.compile(
        r"^\| `<name>-" + re.escape(alarm) + r"-<source>` \| `(?P<ns>[^`]+)` `(?P<metric>[^`]+)` "
        r"\(source=<source>\) \| (?P<stat>\w+) (?P<op>[<>]=?) (?P<threshold>[0-9.]+) over \d+ s, "
        r"(?P<periods>\d+) period\(s\) of (?P<period>\d+) s \| (?P<missing>\w+) \|"
    )
    for line in open(readme, encoding="utf-8"):
        m = row.match(line)
        if m:
            return {
                "Namespace": m["ns"],
                "MetricName": m["metric"],
                "Statistic": m["stat"],
                "ComparisonOperator": OPS[m["op"]],
                "Threshold": float(m["threshold"]),
                "EvaluationPeriods": int(m["periods"]),
                "Period": int(m["period"]),
                "TreatMissingData": m["missing"],
            }
    sys.exit(f"alarm_state.py: no per-source `{alarm}` alarm in {readme}'s alarms table")


def extracted(emf_path, namespace):
    """The metric data CloudWatch extracts from the EMF documents on stdout."""
    data = []
    for line in open(emf_path, encoding="utf-8"):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        aws = doc.get("_aws") if isinstance(doc, dict) else None
        if not aws:
            continue
        for directive in aws["CloudWatchMetrics"]:
            if directive["Namespace"] != namespace:
                continue
            for dimension_set in directive["Dimensions"]:
                dimensions = [{"Name": k, "Value": str(doc[k])} for k in dimension_set]
                for metric in directive["Metrics"]:
                    values = doc.get(metric["Name"])
                    if values is None:
                        continue
                    for value in values if isinstance(values, list) else [values]:
                        data.append(
                            {
                                "MetricName": metric["Name"],
                                "Dimensions": dimensions,
                                "Timestamp": aws["Timestamp"] / 1000,
                                "Value": float(value),
                            }
                        )
    return data


def main():
    readme, emf_path, alarm, sources = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    spec = definition(readme, alarm)
    cloudwatch = boto3.client("cloudwatch")
    data = extracted(emf_path, spec["Namespace"])
    for i in range(0, len(data), 20):
        cloudwatch.put_metric_data(Namespace=spec["Namespace"], MetricData=data[i : i + 20])
    names = {}
    for source in sources:
        name = f"relay-test-{alarm}-{source}"
        names[name] = source
        cloudwatch.put_metric_alarm(
            AlarmName=name, Dimensions=[{"Name": "source", "Value": source}], **spec
        )
    deadline = time.monotonic() + 60
    while True:
        alarms = cloudwatch.describe_alarms(AlarmNames=list(names))["MetricAlarms"]
        states = {names[a["AlarmName"]]: a["StateValue"] for a in alarms}
        settled = len(states) == len(names) and "INSUFFICIENT_DATA" not in states.values()
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(json.dumps(states))


if __name__ == "__main__":
    main()
