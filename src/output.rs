//! Output files (JSON, traces, PNGs, results): one rule for every path the tool writes.
//!
//! - a regular file, or a path that does not exist yet in an existing directory, is replaced
//!   atomically: a temporary file in the same directory, fsync, rename over the path (a reader
//!   sees the old or the new file, never half of one); a missing directory is an error, never
//!   created on the way (a mistyped path does not grow a tree of directories);
//! - a symbolic link is followed: its final target is replaced that way and the link is kept;
//! - a character device or a FIFO (`/dev/null`, a terminal, a named pipe), or a path that names
//!   an open descriptor (`/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N`, whatever it points at), is
//!   written through: opened for appending and written as it is, never replaced (so
//!   `--json /dev/stdout > out.txt` keeps what was printed before the JSON);
//! - anything else (a directory, a socket, a block device) is refused before anything is written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// An output path that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The path is a directory.
    #[error("{} is a directory; give the path of a file to write (e.g. {})", path.display(), path.join("out.json").display())]
    IsDirectory { path: PathBuf },
    /// The path is something other than a regular file, a character device or a FIFO.
    #[error("{} is a {kind}; give the path of a regular file (or a character device or FIFO such as /dev/stdout)", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    /// A new file's directory does not exist.
    #[error("cannot write {}: the folder {} does not exist; create it first or give another path", path.display(), folder.display())]
    NoFolder { path: PathBuf, folder: PathBuf },
    /// Reading the path's kind, or writing, failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How an output path is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A regular file or a new path (symbolic links resolved): a temporary file beside it is
    /// renamed over it.
    Replace(PathBuf),
    /// A character device, a FIFO or an open descriptor: opened for appending and written as it is.
    WriteThrough(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory a path is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Follows the symbolic links of a path that does not resolve to anything (a new file, or a
/// dangling link): the path a new file must be created at.
fn follow_dangling(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)?;
                // a relative target is relative to the link's directory; an absolute one replaces it
                p = match p.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// Whether `path`, or a link on its way, names an open file descriptor (`/dev/stdout` ->
/// `/proc/self/fd/1`, `/dev/fd/N`, `/proc/<pid>/fd/N`).
fn names_open_descriptor(path: &Path) -> bool {
    let is_fd = |p: &Path| {
        p.starts_with("/dev/fd")
            || (p.starts_with("/proc") && p.components().any(|c| c.as_os_str() == "fd"))
    };
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        if is_fd(&p) {
            return true;
        }
        match std::fs::read_link(&p) {
            Ok(target) => {
                p = match p.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Where and how `path` is written, or why it cannot be (see the module's rules). Nothing is
/// created or changed.
pub fn destination(path: &Path) -> Result<Destination, OutputError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let target = follow_dangling(path).map_err(io_error(path))?;
            let folder = parent(&target);
            if !folder.is_dir() {
                return Err(OutputError::NoFolder {
                    path: path.to_path_buf(),
                    folder: folder.to_path_buf(),
                });
            }
            return Ok(Destination::Replace(target));
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    let t = meta.file_type();
    let refuse = |kind| {
        Err(OutputError::NotAFile {
            path: path.to_path_buf(),
            kind,
        })
    };
    if t.is_char_device() || t.is_fifo() || (t.is_file() && names_open_descriptor(path)) {
        Ok(Destination::WriteThrough(path.to_path_buf()))
    } else if t.is_file() {
        Ok(Destination::Replace(
            std::fs::canonicalize(path).map_err(io_error(path))?,
        ))
    } else if t.is_dir() {
        Err(OutputError::IsDirectory {
            path: path.to_path_buf(),
        })
    } else if t.is_block_device() {
        refuse("block device")
    } else if t.is_socket() {
        refuse("socket")
    } else {
        refuse("file of an unknown kind")
    }
}

/// Refuses an output path that cannot be written, before any work is done (nothing is created).
pub fn check_output(path: &Path) -> Result<(), OutputError> {
    destination(path).map(drop)
}

/// Writes `bytes` to `path` by the module's rules. Errors name `path` as given.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    match destination(path)? {
        Destination::WriteThrough(p) => {
            let write = || -> std::io::Result<()> {
                let mut f = OpenOptions::new().append(true).open(&p)?;
                f.write_all(bytes)?;
                f.flush()
            };
            write().map_err(io_error(path))
        }
        Destination::Replace(p) => replace(&p, bytes).map_err(io_error(path)),
    }
}

/// Temporary file in the same directory, fsync, rename over `path`, then (best effort) fsync of
/// the directory. An existing file's permissions are kept. The temporary file never outlives a
/// failure.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        if let Ok(old) = std::fs::metadata(path) {
            f.set_permissions(old.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename durable; not every platform can open a directory, so best effort.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// An RGB buffer (`[height, width, 3]`, row-major) as PNG bytes.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, width, height, image::ColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_paths() {
        let d = tempfile::tempdir().unwrap();
        let new = d.path().join("new.json");
        assert_eq!(
            destination(&new).unwrap(),
            Destination::Replace(new.clone())
        );
        assert!(matches!(
            destination(d.path()),
            Err(OutputError::IsDirectory { .. })
        ));
        assert_eq!(
            destination(Path::new("/dev/null")).unwrap(),
            Destination::WriteThrough("/dev/null".into())
        );
        // a dangling relative link: the file is created at its target
        let link = d.path().join("link.json");
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("sub/target.json", &link).unwrap();
        assert_eq!(
            destination(&link).unwrap(),
            Destination::Replace(d.path().join("sub/target.json"))
        );
        // a missing folder is named, never created
        let e = destination(&d.path().join("no/such/x.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the folder") && e.contains("no/such"), "{e}");
        assert!(!d.path().join("no").exists());
        // a bare file name is in the current directory
        assert!(destination(Path::new("h2o-output-test-new.json")).is_ok());
        // a socket is refused
        let sock = d.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = destination(&sock).unwrap_err().to_string();
        assert!(e.contains("is a socket"), "{e}");
    }

    #[test]
    fn png_bytes_start_with_the_signature() {
        let png = encode_png(&[255u8; 2 * 3 * 3], 2, 3).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
