//! `cloud-processor process`: the pipeline on local files, no AWS at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn processor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cloud-processor"));
    // No AWS settings at all: `process` must not need them.
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn process_prints_bodies_summary_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("1763800000000.json");
    std::fs::write(
        &plain,
        "# junk\n{\"id\":1,\"x\":{\"y\":2.50}}\n{\"id\":\n{\"id\":3}\n",
    )
    .unwrap();
    let packed = dir.path().join("1763800000001.json.zst");
    std::fs::write(
        &packed,
        zstd::encode_all(&b"[INFO] x\n{\"id\":4}\n"[..], 3).unwrap(),
    )
    .unwrap();

    let out = processor()
        .args(["--fields", "id,y=x.y", "process"])
        .arg(&plain)
        .arg(&packed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"id\":1,\"y\":2.50}\n{\"id\":3}\n{\"id\":4}\n"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(
            "1763800000000.json:3: offset 31 (7 bytes): the record is incomplete: the next record begins on line 4"
        ),
        "{err}"
    );
    assert!(
        err.contains("\"records_out\":2") && err.contains("\"rejected\":1"),
        "{err}"
    );

    // One file per message with --out, and a corrupt file fails with its name.
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let bad = dir.path().join("bad.json.zst");
    std::fs::write(&bad, [0x28, 0xB5, 0x2F, 0xFD, 1, 2, 3]).unwrap();
    let out = processor()
        .env("RELAY_FIELDS", "id")
        .args(["process", "--out"])
        .arg(&outdir)
        .arg(&plain)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.json.zst: cannot be read: the zstd data is corrupt"),
        "{err}"
    );
    let written = std::fs::read_to_string(outdir.join("1763800000000.json.00000.json")).unwrap();
    assert_eq!(written, "{\"id\":1}\n{\"id\":3}");
}

#[test]
fn missing_fields_config_is_a_clear_error() {
    let out = processor().args(["process", "x.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_FIELDS (--fields) is required"));
}

#[test]
fn reprocess_needs_confirmation_and_bad_instants_are_named() {
    let out = processor()
        .args([
            "replay",
            "--bucket",
            "b",
            "--notification-queue-url",
            "http://127.0.0.1:1/q",
            "--mode",
            "reprocess",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("confirm with --yes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = processor()
        .args(["audit", "--bucket", "b", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--since: \"yesterday\" is not an RFC 3339 instant")
    );
}

#[test]
fn an_inverted_time_range_is_an_error_not_an_empty_selection() {
    let out = processor()
        .args([
            "audit",
            "--bucket",
            "b",
            "--since",
            "2026-11-22T00:00:00Z",
            "--until",
            "2026-11-21T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not before --until"), "{err}");
}

#[test]
fn outside_lambda_the_default_mode_points_to_poll_and_process() {
    let out = processor().env("RELAY_FIELDS", "id").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not inside AWS Lambda") && err.contains("cloud-processor poll"),
        "{err}"
    );
}

#[test]
fn a_mistyped_field_gives_rejects_and_a_warning_not_empty_records() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("1763800000000.json");
    std::fs::write(
        &file,
        "# junk\n{\"user\":{\"id\":1}}\n{\"user\":{\"id\":2}}\n",
    )
    .unwrap();
    let out = processor()
        .args(["--fields", "uid=user.idd", "process"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.stdout.is_empty(), "nothing to send: {:?}", out.stdout);
    assert_eq!(
        stderr.matches("none of the fields uid is present").count(),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: field uid is in none of its 2 record(s)"),
        "{stderr}"
    );

    // As before, on request: the records are sent as {}.
    let out = processor()
        .args([
            "--fields",
            "uid=user.idd",
            "--empty-records",
            "send",
            "process",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{}\n{}\n");
}

#[test]
fn a_missing_out_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("1763800000000.json");
    std::fs::write(&file, "{\"id\":1}\n").unwrap();
    let missing = dir.path().join("no-such-dir");
    let out = processor()
        .args(["--fields", "id", "process", "--out"])
        .arg(&missing)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("--out {}: not a directory", missing.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_itself() {
    let out = processor().args(["completions", "bash"]).output().unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        script.contains("cloud-processor")
            && script.contains("--fields")
            && script.contains("replay"),
        "{script}"
    );
    let out = processor().arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH cloud-processor 1") && page.contains("RELAY_FIELDS"),
        "{page}"
    );
}

#[test]
fn a_subcommands_help_shows_only_the_settings_it_reads() {
    let help = |args: &[&str]| {
        let out = processor().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for args in [
        &["replay", "--help"][..],
        &["audit", "-h"],
        // The value of an option before the subcommand is not taken for it.
        &["--fields", "process", "help", "audit"],
        &["--raw-prefix", "x/", "replay", "-h"],
    ] {
        let h = help(args);
        let at = |flag: &str| h.find(flag);
        assert!(
            at("--bucket <BUCKET>").is_some() && at("--raw-prefix <RAW_PREFIX>").is_some(),
            "{args:?}: the tool's own settings: {h}"
        );
        for unused in [
            "--fields",
            "--decode-thread",
            "--max-record-bytes",
            "Data path",
        ] {
            assert!(at(unused).is_none(), "{args:?} shows {unused}: {h}");
        }
        // The raw prefix is listed with the tool's own options.
        assert!(
            at("--raw-prefix").unwrap() < at("Every mode:").unwrap(),
            "{h}"
        );
    }
    let long = help(&["help", "audit"]);
    assert!(long.contains("--older-than-mins") && long.contains("(see a summary with '-h')"));

    let process = help(&["process", "--help"]);
    for used in [
        "--max-message-bytes",
        "Data path",
        "--fields",
        "--decode-thread",
    ] {
        assert!(
            process.contains(used),
            "process --help lacks {used}: {process}"
        );
    }
    assert!(process.find("--max-message-bytes") < process.find("Data path"));
    let completions = help(&["completions", "--help"]);
    assert!(!completions.contains("--fields") && !completions.contains("--config"));
    // Hidden only from help: the settings still parse anywhere.
    let out = processor()
        .args(["--fields", "id", "process", "-", "--missing", "null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
