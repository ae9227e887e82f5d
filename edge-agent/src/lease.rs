//! Whether any process holds a file open for writing: a Linux read lease,
//! taken and released at once.
//!
//! `fcntl(fd, F_SETLEASE, F_RDLCK)` on a read-only descriptor fails with
//! EAGAIN while any process on this kernel, in any container, has the file
//! open for writing. It is the one exact test of "finished" that inotify and
//! settle times cannot give: a writer that pauses for an hour still holds
//! its descriptor. The call needs the file's owner uid or CAP_LEASE (EACCES
//! otherwise), and some filesystems have no leases (EINVAL): then the settle
//! time alone decides, as it did before leases.
//!
//! No maintained crate wraps `F_SETLEASE` (rustix 1.1 and nix 0.30 to 0.32
//! do not), so [`set_lease`] is the workspace's one `unsafe` block; a test
//! fails if `unsafe` appears anywhere else.
//!
//! A writer that opens the file while the lease is held breaks it, and the
//! kernel signals the holder with SIGIO, whose default action ends the
//! process. [`Leases::enable`] installs a handler first, and a [`Leases`] is
//! the only way to take a lease, so no lease can be taken without it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

/// What a lease attempt says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No process has the file open for writing.
    Closed,
    /// Some process has it open for writing: it is not finished.
    OpenForWrite,
    /// The kernel will not lease this file; the settle time decides.
    Refused(Refusal),
}

/// Why a lease was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// EACCES: the file belongs to another user and this process lacks
    /// CAP_LEASE.
    NotOwner,
    /// EINVAL: the filesystem (or the file) does not support leases, or
    /// leases are off (`/proc/sys/fs/leases-enable`).
    Unsupported,
    /// Any other error, by its errno.
    Other(i32),
}

impl Refusal {
    /// The label value for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Self::NotOwner => "not_owner",
            Self::Unsupported => "unsupported",
            Self::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotOwner => f.write_str(
                "EACCES: the file belongs to another user and this process lacks CAP_LEASE",
            ),
            Self::Unsupported => f.write_str(
                "EINVAL: this filesystem does not support leases, or /proc/sys/fs/leases-enable is 0",
            ),
            Self::Other(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
        }
    }
}

/// What `F_SETLEASE` failing with `errno` means.
fn classify(errno: i32) -> Probe {
    match errno {
        libc::EAGAIN => Probe::OpenForWrite,
        libc::EACCES => Probe::Refused(Refusal::NotOwner),
        libc::EINVAL => Probe::Refused(Refusal::Unsupported),
        other => Probe::Refused(Refusal::Other(other)),
    }
}

/// `fcntl(fd, F_SETLEASE, kind)`, for `F_RDLCK` or `F_UNLCK`.
#[allow(unsafe_code)]
fn set_lease(fd: BorrowedFd<'_>, kind: libc::c_int) -> Result<(), i32> {
    // SAFETY: F_SETLEASE takes a descriptor and an integer and passes no
    // memory, so nothing can be read or written out of bounds. The
    // descriptor is borrowed from an open file for the whole call, so it
    // cannot be closed or reused by another thread meanwhile.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, kind) };
    if rc == -1 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// The right to take leases: SIGIO is handled, so a writer that breaks a
/// lease cannot end the process.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    _sigio_handled: (),
}

impl Leases {
    /// Installs a SIGIO handler (tokio's, which stays for the process's
    /// life) and returns the right to take leases. Call it inside a tokio
    /// runtime with signals enabled.
    pub fn enable() -> io::Result<Self> {
        // The stream itself is not needed: the handler stays installed
        // after it is dropped, and a SIGIO then only wakes nobody.
        drop(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::io(),
        )?);
        Ok(Self { _sigio_handled: () })
    }

    /// Takes a read lease on `file` (opened read-only) and releases it at
    /// once: whether anyone holds the file open for writing.
    pub fn probe(&self, file: &File) -> Probe {
        self.while_closed(file, || ()).0
    }

    /// Runs `f` while holding a read lease on `file`, if no process holds
    /// it open for writing; otherwise does not run it. While the lease is
    /// held, a writer's `open` waits until it is released, so what `f`
    /// does (remove or rename the file) cannot race a writer opening it.
    /// `f` must be quick: it delays such a writer.
    pub fn while_closed<T>(&self, file: &File, f: impl FnOnce() -> T) -> (Probe, Option<T>) {
        let fd = file.as_fd();
        if let Err(errno) = set_lease(fd, libc::F_RDLCK) {
            return (classify(errno), None);
        }
        let out = f();
        if let Err(errno) = set_lease(fd, libc::F_UNLCK) {
            // Closing the descriptor, which the caller does next, ends the
            // lease anyway.
            tracing::debug!(
                errno,
                "releasing a read lease failed; closing the file ends it"
            );
        }
        (Probe::Closed, Some(out))
    }
}

/// What the effective capabilities and uid of this process are, from
/// `/proc/self/status`: whether it may lease files it does not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub euid: u32,
    pub cap_lease: bool,
}

/// CAP_LEASE's bit in the capability sets (linux/capability.h).
const CAP_LEASE: u32 = 28;

impl Identity {
    pub fn current() -> io::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/status")?)
            .ok_or_else(|| io::Error::other("/proc/self/status has no Uid or CapEff line"))
    }

    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        // Uid: real, effective, saved, filesystem.
        let euid = field("Uid")?.split_whitespace().nth(1)?.parse().ok()?;
        let caps = u64::from_str_radix(field("CapEff")?, 16).ok()?;
        Some(Self {
            euid,
            cap_lease: caps >> CAP_LEASE & 1 == 1,
        })
    }
}

/// How the agent judges that a file is finished, decided at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Read leases work (a file in the watch directory took one), or no
    /// file was there to try and nothing says they cannot: each file is
    /// probed, and one whose lease is refused falls back to the settle time.
    Leases { tried: Option<String> },
    /// Leases were refused in the watch directory: settle time alone.
    SettleOnly { reason: String },
}

/// Tries a lease on the first regular file directly in `dir` (its
/// backlog), the way files will be judged. An empty directory proves
/// nothing: leases are assumed, and each file's own probe decides.
pub fn probe_dir(leases: &Leases, dir: &Path, open: impl Fn(&Path) -> Option<File>) -> Mode {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Mode::SettleOnly {
                reason: format!("cannot read {}: {e}", dir.display()),
            };
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Some(file) = open(&path) else { continue };
        return match leases.probe(&file) {
            Probe::Closed | Probe::OpenForWrite => Mode::Leases {
                tried: Some(path.display().to_string()),
            },
            Probe::Refused(why) => Mode::SettleOnly {
                reason: format!("a read lease on {} was refused ({why})", path.display()),
            },
        };
    }
    Mode::Leases { tried: None }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn read_only(path: &Path) -> File {
        File::open(path).unwrap()
    }

    #[tokio::test]
    async fn a_file_open_for_writing_is_not_closed_until_its_writer_closes_it() {
        let leases = Leases::enable().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.json");
        let mut writer = File::create(&path).unwrap();
        writer.write_all(b"{}\n").unwrap();
        assert_eq!(leases.probe(&read_only(&path)), Probe::OpenForWrite);
        // Another descriptor for reading changes nothing.
        let _reader = read_only(&path);
        assert_eq!(leases.probe(&read_only(&path)), Probe::OpenForWrite);
        drop(writer);
        assert_eq!(leases.probe(&read_only(&path)), Probe::Closed);
        // The lease was released: a writer can open it at once.
        let started = std::time::Instant::now();
        drop(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap(),
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// A writer that opens the file while the lease is held breaks it: the
    /// kernel signals SIGIO, which must not end the process, and the
    /// writer's open goes through once the lease is released.
    #[tokio::test]
    async fn a_writer_breaking_a_held_lease_neither_kills_the_process_nor_waits_long() {
        let leases = Leases::enable().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.json");
        std::fs::write(&path, b"{}\n").unwrap();
        let file = read_only(&path);
        let writer_path = path.clone();
        let (probe, opened) = leases.while_closed(&file, || {
            let writer = std::thread::spawn(move || {
                let started = std::time::Instant::now();
                drop(
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&writer_path)
                        .unwrap(),
                );
                started.elapsed()
            });
            // Long enough for the writer's open to reach the lease.
            std::thread::sleep(Duration::from_millis(200));
            writer
        });
        assert_eq!(probe, Probe::Closed);
        let waited = opened.unwrap().join().unwrap();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(10),
            "the writer waited {waited:?}: for the lease, and no longer"
        );
    }

    #[test]
    fn each_errno_means_one_outcome() {
        assert_eq!(classify(libc::EAGAIN), Probe::OpenForWrite);
        assert_eq!(classify(libc::EACCES), Probe::Refused(Refusal::NotOwner));
        assert_eq!(classify(libc::EINVAL), Probe::Refused(Refusal::Unsupported));
        assert_eq!(
            classify(libc::ENOLCK),
            Probe::Refused(Refusal::Other(libc::ENOLCK))
        );
    }

    #[test]
    fn identity_reads_the_effective_uid_and_cap_lease() {
        let root = "Name:\tx\nUid:\t1000\t0\t0\t0\nCapEff:\t000001ffffffffff\n";
        assert_eq!(
            Identity::parse(root),
            Some(Identity {
                euid: 0,
                cap_lease: true
            })
        );
        let lease_only = "Uid:\t999\t999\t999\t999\nCapEff:\t0000000010000000\n";
        assert!(Identity::parse(lease_only).unwrap().cap_lease);
        let none = "Uid:\t999\t999\t999\t999\nCapEff:\t0000000000000000\n";
        assert!(!Identity::parse(none).unwrap().cap_lease);
        assert_eq!(Identity::parse("Uid:\t1\n"), None);
        assert!(Identity::current().is_ok());
    }

    /// Run as a user who owns neither the file nor CAP_LEASE (the test
    /// re-runs itself under `setpriv`): the lease is refused with EACCES.
    #[tokio::test]
    async fn a_file_of_another_owner_is_refused_without_cap_lease() {
        if let Some(path) = std::env::var_os("RELAY_LEASE_TEST_FILE") {
            let leases = Leases::enable().unwrap();
            let probe = leases.probe(&read_only(Path::new(&path)));
            assert_eq!(probe, Probe::Refused(Refusal::NotOwner));
            println!("refused as expected");
            return;
        }
        let me = Identity::current().unwrap();
        if me.euid != 0 {
            // Without root, the test cannot become another user; the
            // integration tests cover a non-root agent with files of root.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root, and this test needs it"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("theirs.json");
        std::fs::write(&path, b"{}\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lease::tests::a_file_of_another_owner_is_refused_without_cap_lease",
                "--nocapture",
            ])
            .env("RELAY_LEASE_TEST_FILE", &path)
            .output()
            .expect("setpriv (util-linux) runs the test as another user");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("refused as expected"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
