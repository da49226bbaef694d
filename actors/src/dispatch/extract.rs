//! Extracting a downloaded study archive: untrusted input (PROTOCOL.md §5).
//!
//! Two phases, so that a hostile archive writes nothing:
//! 1. The whole central directory is checked first: every name (no `..`, absolute
//!    path, drive letter, backslash, NUL, non-UTF-8, duplicate or symlink), the
//!    compression methods, and the declared sizes against [`ExtractLimits`].
//! 2. Only then are the files streamed out under `dest`, counting the bytes actually
//!    inflated: an entry that inflates past its declared size, the total or the ratio
//!    stops everything. On any error, everything written under `dest` is removed.
//!
//! async_zip does not sanitise names (CRATES.md); this module does all of it, and
//! uses async_zip's seekable `read1` reader with its untrusted options for the rest
//! (CRC and size checks, central directory bounds).
//!
//! The whole extraction runs on one blocking thread over plain `std` files (wrapped
//! for async_zip's traits, so its futures never wait): through tokio's file API every
//! 64 KiB read and write was a hop to the blocking pool, and extraction cost more
//! than the download. Dropping the future cancels it: the thread stops at its next
//! chunk and removes what it wrote before the drop returns.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use async_zip::base::read1::seek::ZipArchiveReader;
use async_zip::base::read1::ZipOptions;
use async_zip::error::ZipError;
use async_zip::spec::constructs::CDR;
use async_zip::spec::extra::{EFD, EFHID};
use async_zip::spec::headers1::Compression;
use futures_util::io::{AllowStdIo, AsyncRead, AsyncReadExt};

use super::follow::{DownloadProgress, FollowedArchive, Tail};
use super::watchdog::Beat;

/// 50 GiB uncompressed in all (PROTOCOL.md §5): a few large studies, not a full disk.
pub const DEFAULT_MAX_TOTAL_UNCOMPRESSED: u64 = 50 * 1024 * 1024 * 1024;
/// 200 000 entries (PROTOCOL.md §5): a very large study has tens of thousands.
pub const DEFAULT_MAX_ENTRIES: u64 = 200_000;
/// 200:1 (PROTOCOL.md §5): DICOM rarely deflates past 10:1, bombs go to 1000:1.
pub const DEFAULT_MAX_RATIO: u64 = 200;
/// The ratio applies to entries over 1 MiB (PROTOCOL.md §5): tiny files of zeros
/// (padding, empty reports) legitimately compress far better.
pub const DEFAULT_RATIO_APPLIES_ABOVE: u64 = 1024 * 1024;

/// Bytes copied per read from an entry (also how often cancellation is checked).
const COPY_BUFFER: usize = 256 * 1024;
/// Buffering of the archive file (the reader needs `AsyncBufRead`).
const READ_BUFFER: usize = 256 * 1024;
/// Buffering of each extracted file.
const WRITE_BUFFER: usize = 256 * 1024;
/// Central directory bytes allowed per permitted entry: a record is 46 bytes plus
/// its name and extra fields, about 200 in practice; names may run long.
const CD_BYTES_PER_ENTRY: u64 = 512;
/// Never allow less central directory than async_zip's own untrusted default.
const MIN_CD_BYTES: u64 = 16 * 1024 * 1024;
/// Unix and OS X hosts in "version made by": their external attributes carry a mode.
const HOSTS_WITH_UNIX_MODE: [u16; 2] = [3, 19];
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
/// MS-DOS directory attribute.
const DOS_DIRECTORY: u32 = 0x10;

/// Limits on what an archive may expand to. `Default` is PROTOCOL.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Bytes written in all, counted as they are inflated.
    pub max_total_uncompressed: u64,
    /// Entries in the central directory (directories included).
    pub max_entries: u64,
    /// Uncompressed bytes per compressed byte, for entries over `ratio_applies_above`.
    pub max_ratio: u64,
    /// Entries up to this many uncompressed bytes are exempt from `max_ratio`.
    pub ratio_applies_above: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_total_uncompressed: DEFAULT_MAX_TOTAL_UNCOMPRESSED,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_ratio: DEFAULT_MAX_RATIO,
            ratio_applies_above: DEFAULT_RATIO_APPLIES_ABOVE,
        }
    }
}

/// One extracted regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// The normalised entry name: `/`-separated, no `.` or empty components.
    pub rel_path: String,
    /// `dest` joined with `rel_path`.
    pub path: PathBuf,
    pub size: u64,
}

/// What an archive extracted to, in central directory order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub files: Vec<ExtractedFile>,
    pub total_bytes: u64,
}

/// Why an entry name or type is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeReason {
    ParentComponent,
    Absolute,
    DriveLetter,
    Backslash,
    Nul,
    NotUtf8,
    /// A file entry whose name has no component left (`""`, `./`).
    Empty,
    /// Repeats another entry once `.` and empty components are dropped.
    Duplicate,
    /// Lies under a path that another entry makes a file.
    PathConflict,
    Symlink,
    /// A device, FIFO or socket.
    SpecialFile,
    /// Resolved outside the extraction directory (only through a planted symlink).
    EscapesDest,
}

impl fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnsafeReason::ParentComponent => "has a `..` component",
            UnsafeReason::Absolute => "is an absolute path",
            UnsafeReason::DriveLetter => "has a drive letter",
            UnsafeReason::Backslash => "contains a backslash",
            UnsafeReason::Nul => "contains a NUL byte",
            UnsafeReason::NotUtf8 => "is not UTF-8",
            UnsafeReason::Empty => "has an empty name",
            UnsafeReason::Duplicate => "repeats another entry",
            UnsafeReason::PathConflict => "lies under another entry that is a file",
            UnsafeReason::Symlink => "is a symbolic link",
            UnsafeReason::SpecialFile => "is a device, FIFO or socket",
            UnsafeReason::EscapesDest => "resolves outside the extraction directory",
        })
    }
}

/// Which limit an archive went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Entries {
        max: u64,
    },
    TotalUncompressed {
        max: u64,
    },
    Ratio {
        max: u64,
    },
    /// An entry inflated past the size its headers declare.
    DeclaredSize {
        declared: u64,
    },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Entries { max } => write!(f, "more than {max} entries"),
            Limit::TotalUncompressed { max } => {
                write!(f, "more than {max} bytes uncompressed in all")
            }
            Limit::Ratio { max } => write!(f, "a compression ratio above {max}:1"),
            Limit::DeclaredSize { declared } => {
                write!(f, "more bytes than the {declared} it declares")
            }
        }
    }
}

/// Why an archive was not extracted. Whatever the variant, nothing stays under `dest`.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsafe archive entry {name:?}: it {reason}")]
    UnsafeEntry { name: String, reason: UnsafeReason },
    #[error("archive refused: {limit} (entry {})", .entry.as_deref().unwrap_or("-"))]
    LimitExceeded { limit: Limit, entry: Option<String> },
    #[error("archive entry {name:?} uses unsupported compression method {method}")]
    UnsupportedMethod { name: String, method: u16 },
    #[error("corrupt archive entry {name:?}: {reason}")]
    CorruptEntry { name: String, reason: String },
    #[error("malformed archive: {0}")]
    Malformed(#[source] ZipError),
    #[error("extraction directory {} exists and is not an empty directory", .path.display())]
    DestNotEmpty { path: PathBuf },
    #[error("extraction stopped: {0}")]
    Stopped(String),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExtractError + 'a {
    move |source| ExtractError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A file entry that passed the central directory checks.
#[derive(Debug)]
struct PlannedFile {
    index: usize,
    /// The raw name, lossily decoded, for errors.
    name: String,
    rel_path: String,
    declared_size: u64,
    compressed_size: u64,
}

/// Extracts the archive at `zip_path` into `dest`, which must be missing or an empty
/// directory (so that removing its contents on failure removes only what this wrote).
///
/// Nothing is written unless the whole central directory passes; on any later error
/// everything written is removed (and `dest` itself when this call created it). Runs
/// on a blocking thread; dropping the returned future stops it and waits for the
/// clean-up.
pub async fn extract_archive(
    zip_path: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<Extracted, ExtractError> {
    Extraction::start(
        ArchiveSource::File(zip_path.to_path_buf()),
        dest,
        limits,
        None,
    )
    .finish()
    .await
}

/// Where an archive's bytes come from.
pub enum ArchiveSource {
    /// A complete archive file.
    File(PathBuf),
    /// An archive being downloaded into `spool_file`, whose tail was fetched
    /// first: extraction follows the download (see `follow.rs`).
    Following {
        spool_file: PathBuf,
        tail: Tail,
        progress: Arc<DownloadProgress>,
    },
}

impl ArchiveSource {
    fn describe(&self) -> String {
        match self {
            ArchiveSource::File(p) => p.display().to_string(),
            ArchiveSource::Following { spool_file, .. } => {
                format!("{} (while downloading)", spool_file.display())
            }
        }
    }
}

/// An extraction running on its own blocking thread, as [`extract_archive`]
/// describes. Dropping it stops the thread and waits for its clean-up.
pub struct Extraction {
    task: tokio::task::JoinHandle<Result<Extracted, ExtractError>>,
    stop: StopOnDrop,
}

impl Extraction {
    /// Starts at once (call it within the Tokio runtime); `beat`, if given,
    /// ticks at every chunk written (the stage watchdog's progress).
    pub fn start(
        source: ArchiveSource,
        dest: &Path,
        limits: &ExtractLimits,
        beat: Option<Beat>,
    ) -> Extraction {
        let (dst, lim) = (dest.to_path_buf(), *limits);
        let cancel = Arc::new(AtomicBool::new(false));
        let (finished_tx, finished_rx) = mpsc::channel::<()>();
        let ctl = Control {
            cancel: cancel.clone(),
            beat,
        };
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let result = runtime.block_on(extract_on_this_thread(source, &dst, &lim, ctl));
            drop(finished_tx);
            result
        });
        Extraction {
            task,
            stop: StopOnDrop {
                cancel,
                finished: Some(finished_rx),
            },
        }
    }

    /// Waits for the end of the extraction.
    pub async fn finish(mut self) -> Result<Extracted, ExtractError> {
        let result = (&mut self.task).await;
        self.stop.finished = None;
        result.unwrap_or_else(|e| Err(ExtractError::Stopped(e.to_string())))
    }

    /// Stops the extraction and waits, without blocking the caller's thread,
    /// until it has removed what it wrote.
    pub async fn cancel(mut self) {
        self.stop.cancel.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
        self.stop.finished = None;
    }
}

/// What the extraction thread obeys and reports to.
struct Control {
    cancel: Arc<AtomicBool>,
    beat: Option<Beat>,
}

impl Control {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn progressed(&self) {
        if let Some(b) = &self.beat {
            b.tick();
        }
    }
}

/// Cancels the extraction thread when the future waiting for it is dropped, and
/// waits until it has removed what it wrote (a dispatch cancelled mid-extraction
/// leaves nothing, as the spool's owner expects when it moves on).
struct StopOnDrop {
    cancel: Arc<AtomicBool>,
    /// `None` once the extraction returned.
    finished: Option<mpsc::Receiver<()>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(finished) = self.finished.take() {
            self.cancel.store(true, Ordering::Relaxed);
            // Disconnected when the thread is done; it checks the flag every chunk.
            let _ = finished.recv();
        }
    }
}

async fn extract_on_this_thread(
    source: ArchiveSource,
    dest: &Path,
    limits: &ExtractLimits,
    ctl: Control,
) -> Result<Extracted, ExtractError> {
    let what = source.describe();
    let result = match source {
        ArchiveSource::File(path) => {
            let file = std::fs::File::open(&path).map_err(io_err("open archive", &path))?;
            extract_from(file, dest, limits, &ctl).await
        }
        ArchiveSource::Following {
            spool_file,
            tail,
            progress,
        } => {
            let followed = FollowedArchive::new(&spool_file, tail, progress, ctl.cancel.clone());
            extract_from(followed, dest, limits, &ctl).await
        }
    };
    match &result {
        Ok(done) => {
            tracing::info!(
                archive = %what,
                files = done.files.len(),
                bytes = done.total_bytes,
                "archive extracted"
            );
        }
        Err(err) => {
            tracing::warn!(archive = %what, error = %err, "archive extraction failed; removing what was written");
        }
    }
    result
}

async fn extract_from<S: std::io::Read + std::io::Seek>(
    source: S,
    dest: &Path,
    limits: &ExtractLimits,
    ctl: &Control,
) -> Result<Extracted, ExtractError> {
    let buffered = std::io::BufReader::with_capacity(READ_BUFFER, source);
    let mut reader = open_reader(AllowStdIo::new(buffered), limits).await?;
    let plan = check_central_directory(reader.cdrs(), limits)?;

    let mut written = Written {
        dest: dest.to_path_buf(),
        created: prepare_dest(dest)?,
        kept: false,
    };
    let result = extract_planned(&mut reader, &plan, dest, limits, ctl).await;
    written.kept = result.is_ok();
    result
}

/// What an extraction wrote under `dest`: removed on drop unless kept (an error,
/// a cancellation or a panic on the extraction thread).
struct Written {
    dest: PathBuf,
    created: bool,
    kept: bool,
}

impl Drop for Written {
    fn drop(&mut self) {
        if !self.kept {
            remove_written(&self.dest, self.created);
        }
    }
}

/// async_zip's untrusted options, with the entry count and per-file size set from our
/// limits (its 1 GiB per file would refuse real multi-frame instances).
fn zip_options(limits: &ExtractLimits) -> ZipOptions {
    ZipOptions {
        max_cd_num_files: limits.max_entries,
        // Load every record, so the checks below see the whole directory.
        max_cd_num_files_load: limits.max_entries,
        max_cd_size_in_bytes: limits
            .max_entries
            .saturating_mul(CD_BYTES_PER_ENTRY)
            .max(MIN_CD_BYTES),
        max_uncompressed_size_per_file: limits.max_total_uncompressed,
        // The archive is a local file: an entry cannot consume more of it than there is.
        max_compressed_size_per_file: u64::MAX,
        ..ZipOptions::untrusted()
    }
}

/// The seekable reader over the archive: `std` I/O behind futures' traits.
type ArchiveReader<S> = ZipArchiveReader<AllowStdIo<std::io::BufReader<S>>>;

async fn open_reader<S: std::io::Read + std::io::Seek>(
    reader: AllowStdIo<std::io::BufReader<S>>,
    limits: &ExtractLimits,
) -> Result<ArchiveReader<S>, ExtractError> {
    match ZipArchiveReader::open_with_options(reader, zip_options(limits)).await {
        Ok(reader) => Ok(reader),
        Err(ZipError::NumFilesAboveMax(max)) => Err(ExtractError::LimitExceeded {
            limit: Limit::Entries { max },
            entry: None,
        }),
        Err(e) => Err(ExtractError::Malformed(e)),
    }
}

/// What the external attributes say an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryType {
    File,
    Dir,
    Symlink,
    Special,
}

fn entry_type(cdr: &CDR) -> EntryType {
    let attr = cdr.cdrh.exter_attr;
    if HOSTS_WITH_UNIX_MODE.contains(&(cdr.cdrh.v_made_by >> 8)) {
        match (attr >> 16) & S_IFMT {
            S_IFLNK => return EntryType::Symlink,
            S_IFDIR => return EntryType::Dir,
            0 | S_IFREG => {}
            _ => return EntryType::Special,
        }
    }
    if attr & DOS_DIRECTORY != 0 {
        EntryType::Dir
    } else {
        EntryType::File
    }
}

/// Normalises an entry name: returns its `/`-joined components (without `.` and empty
/// ones) and whether the name ends in `/` (a directory), or why it is refused.
pub(crate) fn normalise_name(raw: &[u8]) -> Result<(String, bool), UnsafeReason> {
    if raw.contains(&0) {
        return Err(UnsafeReason::Nul);
    }
    let name = std::str::from_utf8(raw).map_err(|_| UnsafeReason::NotUtf8)?;
    if name.contains('\\') {
        return Err(UnsafeReason::Backslash);
    }
    if name.starts_with('/') {
        return Err(UnsafeReason::Absolute);
    }
    if let [letter, b':', ..] = name.as_bytes() {
        if letter.is_ascii_alphabetic() {
            return Err(UnsafeReason::DriveLetter);
        }
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(UnsafeReason::ParentComponent),
            part => parts.push(part),
        }
    }
    Ok((parts.join("/"), name.ends_with('/')))
}

/// The local header offset, refusing a zip64 marker without its extra field
/// (async_zip 0.0.19's `CDR::lfh_offset` unwraps it and would panic).
fn checked_lfh_offset(cdr: &CDR) -> Result<u64, ExtractError> {
    if cdr.cdrh.lfh_offset != u32::MAX {
        return Ok(cdr.cdrh.lfh_offset.into());
    }
    cdr.efs
        .iter()
        .find_map(|ef| match (&ef.efh.efid, &ef.efd) {
            (EFHID::EI64, EFD::EI64(ei)) => ei.relative_offset,
            _ => None,
        })
        .ok_or(ExtractError::Malformed(
            ZipError::Zip64ExtendedFieldIncomplete,
        ))
}

/// Phase 1: checks every central directory record and returns the files to write.
fn check_central_directory(
    cdrs: &[CDR],
    limits: &ExtractLimits,
) -> Result<Vec<PlannedFile>, ExtractError> {
    if cdrs.len() as u64 > limits.max_entries {
        return Err(ExtractError::LimitExceeded {
            limit: Limit::Entries {
                max: limits.max_entries,
            },
            entry: None,
        });
    }

    // Names and types first: an unsafe name is the finding that matters most.
    let mut seen: HashSet<String> = HashSet::with_capacity(cdrs.len());
    let mut paths: Vec<(String, String)> = Vec::with_capacity(cdrs.len());
    let mut files: HashSet<String> = HashSet::new();
    let mut plan = Vec::new();
    for (index, cdr) in cdrs.iter().enumerate() {
        let raw = cdr.insecure_file_name.as_bytes();
        let name = String::from_utf8_lossy(raw).into_owned();
        let refuse = |reason| ExtractError::UnsafeEntry {
            name: name.clone(),
            reason,
        };
        let (rel_path, dir_name) = normalise_name(raw).map_err(refuse)?;
        let is_dir = match entry_type(cdr) {
            EntryType::Symlink => return Err(refuse(UnsafeReason::Symlink)),
            EntryType::Special => return Err(refuse(UnsafeReason::SpecialFile)),
            EntryType::Dir => true,
            EntryType::File => dir_name,
        };
        if rel_path.is_empty() {
            if is_dir {
                continue; // "./": the extraction directory itself
            }
            return Err(refuse(UnsafeReason::Empty));
        }
        if !seen.insert(rel_path.clone()) {
            return Err(refuse(UnsafeReason::Duplicate));
        }
        paths.push((rel_path.clone(), name.clone()));
        if is_dir {
            continue;
        }
        files.insert(rel_path.clone());
        let method = cdr.cdrh.compression;
        if !matches!(
            method,
            Compression::Stored | Compression::Deflate | Compression::Deflate64
        ) {
            return Err(ExtractError::UnsupportedMethod {
                name,
                method: method as u16,
            });
        }
        checked_lfh_offset(cdr)?;
        plan.push(PlannedFile {
            index,
            rel_path,
            declared_size: cdr.uncompressed_size().map_err(ExtractError::Malformed)?,
            compressed_size: cdr.compressed_size().map_err(ExtractError::Malformed)?,
            name,
        });
    }
    for (rel_path, name) in &paths {
        let mut ancestors = rel_path.match_indices('/').map(|(i, _)| &rel_path[..i]);
        if ancestors.any(|a| files.contains(a)) {
            return Err(ExtractError::UnsafeEntry {
                name: name.clone(),
                reason: UnsafeReason::PathConflict,
            });
        }
    }

    // Declared sizes: refuse what the directory already shows to be too big.
    let mut total: u64 = 0;
    for p in &plan {
        if over_ratio(p.declared_size, p.compressed_size, limits) {
            return Err(ExtractError::LimitExceeded {
                limit: Limit::Ratio {
                    max: limits.max_ratio,
                },
                entry: Some(p.name.clone()),
            });
        }
        total = total.saturating_add(p.declared_size);
        if total > limits.max_total_uncompressed {
            return Err(ExtractError::LimitExceeded {
                limit: Limit::TotalUncompressed {
                    max: limits.max_total_uncompressed,
                },
                entry: Some(p.name.clone()),
            });
        }
    }
    Ok(plan)
}

fn over_ratio(uncompressed: u64, compressed: u64, limits: &ExtractLimits) -> bool {
    uncompressed > limits.ratio_applies_above
        && uncompressed > compressed.saturating_mul(limits.max_ratio)
}

/// Makes sure `dest` is an empty directory; returns whether it was created here.
fn prepare_dest(dest: &Path) -> Result<bool, ExtractError> {
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = std::fs::read_dir(dest).map_err(io_err("read", dest))?;
            match entries.next() {
                None => Ok(false),
                Some(Err(e)) => Err(io_err("read", dest)(e)),
                Some(Ok(_)) => Err(ExtractError::DestNotEmpty {
                    path: dest.to_path_buf(),
                }),
            }
        }
        Ok(_) => Err(ExtractError::DestNotEmpty {
            path: dest.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest).map_err(io_err("create", dest))?;
            Ok(true)
        }
        Err(e) => Err(io_err("inspect", dest)(e)),
    }
}

/// Phase 2: streams every planned file out, counting what is actually inflated.
async fn extract_planned<S: std::io::Read + std::io::Seek>(
    reader: &mut ArchiveReader<S>,
    plan: &[PlannedFile],
    dest: &Path,
    limits: &ExtractLimits,
    ctl: &Control,
) -> Result<Extracted, ExtractError> {
    let root = std::fs::canonicalize(dest).map_err(io_err("resolve", dest))?;
    let mut buf = vec![0_u8; COPY_BUFFER];
    let mut done = Extracted {
        files: Vec::with_capacity(plan.len()),
        total_bytes: 0,
    };
    for p in plan {
        let file = create_file(&root, p)?;
        let target = root.join(&p.rel_path);
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);

        let entry = reader
            .file(p.index)
            .await
            .map_err(|e| ExtractError::CorruptEntry {
                name: p.name.clone(),
                reason: e.to_string(),
            })?;
        let copy = EntryCopy {
            target: &target,
            p,
            limits,
            ctl,
        };
        let size = copy
            .run(entry, &mut out, &mut buf, &mut done.total_bytes)
            .await?;
        out.flush().map_err(io_err("write", &target))?;

        done.files.push(ExtractedFile {
            rel_path: p.rel_path.clone(),
            path: dest.join(&p.rel_path),
            size,
        });
    }
    Ok(done)
}

/// Creates the file of `p` under `root`, with its parent directories.
///
fn create_file(root: &Path, p: &PlannedFile) -> Result<std::fs::File, ExtractError> {
    // `rel_path` holds only normal components, so the join stays under `root`
    // lexically; resolving the parent also rules out a symlink planted on the way.
    let target = root.join(&p.rel_path);
    let parent = target.parent().unwrap_or(root);
    std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let resolved = std::fs::canonicalize(parent).map_err(io_err("resolve", parent))?;
    if !resolved.starts_with(root) {
        return Err(ExtractError::UnsafeEntry {
            name: p.name.clone(),
            reason: UnsafeReason::EscapesDest,
        });
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(io_err("create", &target))
}

/// One entry's copy: where it goes, and what stops it.
struct EntryCopy<'a> {
    target: &'a Path,
    p: &'a PlannedFile,
    limits: &'a ExtractLimits,
    ctl: &'a Control,
}

impl EntryCopy<'_> {
    /// Copies the entry, enforcing its declared size, the total and the ratio on the
    /// bytes actually inflated. async_zip checks CRC and size when the entry ends.
    async fn run<E: AsyncRead + Unpin>(
        &self,
        mut entry: E,
        out: &mut impl Write,
        buf: &mut [u8],
        total: &mut u64,
    ) -> Result<u64, ExtractError> {
        let (p, limits) = (self.p, self.limits);
        let limit = |limit| ExtractError::LimitExceeded {
            limit,
            entry: Some(p.name.clone()),
        };
        let mut written: u64 = 0;
        loop {
            if self.ctl.cancelled() {
                return Err(ExtractError::Stopped("cancelled".into()));
            }
            self.ctl.progressed();
            let n = entry
                .read(buf)
                .await
                .map_err(|e| read_error(&p.name, e, limits))?;
            if n == 0 {
                return Ok(written);
            }
            written += n as u64;
            *total += n as u64;
            if written > p.declared_size {
                return Err(limit(Limit::DeclaredSize {
                    declared: p.declared_size,
                }));
            }
            if *total > limits.max_total_uncompressed {
                return Err(limit(Limit::TotalUncompressed {
                    max: limits.max_total_uncompressed,
                }));
            }
            if over_ratio(written, p.compressed_size, limits) {
                return Err(limit(Limit::Ratio {
                    max: limits.max_ratio,
                }));
            }
            out.write_all(&buf[..n])
                .map_err(io_err("write", self.target))?;
        }
    }
}

fn read_error(name: &str, e: io::Error, limits: &ExtractLimits) -> ExtractError {
    if let Some(ZipError::UncompressedSizeAboveMax(_)) =
        e.get_ref().and_then(|inner| inner.downcast_ref())
    {
        return ExtractError::LimitExceeded {
            limit: Limit::TotalUncompressed {
                max: limits.max_total_uncompressed,
            },
            entry: Some(name.to_owned()),
        };
    }
    ExtractError::CorruptEntry {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

/// Removes everything under `dest` (and `dest` itself if this extraction created it).
/// `dest` was empty before, so only what the extraction wrote goes.
fn remove_written(dest: &Path, created: bool) {
    let result = if created {
        std::fs::remove_dir_all(dest)
    } else {
        empty_dir(dest)
    };
    if let Err(e) = result {
        tracing::error!(dest = %dest.display(), error = %e, "could not remove a failed extraction");
    }
}

fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // `file_type` does not follow symlinks, and `remove_dir_all` does not either.
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
