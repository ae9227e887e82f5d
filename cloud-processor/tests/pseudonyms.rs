//! `hmac()` and `redact()` through the real binary (`process`): hashes agree
//! with Python's `hmac` and `hashlib` on the same key and values (escaped
//! strings, non-ASCII text, numbers, objects), and the key never appears in
//! logs at any level, `--help`, `check` or an error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// A key with non-ASCII bytes, stored with the trailing newline an editor
/// leaves (which is not part of it).
const KEY: &str = "s3cr3t-ключ-4f1a";

/// Values as written in the file, each with the text Python must hash: a
/// string's decoded text, anything else's compact text.
const VALUES: &[&str] = &[
    r#""ana@example.org""#,
    r#""ana\u0040example.org""#,
    r#""björn@例え.jp""#,
    r#""tab\there \"q\" \\ \/""#,
    r#""\ud83d\ude00 emoji""#,
    r#""""#,
    "42",
    "-1.50e3",
    "123456789012345678901234567890",
    "true",
    "null",
    r#"{"a":[1,2],"b":"x"}"#,
    r#"[ 1, {"k" : "v"} ]"#,
];

fn processor(dir: &Path, args: &[&str]) -> Command {
    let key_file = dir.join("hmac.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloud-processor"));
    cmd.env_clear()
        .env("RELAY_HMAC_KEY_FILE", &key_file)
        .env("RUST_LOG", "trace")
        .args(args);
    cmd
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// What Python computes for each value, one lowercase hex digest a line.
fn python_digests(values: &[&str]) -> Vec<String> {
    let script = r#"
import hashlib, hmac, json, sys
key = sys.argv[1].encode("utf-8")
for line in sys.stdin.read().splitlines():
    value = json.loads(line)
    if isinstance(value, str):
        msg = value.encode("utf-8")
    else:
        msg = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8") \
            if isinstance(value, (dict, list)) else line.encode("utf-8")
    print(hmac.new(key, msg, hashlib.sha256).hexdigest())
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, KEY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (it is on every machine the project builds on)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(values.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn hashes_agree_with_python_and_redacted_fields_keep_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.json");
    let records: Vec<String> = VALUES
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{{\"i\":{i},\"user\":{{\"email\":{v}}}}}"))
        .collect();
    std::fs::write(&file, format!("# preamble\n{}\n", records.join("\n"))).unwrap();
    let out = processor(
        dir.path(),
        &[
            "--fields",
            "i,uid=hmac(user.email),mail=redact(user.email)",
            "process",
            file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let got: Vec<serde_json::Value> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Python's `line` for a scalar is the value's text as written.
    let python = python_digests(VALUES);
    assert_eq!(got.len(), VALUES.len(), "{}", text(&out));
    for ((record, want), value) in got.iter().zip(&python).zip(VALUES) {
        assert_eq!(record["uid"], want.as_str(), "value {value}");
        assert_eq!(record["mail"], "[redacted]");
    }
    // The same address, escaped or not, gives the same pseudonym.
    assert_eq!(got[0]["uid"], got[1]["uid"]);
    assert!(!text(&out).contains(KEY), "the key in the output");
}

#[test]
fn old_and_new_keys_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.json");
    std::fs::write(&file, "{\"e\":\"a@b\"}\n").unwrap();
    let old_key = dir.path().join("old.key");
    std::fs::write(&old_key, "old-key").unwrap();
    let out = processor(
        dir.path(),
        &[
            "--fields",
            "u=hmac(e),u_old=hmac_previous(e)",
            "process",
            file.to_str().unwrap(),
        ],
    )
    .env("RELAY_HMAC_PREVIOUS_KEY_FILE", &old_key)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let python = |key: &str| {
        let script = "import hashlib,hmac,sys; print(hmac.new(sys.argv[1].encode(), b'a@b', hashlib.sha256).hexdigest())";
        let out = Command::new("python3")
            .args(["-c", script, key])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(record["u"], python(KEY).as_str());
    assert_eq!(record["u_old"], python("old-key").as_str());
}

#[test]
fn the_key_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.json");
    std::fs::write(&file, "{\"e\":\"a@b\"}\n{\"e\":1}\nnot json\n").unwrap();
    let fields = ["--fields", "u=hmac(e):string!"];
    let mut outputs = Vec::new();
    let process = [&fields[..], &["process", file.to_str().unwrap()]].concat();
    outputs.push(processor(dir.path(), &process).output().unwrap());
    outputs.push(processor(dir.path(), &["--help"]).output().unwrap());
    outputs.push(
        processor(dir.path(), &[&fields[..], &["process", "--help"]].concat())
            .output()
            .unwrap(),
    );
    // `check` with its sample, against an endpoint that refuses at once.
    let check = [
        &fields[..],
        &[
            "check",
            "--bucket",
            "b",
            "--output-queue-url",
            "http://127.0.0.1:9/000000000000/q",
        ],
        &["--sample", file.to_str().unwrap()],
    ]
    .concat();
    outputs.push(
        processor(dir.path(), &check)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap(),
    );
    for out in &outputs {
        let all = text(out);
        assert!(
            !all.contains(KEY) && !all.contains("s3cr3t"),
            "the key shows:\n{all}"
        );
        assert!(!all.contains("panicked"), "{all}");
    }
    let processed = text(&outputs[0]);
    assert!(
        processed.contains("field `u`: expected string, found int"),
        "{processed}"
    );
    let sample = text(&outputs[3]);
    assert!(
        sample.contains("type string: 1 pass, 1 fail"),
        "check --sample counts each rule: {sample}"
    );
}

#[test]
fn hmac_without_a_key_or_with_an_empty_one_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.json");
    std::fs::write(&file, "{\"e\":\"a@b\"}\n").unwrap();
    let run = |key: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloud-processor"));
        cmd.env_clear()
            .args(["--fields", "u=hmac(e)", "process", file.to_str().unwrap()]);
        if let Some(k) = key {
            cmd.env("RELAY_HMAC_KEY_FILE", k);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "nothing is output");
    assert!(text(&out).contains("hmac() needs a key"), "{}", text(&out));

    let empty = dir.path().join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let out = run(Some(&empty));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("empty.key is empty"), "{}", text(&out));

    let out = run(Some(&dir.path().join("absent.key")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("absent.key: cannot be read"),
        "{}",
        text(&out)
    );
}

/// `check --sample` with the key in an SSM parameter on the emulator: it
/// says the parameter is readable and hashes with it; the Terraform
/// module's placeholder and a missing parameter are refused by name.
#[tokio::test]
async fn the_key_is_read_from_an_ssm_parameter() {
    let emu = relay_shared::testing::Emulator::connect().await;
    let ssm = aws_sdk_ssm::Client::new(&emu.sdk);
    let name = format!(
        "/{}/hmac-key",
        relay_shared::testing::unique_name("relay-key")
    );
    let placeholder = format!("{name}-placeholder");
    for (n, value) in [
        (&name, KEY),
        (&placeholder, cloud_processor::HMAC_KEY_PLACEHOLDER),
    ] {
        ssm.put_parameter()
            .name(n)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.json");
    std::fs::write(&file, "{\"e\":\"a@b\"}\n").unwrap();
    let check = |parameter: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloud-processor"));
        relay_shared::testing::loopback_aws_env(&mut cmd, &emu.endpoint)
            .env("RELAY_HMAC_KEY_PARAMETER", parameter)
            // A rotation's second parameter, created but not yet used by
            // any field: it is not read, so its placeholder stops nothing.
            .env("RELAY_HMAC_PREVIOUS_KEY_PARAMETER", &placeholder)
            .env("RUST_LOG", "trace")
            .args(["--fields", "u=hmac(e)", "check", "--bucket", "absent"])
            .args([
                "--output-queue-url",
                &format!("{}/000000000000/absent", emu.endpoint),
            ])
            .args(["--sample", file.to_str().unwrap()]);
        text(&cmd.output().unwrap())
    };
    let out = check(&name);
    assert!(
        out.contains(&format!("hmac key: SSM parameter {name} is readable")),
        "{out}"
    );
    assert!(
        !out.contains("placeholder"),
        "an unused parameter is not read: {out}"
    );
    let script = "import hashlib,hmac,sys; print(hmac.new(sys.argv[1].encode(), b'a@b', hashlib.sha256).hexdigest())";
    let python = Command::new("python3")
        .args(["-c", script, KEY])
        .output()
        .unwrap();
    let want = String::from_utf8(python.stdout).unwrap();
    assert!(
        out.contains(&format!("{{\"u\":\"{}\"}}", want.trim())),
        "{out}"
    );
    assert!(!out.contains(KEY), "the key shows:\n{out}");

    let out = check(&placeholder);
    assert!(out.contains("still holds the placeholder"), "{out}");
    assert!(
        out.contains("{\"u\":\"[redacted]\"}"),
        "never in clear: {out}"
    );
    let out = check(&format!("{name}-absent"));
    assert!(out.contains("ParameterNotFound"), "{out}");
}
