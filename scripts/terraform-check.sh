#!/usr/bin/env bash
# Checks infra/: terraform fmt and validate (with the offline provider mirror
# when this machine has one, the registry otherwise), checkov, and, when an
# emulator is configured (AWS_ENDPOINT_URL), a real apply and destroy
# against it. Work happens in a scratch copy, so no state lands in the repo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

if ! command -v terraform >/dev/null; then
  if [[ ${CI:-} == true ]]; then
    echo "terraform-check.sh: terraform is not installed, and CI must check infra/" >&2
    exit 1
  fi
  echo "terraform-check.sh: WARNING: terraform is not installed; infra/ is NOT checked" >&2
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A CLI config of our own: the machine's may point at a missing file.
mirror=$(find / -maxdepth 6 -path '*registry.terraform.io/hashicorp/aws' -print -quit 2>/dev/null || true)
if [[ -n $mirror ]]; then
  cat >"$work/terraformrc" <<CFG
provider_installation {
  filesystem_mirror {
    path    = "${mirror%/registry.terraform.io/hashicorp/aws}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/aws"]
  }
}
CFG
  echo "terraform-check.sh: using the provider mirror under ${mirror%/registry.terraform.io/hashicorp/aws}" >&2
else
  : >"$work/terraformrc"
fi
export TF_CLI_CONFIG_FILE=$work/terraformrc TF_IN_AUTOMATION=1 TF_INPUT=0

echo "-- terraform fmt -check" >&2
terraform -chdir=infra fmt -check -recursive

mkdir "$work/module"
cp infra/*.tf "$work/module/"
echo "-- terraform validate" >&2
terraform -chdir="$work/module" init -backend=false >/dev/null
terraform -chdir="$work/module" validate

echo "-- checkov" >&2
req=scripts/requirements-checkov.txt stamp=.venv-checkov/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  python3 -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
.venv-checkov/bin/checkov -d infra --framework terraform --skip-download --compact --quiet

if [[ -z ${AWS_ENDPOINT_URL:-} ]]; then
  if [[ ${CI:-} == true ]]; then
    echo "terraform-check.sh: no AWS_ENDPOINT_URL, and CI must apply the module to the emulator" >&2
    exit 1
  fi
  echo "terraform-check.sh: WARNING: no AWS_ENDPOINT_URL; the apply against the emulator is NOT run" >&2
  exit 0
fi
echo "-- terraform apply and destroy against $AWS_ENDPOINT_URL" >&2
ep=$AWS_ENDPOINT_URL
# The emulator's provider settings replace providers.tf in the scratch copy.
cat >"$work/module/providers.tf" <<TF
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  s3_use_path_style           = true
  endpoints {
    cloudwatch = "$ep"
    iam        = "$ep"
    lambda     = "$ep"
    logs       = "$ep"
    s3         = "$ep"
    sqs        = "$ep"
    sts        = "$ep"
  }
}
TF
# The emulator does not run the function (Invoke needs Docker), so any zip
# will do; use the real binary when it has been built.
binary=$root/target/debug/cloud-processor
[[ -x $binary ]] || binary=$root/scripts/build-lambda.sh
python3 - "$binary" "$work/function.zip" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = 0o755 << 16
    z.writestr(info, open(sys.argv[1], "rb").read())
PY
cat >"$work/module/test.auto.tfvars" <<TFVARS
name            = "relay-tf-test"
lambda_zip_path = "$work/function.zip"
fields          = "id:string!,ts=timestamp:int!,user_id=user.id:string|int,uid=hmac(user.email)"
output_fifo     = true
hmac_key_parameter = true
hmac_previous_key_parameter = true
edge_sources = {
  "edge-1" = {}
  "edge-2" = { create_user = true }
}
TFVARS
terraform -chdir="$work/module" apply -auto-approve >"$work/apply.log" 2>&1 || { cat "$work/apply.log" >&2; exit 1; }
grep -E "^Apply complete" "$work/apply.log" >&2
queue=$(terraform -chdir="$work/module" output -raw output_queue_url)
[[ $queue == *relay-tf-test-output.fifo ]] || { echo "unexpected output queue URL: $queue" >&2; exit 1; }
# One policy per source, confined to its own prefix.
policies=$(terraform -chdir="$work/module" output -json edge_source_policy_arns)
for id in edge-1 edge-2; do
  [[ $policies == *"relay-tf-test-edge-$id"* ]] || { echo "no policy for $id: $policies" >&2; exit 1; }
done
# The HMAC key's parameter: created with the placeholder the processor
# refuses, named in the function's environment.
parameter=$(terraform -chdir="$work/module" output -raw hmac_key_parameter)
[[ $parameter == /relay-tf-test/hmac-key ]] || { echo "hmac key parameter: $parameter" >&2; exit 1; }
env_parameter=$("$root/.venv/bin/aws" --endpoint-url "$ep" lambda get-function-configuration --function-name relay-tf-test-processor \
  --query Environment.Variables.RELAY_HMAC_KEY_PARAMETER --output text)
[[ $env_parameter == "$parameter" ]] || { echo "RELAY_HMAC_KEY_PARAMETER: $env_parameter" >&2; exit 1; }
previous=$(terraform -chdir="$work/module" output -raw hmac_previous_key_parameter)
env_previous=$("$root/.venv/bin/aws" --endpoint-url "$ep" lambda get-function-configuration --function-name relay-tf-test-processor \
  --query Environment.Variables.RELAY_HMAC_PREVIOUS_KEY_PARAMETER --output text)
[[ $previous == /relay-tf-test/hmac-key-previous && $env_previous == "$previous" ]] \
  || { echo "previous key parameter: $previous, in the environment: $env_previous" >&2; exit 1; }
value=$("$root/.venv/bin/aws" --endpoint-url "$ep" ssm get-parameter --name "$parameter" --with-decryption \
  --query Parameter.Value --output text)
[[ $value == unset:* ]] || { echo "the parameter does not hold the placeholder: $value" >&2; exit 1; }
state="$work/module/terraform.tfstate"
[[ -f $state ]] || { echo "no state at $state" >&2; exit 1; }
# The operator puts the key; a refresh must not read it into the state.
"$root/.venv/bin/aws" --endpoint-url "$ep" ssm put-parameter --name "$parameter" --type SecureString \
  --overwrite --value "operator-key-7f3e" >/dev/null
terraform -chdir="$work/module" apply -refresh-only -auto-approve >"$work/refresh.log" 2>&1 || { cat "$work/refresh.log" >&2; exit 1; }
if grep -qE 'unset: put the key|operator-key-7f3e' "$state"; then
  echo "the parameter's value is in the state (it is written write-only)" >&2
  exit 1
fi
# The shipped timings: a crashed attempt's notification is back after 150 s
# (not 6x the Lambda timeout), and the Lambda's leases last 60 s, so a FIFO
# resend lands inside SQS's 5-minute deduplication window.
notifications=$(terraform -chdir="$work/module" output -raw notification_queue_url)
vt=$("$root/.venv/bin/aws" --endpoint-url "$ep" sqs get-queue-attributes --queue-url "$notifications" \
  --attribute-names VisibilityTimeout --query Attributes.VisibilityTimeout --output text)
[[ $vt == 150 ]] || { echo "notification visibility timeout: $vt, expected 150" >&2; exit 1; }
ttl=$("$root/.venv/bin/aws" --endpoint-url "$ep" lambda get-function-configuration --function-name relay-tf-test-processor \
  --query Environment.Variables.RELAY_LEASE_TTL_SECS --output text)
[[ $ttl == 60 ]] || { echo "the Lambda's RELAY_LEASE_TTL_SECS: $ttl, expected 60" >&2; exit 1; }
# Timings that would put a FIFO resend outside the window are refused.
if terraform -chdir="$work/module" plan -var notification_visibility_timeout_secs=600 >"$work/plan.log" 2>&1; then
  echo "a FIFO module with a 600 s visibility timeout was accepted" >&2
  exit 1
fi
grep -q "deduplication window" "$work/plan.log" || { cat "$work/plan.log" >&2; exit 1; }
# An OpenTelemetry collector layer: the function carries it and sends its
# spans to it on localhost (planned only: the emulator has no ADOT layer).
layer=arn:aws:lambda:us-east-1:901920570463:layer:aws-otel-collector-amd64-ver-0-115-0:3
terraform -chdir="$work/module" plan -var otel_collector_layer_arn=$layer >"$work/plan.log" 2>&1 || { cat "$work/plan.log" >&2; exit 1; }
grep -q "\"$layer\"" "$work/plan.log" || { echo "the collector layer is not in the plan" >&2; cat "$work/plan.log" >&2; exit 1; }
grep -Eq 'OTEL_EXPORTER_OTLP_ENDPOINT"? *= *"http://localhost:4318"' "$work/plan.log" || { echo "the OTLP endpoint is not in the plan" >&2; cat "$work/plan.log" >&2; exit 1; }
if terraform -chdir="$work/module" plan -var otel_collector_layer_arn=otelcol >"$work/plan.log" 2>&1; then
  echo "a collector layer that is not an ARN was accepted" >&2
  exit 1
fi
# Offloaded records: the Lambda writes them under the payload prefix, they
# expire on their own, and the consumer policy can read (and delete) them.
large=$("$root/.venv/bin/aws" --endpoint-url "$ep" lambda get-function-configuration --function-name relay-tf-test-processor \
  --query 'Environment.Variables.[RELAY_LARGE_RECORDS,RELAY_PAYLOAD_PREFIX]' --output text)
[[ $large == "offload"$'\t'"payloads/" ]] || { echo "the Lambda's large-record settings: $large" >&2; exit 1; }
# Records over 1 MiB stream through /tmp: the default limit fits twice in
# the default /tmp, and a limit that does not is refused.
spool=$("$root/.venv/bin/aws" --endpoint-url "$ep" lambda get-function-configuration --function-name relay-tf-test-processor \
  --query '[Environment.Variables.RELAY_MAX_RECORD_BYTES,EphemeralStorage.Size]' --output text)
[[ $spool == "268435456"$'\t'"512" ]] || { echo "the Lambda's record limit and /tmp: $spool" >&2; exit 1; }
if terraform -chdir="$work/module" plan -var max_record_bytes=536870912 >"$work/plan.log" 2>&1; then
  echo "a 512 MiB record limit with a 512 MiB /tmp was accepted" >&2
  exit 1
fi
grep -q "must hold twice max_record_bytes" "$work/plan.log" || { cat "$work/plan.log" >&2; exit 1; }
# Canaries: their queue, the Lambda sends there, one missing-canary and
# one lag alarm per edge source, and the dashboard.
canary=$(terraform -chdir="$work/module" output -raw canary_queue_url)
[[ $canary == *relay-tf-test-canary ]] || { echo "unexpected canary queue: $canary" >&2; exit 1; }
cq=$("$root/.venv/bin/aws" --endpoint-url "$ep" lambda get-function-configuration --function-name relay-tf-test-processor \
  --query Environment.Variables.RELAY_CANARY_QUEUE_URL --output text)
[[ $cq == "$canary" ]] || { echo "the Lambda's RELAY_CANARY_QUEUE_URL: $cq" >&2; exit 1; }
alarms=$("$root/.venv/bin/aws" --endpoint-url "$ep" cloudwatch describe-alarms --alarm-name-prefix relay-tf-test-canary \
  --query 'MetricAlarms[].[AlarmName,TreatMissingData]' --output text | sort)
want=$'relay-tf-test-canary-lag-edge-1\tnotBreaching\nrelay-tf-test-canary-lag-edge-2\tnotBreaching\nrelay-tf-test-canary-missing-edge-1\tbreaching\nrelay-tf-test-canary-missing-edge-2\tbreaching'
[[ $alarms == "$want" ]] || { echo "canary alarms: $alarms" >&2; exit 1; }
# Every alarm the module makes, with its threshold and period, is the
# table in infra/README.md (RELAY_UPDATE_DOCS=1 rewrites it).
"$root/.venv/bin/aws" --endpoint-url "$ep" cloudwatch describe-alarms --alarm-name-prefix relay-tf-test- --output json \
  | python3 "$root/scripts/alarm_table.py" "$root/infra/README.md" relay-tf-test edge-1 edge-2
board=$(terraform -chdir="$work/module" output -raw dashboard_name)
"$root/.venv/bin/aws" --endpoint-url "$ep" cloudwatch get-dashboard --dashboard-name "$board" \
  --query DashboardBody --output text | grep -q relay_canary_lag_seconds \
  || { echo "the dashboard $board has no canary lag" >&2; exit 1; }
consumer=$(terraform -chdir="$work/module" output -raw consumer_policy_json)
for want in '"s3:GetObject"' '"s3:DeleteObject"' '/payloads/*' '"sqs:ReceiveMessage"'; do
  [[ $consumer == *"$want"* ]] || { echo "the consumer policy lacks $want: $consumer" >&2; exit 1; }
done
bucket=$(terraform -chdir="$work/module" output -raw bucket)
"$root/.venv/bin/aws" --endpoint-url "$ep" s3api get-bucket-lifecycle-configuration --bucket "$bucket" \
  --query "Rules[?ID=='payloads'].[Filter.Prefix,Expiration.Days]" --output text | grep -qx $'payloads/\t14' \
  || { echo "no 14-day lifecycle rule on payloads/" >&2; exit 1; }
# Nothing accumulates: every rule but the bucket-wide abort expires
# noncurrent versions after a day, each state folder has its rule, and
# leases' delete markers go once they are the only version left.
lifecycle=$("$root/.venv/bin/aws" --endpoint-url "$ep" s3api get-bucket-lifecycle-configuration --bucket "$bucket")
python3 - "$lifecycle" <<'PY' || exit 1
import json, sys
rules = {r["ID"]: r for r in json.loads(sys.argv[1])["Rules"]}
want = {"abort-incomplete-uploads", "raw", "payloads", "state-done", "state-leases", "state-rejects", "state-quarantine"}
missing = want - rules.keys()
assert not missing, f"lifecycle rules missing: {missing}"
for id, r in rules.items():
    if id != "abort-incomplete-uploads":
        assert r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 1, f"{id}: {r}"
        assert r["Filter"]["Prefix"], f"{id}: {r}"
assert rules["state-leases"]["Expiration"].get("ExpiredObjectDeleteMarker") is True, rules["state-leases"]
assert rules["state-leases"]["Filter"]["Prefix"] == "state/leases/", rules["state-leases"]
PY
# A payload prefix under the raw prefix is refused.
if terraform -chdir="$work/module" plan -var payload_prefix=raw/payloads/ >"$work/plan.log" 2>&1; then
  echo "a payload prefix under the raw prefix was accepted" >&2
  exit 1
fi
grep -q "must not overlap" "$work/plan.log" || { cat "$work/plan.log" >&2; exit 1; }
users=$(terraform -chdir="$work/module" output -json edge_source_user_names)
[[ $users == '{"edge-2":"relay-tf-test-edge-edge-2"}' ]] || { echo "unexpected edge users: $users" >&2; exit 1; }
# Upgrades and rollbacks: the event source mapping invokes the alias
# `live`; an apply that changes the function publishes a version and moves
# the alias to it; processor_version moves it back without a rebuild.
aws_() { "$root/.venv/bin/aws" --endpoint-url "$ep" "$@"; }
live() { aws_ lambda get-alias --function-name relay-tf-test-processor --name live --query FunctionVersion --output text; }
first=$(terraform -chdir="$work/module" output -raw processor_version)
[[ $(live) == "$first" ]] || { echo "the alias live is at $(live), not the published $first" >&2; exit 1; }
# The module names the alias; the emulator answers with the version it
# resolves to when the mapping is made (AWS keeps the alias ARN): either
# is the live one. Later moves of the alias show in get-alias alone.
esm() { aws_ lambda list-event-source-mappings --query 'EventSourceMappings[].FunctionArn' --output text; }
[[ $(esm) == *":function:relay-tf-test-processor:"@(live|$(live)) ]] || { echo "the event source mapping invokes $(esm), not the alias at $(live)" >&2; exit 1; }
terraform -chdir="$work/module" apply -auto-approve -var lease_ttl_secs=90 >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log" >&2; exit 1; }
second=$(terraform -chdir="$work/module" output -raw processor_version)
[[ $second != "$first" && $(live) == "$second" ]] || { echo "upgrade: published $second, live at $(live), was $first" >&2; exit 1; }
terraform -chdir="$work/module" apply -auto-approve -var lease_ttl_secs=90 -var processor_version="$first" >"$work/rollback.log" 2>&1 || { cat "$work/rollback.log" >&2; exit 1; }
[[ $(live) == "$first" ]] || { echo "rollback: live at $(live), not $first" >&2; exit 1; }
echo "upgrade published version $second; rollback moved live back to $first" >&2
terraform -chdir="$work/module" destroy -auto-approve >"$work/destroy.log" 2>&1 || { cat "$work/destroy.log" >&2; exit 1; }
grep -E "^Destroy complete" "$work/destroy.log" >&2
