//! Output files (JSON, traces, PNGs, results): one rule for every path the tool writes.
//!
//! - a regular file, or a path that does not exist yet in an existing directory, is replaced
//!   atomically: a temporary file in the same directory, fsync, rename over the path (a reader
//!   sees the old or the new file, never half of one); a missing directory is an error, never
//!   created on the way (a mistyped path does not grow a tree of directories);
//! - the temporary file is created exclusively (`O_EXCL`: a file or link already at its name is
//!   never opened, so a planted link cannot redirect the write) under an unpredictable name
//!   (`.<name>.<random>.tmp`) and removed on any failure;
//! - a file the user may not write is never replaced: an existing regular file is refused when
//!   the kernel denies this user write access, and also when no one at all has a write bit on
//!   it (mode `0444` and the like): such a file is read-only by intent, even for root, who may
//!   write anything; the folder must let this user create and rename files;
//! - a symbolic link is followed: its final target is replaced that way and the link is kept;
//! - a character device or a FIFO (`/dev/null`, a terminal, a named pipe), or a path that names
//!   an open descriptor (`/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N`, whatever it points at), is
//!   written through: opened for appending and written as it is, never replaced (so
//!   `--json /dev/stdout > out.txt` keeps what was printed before the JSON);
//! - a FIFO is opened when it is checked, before the run, without waiting: one with no reader
//!   is refused then (it would block the end of the run forever); one with a reader is kept open
//!   in the [`Prepared`] output the check returns, as long as its holder keeps it (the CLI: to
//!   the end of the run), and written through that descriptor;
//! - anything else (a directory, a socket, a block device) is refused before anything is written.
//!
//! [`prepare_output`] checks a path and returns it [`Prepared`]; [`Prepared::write`] writes it
//! ([`write_output`] checks and writes at once). [`check_run`] adds the rules between the paths
//! of one run: no output may be a file the run reads or the same file as another output of it
//! (paths resolved, and device + inode compared); it returns the run's [`Outputs`].

mod run;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Access, Mode, OFlags};

pub use run::{check_run, Named, Outputs};

/// An output path that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The path is a directory.
    #[error("{} is a directory; give the path of a file to write (e.g. {})", path.display(), path.join("out.json").display())]
    IsDirectory { path: PathBuf },
    /// The path is something other than a regular file, a character device or a FIFO.
    #[error("{} is a {kind}; give the path of a regular file (or a character device or FIFO such as /dev/stdout)", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    /// A folder to write in is, or lies under, something that is not a folder.
    #[error("{} {}; give the path of a folder (it is created if missing), or move the {kind} away", path.display(), blocked(path, blocker, kind))]
    NotAFolder {
        path: PathBuf,
        blocker: PathBuf,
        kind: &'static str,
    },
    /// A new file's directory does not exist.
    #[error("cannot write {}: the folder {} does not exist; create it first or give another path", path.display(), folder.display())]
    NoFolder { path: PathBuf, folder: PathBuf },
    /// An existing file this user may not write, or that no one may (no write bit at all).
    #[error("{} is read-only (mode {mode:o}), so it is never replaced; make it writable (chmod u+w {}) or give another path", path.display(), path.display())]
    ReadOnly { path: PathBuf, mode: u32 },
    /// The folder a file is replaced or created in does not let this user create files.
    #[error("cannot write {}: this user may not create files in the folder {}; give a path in a writable folder", path.display(), folder.display())]
    FolderNotWritable { path: PathBuf, folder: PathBuf },
    /// A FIFO that no process reads: writing would wait for a reader forever.
    #[error("{} is a FIFO (named pipe) that no process is reading; the write at the end of the run would wait forever. Start its reader first (e.g. `cat {} &`) or give a file", path.display(), path.display())]
    NoReader { path: PathBuf },
    /// The output is a file the run reads.
    #[error("{} {}; writing it would destroy an input of this run. Give another path", path.display(), which_input(path, input, input_flag))]
    IsInput {
        path: PathBuf,
        input_flag: String,
        input: PathBuf,
    },
    /// The output is the same file as another output of the run.
    #[error("{} is the same file as {other_flag} {}; one output would replace the other. Give each output its own path", path.display(), other.display())]
    SameOutput {
        path: PathBuf,
        other_flag: String,
        other: PathBuf,
    },
    /// Any of the above, with the flag that named the path.
    #[error("{flag}: {source}")]
    Flag {
        flag: String,
        #[source]
        source: Box<OutputError>,
    },
    /// Reading the path's kind, or writing, failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `is the file --data reads`, or `is model/manifest.json, the file --model reads` when the
/// output was named otherwise.
fn which_input(path: &Path, input: &Path, flag: &str) -> String {
    if path == input {
        format!("is the file {flag} reads")
    } else {
        format!("is {}, the file {flag} reads", input.display())
    }
}

/// `is a file, not a folder`, or `cannot be created: x is a file, not a folder` when what is in
/// the way is an ancestor of `path`.
pub fn blocked(path: &Path, blocker: &Path, kind: &str) -> String {
    if path == blocker {
        format!("is a {kind}, not a folder")
    } else {
        format!(
            "cannot be created as a folder: {} is a {kind}, not a folder",
            blocker.display()
        )
    }
}

/// A file kind in words: `file`, `FIFO`, `socket`, ...
pub fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "folder"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// What stands in the way of folder `dir`: itself, or the nearest of its ancestors that exists,
/// when that is not a folder (then `dir` can neither be used nor created as a folder), with its
/// kind; `None` when the way is clear.
pub fn blocks_folder(dir: &Path) -> Option<(PathBuf, &'static str)> {
    let mut p = dir;
    loop {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return None,
            Ok(m) => return Some((p.to_path_buf(), kind_of(m.file_type()))),
            Err(_) => p = p.parent().filter(|q| !q.as_os_str().is_empty())?,
        }
    }
}

/// Refuses a folder to write pictures or files in that is, or lies under, something else than a
/// folder (a missing folder is fine: it is created).
pub fn check_folder(dir: &Path) -> Result<(), OutputError> {
    match blocks_folder(dir) {
        None => Ok(()),
        Some((blocker, kind)) => Err(OutputError::NotAFolder {
            path: dir.to_path_buf(),
            blocker,
            kind,
        }),
    }
}

impl OutputError {
    /// The error, naming the flag that gave the path (`--json: ...`).
    pub fn flag(self, flag: &str) -> OutputError {
        OutputError::Flag {
            flag: flag.to_string(),
            source: Box::new(self),
        }
    }
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

/// A file's identity on its filesystem (device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The identity of the regular file at `path` itself (a link is not followed); `None` when
    /// nothing is there or it is not a regular file.
    pub fn at(path: &Path) -> Option<FileId> {
        std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| FileId::of(&m))
    }
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

/// Refuses a file `target` (the resolved path of `path`) that may not be replaced: an existing
/// file this user may not write or that has no write bit at all, or a folder this user may not
/// create files in.
fn check_replaceable(path: &Path, target: &Path) -> Result<(), OutputError> {
    if let Ok(meta) = std::fs::symlink_metadata(target) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o222 == 0 || rustix::fs::access(target, Access::WRITE_OK).is_err() {
            return Err(OutputError::ReadOnly {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let folder = parent(target);
    if rustix::fs::access(folder, Access::WRITE_OK | Access::EXEC_OK).is_err() {
        return Err(OutputError::FolderNotWritable {
            path: path.to_path_buf(),
            folder: folder.to_path_buf(),
        });
    }
    Ok(())
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// The FIFO at `path` opened for writing, without waiting for a reader: refused when it has
/// none. The descriptor blocks again once open.
fn open_fifo(path: &Path) -> Result<File, OutputError> {
    let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::NXIO => OutputError::NoReader {
            path: path.to_path_buf(),
        },
        e => io_error(path)(e.into()),
    })?;
    let blocking = || -> rustix::io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
    };
    blocking().map_err(|e| io_error(path)(e.into()))?;
    Ok(File::from(fd))
}

/// An output path checked before the run and ready to be written: a FIFO is already open (its
/// reader found at the check is the one written to; closing the FIFO between the check and the
/// write would end that reader's input), and stays open while any clone of this value lives.
#[derive(Debug, Clone)]
pub struct Prepared {
    path: PathBuf,
    fifo: Option<Arc<File>>,
}

/// Checks `path` by the module's rules, before any work is done: nothing is created or changed;
/// a FIFO is opened and kept in the returned value for the write.
pub fn prepare_output(path: &Path) -> Result<Prepared, OutputError> {
    let fifo = match destination(path)? {
        Destination::WriteThrough(p) if is_fifo(&p) => Some(Arc::new(open_fifo(&p)?)),
        Destination::WriteThrough(_) => None,
        Destination::Replace(target) => {
            check_replaceable(path, &target)?;
            None
        }
    };
    Ok(Prepared {
        path: path.to_path_buf(),
        fifo,
    })
}

impl Prepared {
    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` by the module's rules: a FIFO through the descriptor opened at the check,
    /// anything else as [`write_output`] does. Errors name the path as given.
    pub fn write(&self, bytes: &[u8]) -> Result<(), OutputError> {
        match &self.fifo {
            Some(f) => write_through(&self.path, f, bytes),
            None => write_output(&self.path, bytes),
        }
    }
}

/// Where an output goes: a path, checked when it is about to be written, or an output prepared
/// before the run.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    /// A path, as given.
    Path(&'a Path),
    /// An output checked already (a FIFO open).
    Prepared(Prepared),
}

impl Target<'_> {
    /// The path as given.
    pub fn path(&self) -> &Path {
        match self {
            Target::Path(p) => p,
            Target::Prepared(p) => p.path(),
        }
    }

    /// The output ready to be written: a path is checked now ([`prepare_output`]).
    pub fn prepare(self) -> Result<Prepared, OutputError> {
        match self {
            Target::Path(p) => prepare_output(p),
            Target::Prepared(p) => Ok(p),
        }
    }

    /// Writes `bytes`: a path by [`write_output`], a prepared output by [`Prepared::write`].
    pub fn write(&self, bytes: &[u8]) -> Result<(), OutputError> {
        match self {
            Target::Path(p) => write_output(p, bytes),
            Target::Prepared(p) => p.write(bytes),
        }
    }
}

impl<'a> From<&'a Path> for Target<'a> {
    fn from(path: &'a Path) -> Target<'a> {
        Target::Path(path)
    }
}

impl<'a> From<&'a PathBuf> for Target<'a> {
    fn from(path: &'a PathBuf) -> Target<'a> {
        Target::Path(path)
    }
}

impl From<Prepared> for Target<'_> {
    fn from(prepared: Prepared) -> Self {
        Target::Prepared(prepared)
    }
}

/// Refuses an output path that cannot be written, before any work is done: nothing is created
/// or changed (a FIFO is opened to find its reader, then closed; [`prepare_output`] keeps it).
pub fn check_output(path: &Path) -> Result<(), OutputError> {
    prepare_output(path).map(drop)
}

/// Writes `bytes` through the open file `f` (`path` as given, for errors).
fn write_through(path: &Path, mut f: &File, bytes: &[u8]) -> Result<(), OutputError> {
    f.write_all(bytes)
        .and_then(|()| f.flush())
        .map_err(io_error(path))
}

/// Checks `path` and writes `bytes` to it by the module's rules (a FIFO is opened now, and
/// refused when no process reads it). Errors name `path` as given.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    match destination(path)? {
        Destination::WriteThrough(p) if is_fifo(&p) => write_through(path, &open_fifo(&p)?, bytes),
        Destination::WriteThrough(p) => {
            let f = OpenOptions::new()
                .append(true)
                .open(&p)
                .map_err(io_error(path))?;
            write_through(path, &f, bytes)
        }
        Destination::Replace(target) => {
            check_replaceable(path, &target)?;
            replace_file(&target, bytes)
                .map(drop)
                .map_err(io_error(path))
        }
    }
}

/// Replaces the file at `path` itself (a link there is replaced, never followed) with `bytes`:
/// a temporary file created exclusively under an unpredictable name in the same directory,
/// fsync, rename over `path`, then (best effort) fsync of the directory. An existing file's
/// permissions are kept. The temporary file never outlives a failure. Returns the new file's
/// identity.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<FileId> {
    let dir = parent(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .rand_bytes(12)
        // a new file gets what the umask leaves of rw-rw-rw-, as a plain create would give
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    if let Ok(old) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(old.permissions())?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let id = FileId::of(&tmp.as_file().metadata()?);
    // on failure the temporary file is dropped, which removes it
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename durable; not every platform can open a directory, so best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(id)
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

    /// Links planted at every name the old writer used for its temporary file (`.<name>.tmp-<pid>`)
    /// and at likely others: the write never goes through them.
    #[test]
    fn a_planted_link_at_a_temporary_name_never_redirects_the_write() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let out = d.path().join("out.json");
        let pid = std::process::id();
        let planted: Vec<PathBuf> = [
            format!(".out.json.tmp-{pid}"),
            format!(".out.json.tmp-{}", pid + 1),
            ".out.json.tmp".to_string(),
        ]
        .iter()
        .map(|n| d.path().join(n))
        .collect();
        for p in &planted {
            std::os::unix::fs::symlink(&victim, p).unwrap();
        }
        for round in ["first", "second"] {
            write_output(&out, round.as_bytes()).unwrap();
            assert_eq!(std::fs::read_to_string(&out).unwrap(), round);
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            2 + planted.len(),
            "a temporary file left: {names:?}"
        );
        for p in &planted {
            assert!(std::fs::symlink_metadata(p)
                .unwrap()
                .file_type()
                .is_symlink());
        }
    }

    #[test]
    fn a_read_only_file_is_never_replaced() {
        let d = tempfile::tempdir().unwrap();
        let ro = d.path().join("ro.json");
        std::fs::write(&ro, "keep").unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
        let link = d.path().join("link.json");
        std::os::unix::fs::symlink("ro.json", &link).unwrap();
        for p in [&ro, &link] {
            let e = check_output(p).unwrap_err().to_string();
            assert!(e.contains("read-only (mode 444)"), "{e}");
            assert!(write_output(p, b"new").is_err());
        }
        assert_eq!(std::fs::read_to_string(&ro).unwrap(), "keep");
        // a writable file keeps its mode when replaced
        let rw = d.path().join("rw.json");
        std::fs::write(&rw, "old").unwrap();
        std::fs::set_permissions(&rw, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_output(&rw, b"new").unwrap();
        let mode = std::fs::metadata(&rw).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn a_fifo_without_a_reader_is_refused_at_once_and_one_with_a_reader_is_written() {
        use std::io::Read;
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        mkfifo(&fifo);
        for e in [check_output(&fifo), write_output(&fifo, b"x")] {
            let e = e.unwrap_err().to_string();
            assert!(e.contains("no process is reading"), "{e}");
        }
        // a reader (opened without waiting for a writer), then the check holds the FIFO open
        let reader = rustix::fs::open(&fifo, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
            .map(File::from)
            .unwrap();
        check_output(&fifo).unwrap();
        write_output(&fifo, b"hello ").unwrap();
        write_output(&fifo, b"world").unwrap();
        let mut got = [0u8; 11];
        (&reader).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[test]
    fn png_bytes_start_with_the_signature() {
        let png = encode_png(&[255u8; 2 * 3 * 3], 2, 3).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
