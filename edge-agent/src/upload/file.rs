//! Opening a file to read it, and checking that it is still what was judged
//! finished: a regular file (never a link or special file swapped in), of
//! the size and mtime judged, held open for writing by nobody.

use std::fs::File;
use std::io;
use std::path::Path;

use super::job::Outcome;
use crate::tracker::FileStat;

pub(crate) enum Opened {
    Ready(File),
    Gone,
    NotRegular,
}

/// Opens `path` for reading only if it is a regular file, without following
/// a symlink (`O_NOFOLLOW`) and without blocking on a FIFO (`O_NONBLOCK`),
/// then checks the type of what was opened: a name swapped for a link or a
/// special file between the check and the open is never read.
pub(crate) fn open_regular(path: &Path) -> io::Result<Opened> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Opened::Gone),
        Err(rustix::io::Errno::LOOP) => return Ok(Opened::NotRegular),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(Opened::NotRegular);
    }
    Ok(Opened::Ready(File::from(fd)))
}

/// A regular file opened for a lease probe, or `None` (gone, a link, a
/// special file, unreadable).
pub(crate) fn open_for_probe(path: &Path) -> Option<File> {
    match open_regular(path) {
        Ok(Opened::Ready(f)) => Some(f),
        _ => None,
    }
}

/// Opens the file if it is still a regular file with the size and mtime it
/// was judged finished with and, if it was judged by a lease, no process
/// holds it open for writing; otherwise why not.
pub(super) fn open_expected(
    path: &Path,
    expect: FileStat,
    lease: Option<crate::lease::Leases>,
) -> io::Result<Result<File, Outcome>> {
    let file = match open_regular(path)? {
        Opened::Ready(f) => f,
        Opened::Gone => return Ok(Err(Outcome::Gone { in_s3: false })),
        Opened::NotRegular => return Ok(Err(Outcome::NotRegular)),
    };
    if FileStat::of(&file.metadata()?) != expect {
        return Ok(Err(Outcome::Changed));
    }
    if let Some(leases) = lease
        && leases.probe(&file) == crate::lease::Probe::OpenForWrite
    {
        return Ok(Err(Outcome::Open));
    }
    Ok(Ok(file))
}

/// The file must still be what was judged finished when it was opened, or
/// the bytes just compressed may not be the file's final content. A file that
/// vanished meanwhile was taken by a peer agent: the bytes read are complete
/// (an open descriptor keeps an unlinked file readable), but storing them
/// would only race the peer, so the upload stops.
pub(super) fn recheck(path: &Path, expect: FileStat) -> Option<Outcome> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && FileStat::of(&m) == expect => None,
        Ok(_) => Some(Outcome::Changed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Outcome::Gone { in_s3: false }),
        Err(_) => Some(Outcome::Changed),
    }
}
