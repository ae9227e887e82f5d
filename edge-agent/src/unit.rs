//! The systemd unit the agent runs under, as `check --unit` reads it: its
//! user, its environment files, and the sandbox that decides which paths
//! the service can see and write. A check run from a root shell sees none
//! of that, so it passed where the service failed; this module re-runs the
//! check as the unit's user with the unit's environment, and holds the
//! configured paths against the unit's sandbox.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use relay_shared::check::Finding;

use crate::config::{Config, OnSuccess};

/// What of a unit decides whether the agent can work under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// Where it was read from (the unit, then its drop-ins in order).
    pub files: Vec<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `EnvironmentFile=` entries: the path, and whether it may be missing.
    pub environment_files: Vec<(PathBuf, bool)>,
    pub read_write_paths: Vec<PathBuf>,
    /// `StateDirectory=` names, under /var/lib.
    pub state_directories: Vec<String>,
    pub protect_system: Option<String>,
    pub protect_home: Option<String>,
    pub private_tmp: bool,
    /// `AmbientCapabilities=`, lower case without `cap_` (setpriv's names).
    pub ambient_capabilities: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("reading the unit {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the unit's environment file {path}: {source}")]
    Environment {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Unit {
    /// Reads the unit at `path` and its drop-ins (`<path>.d/*.conf`, and
    /// those `systemctl edit` writes under /etc/systemd/system), in the
    /// order systemd applies them.
    pub fn read(path: &Path) -> Result<Self, UnitError> {
        let mut unit = Self::default();
        let mut files = vec![path.to_owned()];
        files.extend(drop_ins(path));
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| UnitError::Read {
                path: file.clone(),
                source,
            })?;
            unit.apply(&text);
            unit.files.push(file);
        }
        Ok(unit)
    }

    /// Applies one file's `[Service]` settings over what came before: a
    /// list setting grows, and an empty assignment resets it.
    pub fn apply(&mut self, text: &str) {
        let mut in_service = false;
        for line in logical_lines(text) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if in_service {
                self.set(key.trim(), value.trim());
            }
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        let words = || value.split_whitespace();
        match key {
            "User" => self.user = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "Group" => self.group = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "EnvironmentFile" if value.is_empty() => self.environment_files.clear(),
            "EnvironmentFile" => {
                let optional = value.starts_with('-');
                let path = PathBuf::from(value.trim_start_matches('-'));
                self.environment_files.push((path, optional));
            }
            "ReadWritePaths" if value.is_empty() => self.read_write_paths.clear(),
            "ReadWritePaths" => self
                .read_write_paths
                .extend(words().map(|w| PathBuf::from(w.trim_start_matches(['-', '+'])))),
            "StateDirectory" if value.is_empty() => self.state_directories.clear(),
            "StateDirectory" => self
                .state_directories
                .extend(words().map(|w| w.split(':').next().unwrap_or(w).to_owned())),
            "ProtectSystem" => self.protect_system = Some(value.to_owned()),
            "ProtectHome" => self.protect_home = Some(value.to_owned()),
            "PrivateTmp" => self.private_tmp = is_true(value),
            "AmbientCapabilities" if value.is_empty() => self.ambient_capabilities.clear(),
            "AmbientCapabilities" => self.ambient_capabilities.extend(
                words().map(|w| w.to_ascii_lowercase().trim_start_matches("cap_").to_owned()),
            ),
            _ => {}
        }
    }

    /// The variables the unit's environment files set, later files winning.
    pub fn environment(&self) -> Result<Vec<(String, String)>, UnitError> {
        let mut vars = BTreeMap::new();
        for (path, optional) in &self.environment_files {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(UnitError::Environment {
                        path: path.clone(),
                        source,
                    });
                }
            };
            vars.extend(environment_file(&text));
        }
        Ok(vars.into_iter().collect())
    }

    /// Directories the service may write: all of them unless
    /// `ProtectSystem=strict`, else its `ReadWritePaths=` and state
    /// directories. `None` means "anything the user may write".
    fn writable_paths(&self) -> Option<Vec<PathBuf>> {
        if self.protect_system.as_deref() != Some("strict") {
            return None;
        }
        let state = self
            .state_directories
            .iter()
            .map(|d| Path::new("/var/lib").join(d));
        Some(self.read_write_paths.iter().cloned().chain(state).collect())
    }

    /// Why the service cannot see `path` at all, if it cannot.
    fn hidden(&self, path: &Path) -> Option<String> {
        let home = ["/home", "/root", "/run/user"];
        let protect_home = self.protect_home.as_deref().unwrap_or("no");
        if protect_home != "no"
            && protect_home != "false"
            && home.iter().any(|h| path.starts_with(h))
        {
            return Some(format!(
                "ProtectHome={protect_home} hides /home, /root and /run/user from the service"
            ));
        }
        if self.private_tmp && (path.starts_with("/tmp") || path.starts_with("/var/tmp")) {
            return Some(
                "PrivateTmp=true gives the service a /tmp and /var/tmp of its own, empty".into(),
            );
        }
        None
    }

    /// The unit's name, for `systemctl edit <name>`.
    fn name(&self) -> String {
        self.files
            .first()
            .and_then(|f| f.file_stem())
            .map_or_else(|| "relay-edge-agent".into(), |s| s.to_string_lossy().into())
    }
}

fn is_true(value: &str) -> bool {
    matches!(value, "yes" | "true" | "on" | "1")
}

/// Lines with systemd's trailing-backslash continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        match line.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An environment file's `KEY=VALUE` lines, as systemd reads them: comments
/// and blank lines skipped, one pair of surrounding quotes removed.
fn environment_file(text: &str) -> Vec<(String, String)> {
    logical_lines(text)
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)));
            (k.trim().to_owned(), unquoted.unwrap_or(v).to_owned())
        })
        .collect()
}

/// Drop-ins for the unit at `path`, ordered by file name as systemd orders
/// them (a later one overrides an earlier one).
fn drop_ins(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    let mut dirs = vec![PathBuf::from(format!("{}.d", path.display()))];
    let etc = Path::new("/etc/systemd/system").join(format!("{}.d", name.to_string_lossy()));
    if !dirs.contains(&etc) {
        dirs.push(etc);
    }
    let mut found: BTreeMap<OsString, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "conf") {
                found.insert(e.file_name(), p);
            }
        }
    }
    found.into_values().collect()
}

/// The command that re-runs `check` as the unit would run the agent: as
/// its user and group with its ambient capabilities (through `setpriv`,
/// when this process is root), with only its environment files' variables
/// and a PATH, and with `--inside-unit` so that it checks the sandbox.
pub fn rerun(unit: &Unit, unit_path: &Path, exe: &Path, root: bool) -> Result<Command, UnitError> {
    let user = unit.user.as_deref().filter(|_| root);
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={user}"))
                .arg(format!("--regid={}", unit.group.as_deref().unwrap_or(user)))
                .arg("--init-groups");
            if !unit.ambient_capabilities.is_empty() {
                let caps = unit.ambient_capabilities.iter().map(|c| format!("+{c}"));
                let caps = caps.collect::<Vec<_>>().join(",");
                c.arg(format!("--inh-caps={caps}"))
                    .arg(format!("--ambient-caps={caps}"));
            }
            c.arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.arg("check")
        .arg("--unit")
        .arg(unit_path)
        .arg("--inside-unit")
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .envs(unit.environment()?);
    Ok(cmd)
}

/// The PATH systemd gives a service.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Said before the re-run's lines when it cannot switch to the unit's user.
pub fn not_as_user(unit: &Unit, root: bool) -> Option<Finding> {
    let user = unit.user.as_ref()?;
    (!root).then(|| {
        Finding::warn(format!(
            "unit user: the unit runs as {user}, but only root can check as another user: the \
             permission lines below are this user's; run the check with sudo"
        ))
    })
}

/// A path the agent uses: what it is, where, and whether it writes there.
#[derive(Debug, Clone, Copy)]
pub struct Used<'a> {
    pub what: &'static str,
    pub path: &'a Path,
    pub writes: bool,
}

/// The paths `config` makes the agent use.
pub fn used_paths(config: &Config) -> Vec<Used<'_>> {
    let removes = !matches!(config.on_success, OnSuccess::Keep);
    let mut used = vec![Used {
        what: "watch directory",
        path: &config.watch_dir,
        writes: removes,
    }];
    if let OnSuccess::Move(target) = &config.on_success {
        used.push(Used {
            what: "move target",
            path: target,
            writes: true,
        });
    }
    used.push(Used {
        what: "state directory",
        path: &config.state_dir,
        writes: true,
    });
    used
}

/// The paths the agent uses held against the unit's sandbox: each must be
/// visible to the service, and writable where the agent writes.
pub fn findings(unit: &Unit, used: &[Used<'_>]) -> Vec<Finding> {
    used.iter().map(|u| sandboxed(unit, u)).collect()
}

fn sandboxed(unit: &Unit, used: &Used<'_>) -> Finding {
    let Used { what, path, writes } = *used;
    let (shown, name) = (path.display(), unit.name());
    if let Some(why) = unit.hidden(path) {
        return Finding::fail(format!(
            "unit sandbox: {what} {shown} is invisible to the service: {why}; move it, or change \
             that setting with `systemctl edit {name}`"
        ));
    }
    let writable = unit.writable_paths();
    match writable {
        Some(allowed) if writes && !allowed.iter().any(|a| path.starts_with(a)) => {
            Finding::fail(format!(
                "unit sandbox: {what} {shown} must be writable, but ProtectSystem=strict makes it \
                 read-only: the unit may write only {}; add `ReadWritePaths={shown}` with \
                 `systemctl edit {name}`",
                list(&allowed)
            ))
        }
        _ if writes => Finding::ok(format!(
            "unit sandbox: {what} {shown}: writable by the service"
        )),
        _ => Finding::ok(format!(
            "unit sandbox: {what} {shown}: visible to the service"
        )),
    }
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGED: &str = include_str!("../packaging/relay-edge-agent.service");
    const PACKAGED_ENV: &str = include_str!("../packaging/edge-agent.env");

    fn packaged() -> Unit {
        let mut unit = Unit {
            files: vec!["/usr/lib/systemd/system/relay-edge-agent.service".into()],
            ..Unit::default()
        };
        unit.apply(PACKAGED);
        unit
    }

    /// The packaged env file's setting for `key`.
    fn env(key: &str) -> String {
        let vars = environment_file(PACKAGED_ENV);
        vars.into_iter().find(|(k, _)| k == key).unwrap().1
    }

    fn used<'a>(watch: &'a Path, state: &'a Path, removes: bool) -> Vec<Used<'a>> {
        vec![
            Used {
                what: "watch directory",
                path: watch,
                writes: removes,
            },
            Used {
                what: "state directory",
                path: state,
                writes: true,
            },
        ]
    }

    fn verdicts(unit: &Unit, watch: &str, state: &str, removes: bool) -> Vec<Finding> {
        findings(unit, &used(Path::new(watch), Path::new(state), removes))
    }

    fn fails(found: &[Finding]) -> Vec<&str> {
        found
            .iter()
            .filter(|f| f.verdict == relay_shared::check::Verdict::Fail)
            .map(|f| f.line.as_str())
            .collect()
    }

    #[test]
    fn the_packaged_unit_is_read_as_systemd_reads_it() {
        let unit = packaged();
        assert_eq!(unit.user.as_deref(), Some("relay"));
        assert_eq!(unit.group.as_deref(), Some("relay"));
        assert_eq!(
            unit.environment_files,
            [(PathBuf::from("/etc/relay/edge-agent.env"), false)]
        );
        assert_eq!(
            unit.read_write_paths,
            [PathBuf::from("/var/lib/edge-container/out")]
        );
        assert_eq!(unit.state_directories, ["relay-edge-agent"]);
        assert_eq!(unit.protect_system.as_deref(), Some("strict"));
        assert_eq!(unit.protect_home.as_deref(), Some("true"));
        assert!(unit.private_tmp);
        assert_eq!(unit.ambient_capabilities, ["lease"]);
    }

    /// The packaged defaults work under the packaged unit: the env file's
    /// watch directory (deleted from) and state directory are writable.
    #[test]
    fn the_packaged_defaults_pass_under_the_packaged_unit() {
        assert_eq!(env("RELAY_ON_SUCCESS"), "delete");
        let found = verdicts(
            &packaged(),
            &env("RELAY_WATCH_DIR"),
            &env("RELAY_STATE_DIR"),
            true,
        );
        assert!(fails(&found).is_empty(), "{found:?}");
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn paths_the_sandbox_hides_or_keeps_read_only_fail_and_say_how_to_fix_them() {
        let unit = packaged();
        let state = "/var/lib/relay-edge-agent";
        let elsewhere = verdicts(&unit, "/srv/out", state, true);
        let [line] = fails(&elsewhere)[..] else {
            panic!("{elsewhere:?}")
        };
        assert!(
            line.contains("/srv/out")
                && line.contains("ReadWritePaths=/srv/out")
                && line.contains("systemctl edit relay-edge-agent")
                && line.contains("/var/lib/edge-container/out, /var/lib/relay-edge-agent"),
            "{line}"
        );
        // Kept files are only read: a read-only path is fine.
        assert!(fails(&verdicts(&unit, "/srv/out", state, false)).is_empty());
        let home = verdicts(&unit, "/home/app/out", state, false);
        assert!(fails(&home)[0].contains("ProtectHome=true"), "{home:?}");
        let tmp = verdicts(&unit, "/tmp/out", state, false);
        assert!(fails(&tmp)[0].contains("PrivateTmp=true"), "{tmp:?}");
        let state_elsewhere = verdicts(&unit, "/var/lib/edge-container/out", "/opt/s", true);
        assert!(
            fails(&state_elsewhere)[0].contains("state directory /opt/s"),
            "{state_elsewhere:?}"
        );
    }

    /// `systemctl edit` writes a drop-in: its paths add to the unit's, and
    /// an empty assignment first resets them.
    #[test]
    fn drop_ins_add_to_or_reset_the_units_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-edge-agent.service");
        std::fs::write(&path, PACKAGED).unwrap();
        let drop_ins = dir.path().join("relay-edge-agent.service.d");
        std::fs::create_dir(&drop_ins).unwrap();
        std::fs::write(
            drop_ins.join("20-reset.conf"),
            "[Service]\nReadWritePaths=\nReadWritePaths=/srv/b \\\n  -/srv/c\n",
        )
        .unwrap();
        std::fs::write(
            drop_ins.join("10-add.conf"),
            "[Service]\nReadWritePaths=/srv/a\n",
        )
        .unwrap();
        let unit = Unit::read(&path).unwrap();
        assert_eq!(unit.files.len(), 3, "{:?}", unit.files);
        assert_eq!(
            unit.read_write_paths,
            [PathBuf::from("/srv/b"), "/srv/c".into()]
        );
        let state = "/var/lib/relay-edge-agent";
        assert!(fails(&verdicts(&unit, "/srv/c/out", state, true)).is_empty());
        assert_eq!(fails(&verdicts(&unit, "/srv/a", state, true)).len(), 1);
    }

    /// As root, the check re-runs through setpriv as the unit's user and
    /// group with its ambient capabilities, with only its environment.
    #[test]
    fn the_rerun_takes_the_units_user_capabilities_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("agent.env");
        std::fs::write(
            &env_file,
            "# c\nRELAY_BUCKET=\"b\"\nAWS_REGION=eu-central-1\n",
        )
        .unwrap();
        let mut unit = packaged();
        unit.environment_files = vec![(env_file, false), (dir.path().join("none"), true)];
        let path = Path::new("/u/relay-edge-agent.service");
        let cmd = rerun(&unit, path, Path::new("/usr/bin/edge-agent"), true).unwrap();
        assert_eq!(cmd.get_program(), "setpriv");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "--reuid=relay",
                "--regid=relay",
                "--init-groups",
                "--inh-caps=+lease",
                "--ambient-caps=+lease",
                "/usr/bin/edge-agent",
                "check",
                "--unit",
                "/u/relay-edge-agent.service",
                "--inside-unit"
            ]
        );
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.unwrap().to_string_lossy()))
            .collect();
        assert_eq!(
            envs,
            [
                "AWS_REGION=eu-central-1",
                &format!("PATH={SERVICE_PATH}"),
                "RELAY_BUCKET=b"
            ]
        );
        // Not root: the same check, as this user, said so first.
        let plain = rerun(&unit, path, Path::new("/usr/bin/edge-agent"), false).unwrap();
        assert_eq!(plain.get_program(), "/usr/bin/edge-agent");
        assert!(not_as_user(&unit, false).is_some() && not_as_user(&unit, true).is_none());
        // A missing environment file that is not optional is an error naming it.
        unit.environment_files = vec![(dir.path().join("gone.env"), false)];
        let err = rerun(&unit, path, Path::new("x"), true).unwrap_err();
        assert!(err.to_string().contains("gone.env"), "{err}");
    }
}
