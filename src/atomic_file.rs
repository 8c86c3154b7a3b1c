//! Writing a file so that a crash never leaves a half-written one: write `path.tmp-<pid>`,
//! fsync, rename over `path`, fsync the folder.
//!
//! A path that already exists and is not a regular file (`/dev/null`, `/dev/stdout`, a
//! FIFO) is written in place instead: renaming over it would replace the device node with
//! a plain file (as root, `--output /dev/null` would otherwise break `/dev/null` for the
//! whole machine).

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_parts(path, std::slice::from_ref(&bytes))
}

/// [`write_atomic`] of the concatenation of `parts`.
pub fn write_atomic_parts<B: AsRef<[u8]>>(path: &Path, parts: &[B]) -> Result<()> {
    write_atomic_with(path, |w| {
        for part in parts {
            w.write_all(part.as_ref())?;
        }
        Ok(())
    })
}

/// [`write_atomic`] of what `fill` writes (through a buffer of about 1 MB), so large
/// outputs need not be assembled in memory first.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    if is_special(path) {
        return write_in_place(path, fill);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| -> Result<()> {
        let f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let mut w = std::io::BufWriter::with_capacity(BUFFER, f);
        fill(&mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} into place", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    result
}

/// Writes go to the file in pieces of this size (few system calls; fits in cache).
const BUFFER: usize = 1 << 20;

/// An existing path that is not a regular file (a device, a FIFO, a socket).
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_file() && !m.is_dir())
}

fn write_in_place(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(BUFFER, f);
    fill(&mut w)
        .and_then(|()| w.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn a_regular_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.txt");
        write_atomic(&p, b"first").unwrap();
        write_atomic_parts(&p, &[b"sec".as_slice(), b"ond".as_slice()]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    /// A FIFO stands in for `/dev/null`: it is written through and stays a FIFO.
    #[test]
    fn a_fifo_is_written_in_place_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        let kind = std::fs::metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "the FIFO was replaced by {kind:?}");
    }
}
