//! Streaming one instance to disk and committing it.
//!
//! While the data PDVs arrive, [`IncomingFile`] writes a temporary Part 10
//! file in `storage/.incoming/`: preamble, `DICM`, a file meta group built
//! from the C-STORE command and the presentation context, then the data set
//! bytes exactly as received (no decoding, no second copy in memory).
//! [`IncomingFile::commit`] then reads only the header back (up to Pixel
//! Data) for the study/series/patient it needs, fsyncs the file, renames it
//! into `storage/{study}/{series}/{sop}.dcm` (same filesystem, so the rename
//! is atomic and a duplicate replaces the old copy in one step) and fsyncs the
//! directory, while the association's catalog thread (`indexer.rs`) records
//! the instance (one transaction plus a flush). Only after both may the association answer
//! success.
//!
//! A temporary file that is not committed (abort, error, failure status,
//! panic) is removed when the [`IncomingFile`] is dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_object::{FileMetaTable, FileMetaTableBuilder};
use laminate_store::{Catalog, InstanceRecord, InstanceSource, Store, StoreError};

use super::command::{
    STATUS_CANNOT_UNDERSTAND, STATUS_DATA_SET_MISMATCH, STATUS_INVALID_UID,
    STATUS_OUT_OF_RESOURCES, STATUS_PROCESSING_FAILURE,
};
use super::header::read_header;
use super::indexer::Indexer;

/// Our implementation class UID, written in the file meta of every ingested
/// instance (a UUID-derived `2.25.` UID: needs no registered root).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.266661129284032726939314705522857337057";
/// Our implementation version name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("LAMINATE_", env!("CARGO_PKG_VERSION"));

/// Write buffer of a temporary file: small PDVs (dcmtk sends 16 KiB ones)
/// are gathered into large writes; larger PDVs pass straight through.
const WRITE_BUFFER: usize = 128 * 1024;
/// The 128-byte preamble (zeros) and the magic code.
const PREAMBLE_LEN: usize = 128;
const MAGIC: &[u8; 4] = b"DICM";

/// Makes temporary file names unique within the process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Where instances go.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The data dir: catalog paths are relative to it.
    pub data_dir: PathBuf,
    /// `{data_dir}/storage`.
    pub storage: PathBuf,
    /// `{data_dir}/storage/.incoming`: temporary files, same filesystem as
    /// their destination so that the final rename is atomic.
    pub incoming: PathBuf,
}

impl Dirs {
    pub fn new(data_dir: &Path) -> Self {
        let storage = data_dir.join("storage");
        Self {
            data_dir: data_dir.to_path_buf(),
            incoming: storage.join(".incoming"),
            storage,
        }
    }

    /// Creates the directories and removes what a previous run left in
    /// `.incoming` (never acknowledged, so never indexed): temporary files
    /// and the associations' directories with theirs. Only at start-up:
    /// later, live associations own what is in `.incoming`.
    pub fn prepare(&self) -> io::Result<usize> {
        fs::create_dir_all(&self.incoming)?;
        let mut removed = 0;
        for entry in fs::read_dir(&self.incoming)?.flatten() {
            let removed_one = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(entry.path()).is_ok(),
                Ok(_) => fs::remove_file(entry.path()).is_ok(),
                Err(_) => false,
            };
            removed += usize::from(removed_one);
        }
        Ok(removed)
    }

    /// A directory of one association's own in `.incoming` for its
    /// temporary files, removed when dropped. Creating a file locks its
    /// directory while the inode is allocated: four associations creating
    /// theirs in one directory spun on that lock (`perf`: ~8 % of the SCP's
    /// CPU).
    pub fn association_incoming(&self) -> IncomingDir {
        let path = self.incoming.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        // Created lazily by the first file if this fails now.
        let _ = fs::create_dir_all(&path);
        IncomingDir { path }
    }
}

/// One association's directory for its temporary files (see
/// [`Dirs::association_incoming`]).
#[derive(Debug)]
pub struct IncomingDir {
    path: PathBuf,
}

impl IncomingDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for IncomingDir {
    fn drop(&mut self) {
        // Empty by now: every temporary file was renamed away or removed.
        let _ = fs::remove_dir(&self.path);
    }
}

/// Why an instance was not stored; each maps to the C-STORE status answered.
#[derive(Debug, thiserror::Error)]
pub enum IngestFailure {
    #[error("free disk space {available} B is under the floor of {floor} B")]
    DiskFloor { available: u64, floor: u64 },
    #[error("cannot write the instance: {0}")]
    Io(#[from] io::Error),
    #[error("the data set does not parse: {0}")]
    Unparseable(String),
    #[error("the data set lacks {0}")]
    MissingUid(&'static str),
    #[error("{0}")]
    InvalidUid(StoreError),
    #[error("data set {field} {dataset} differs from the command's {command}")]
    Mismatch {
        field: &'static str,
        dataset: String,
        command: String,
    },
    #[error("the local store failed: {0}")]
    Store(StoreError),
    #[error("the association's catalog thread has ended")]
    IndexerGone,
}

impl IngestFailure {
    /// The C-STORE-RSP status for this failure.
    pub fn status(&self) -> u16 {
        match self {
            IngestFailure::DiskFloor { .. } | IngestFailure::Io(_) => STATUS_OUT_OF_RESOURCES,
            IngestFailure::Unparseable(_) | IngestFailure::MissingUid(_) => {
                STATUS_CANNOT_UNDERSTAND
            }
            IngestFailure::InvalidUid(_) => STATUS_INVALID_UID,
            IngestFailure::Mismatch { .. } => STATUS_DATA_SET_MISMATCH,
            IngestFailure::Store(_) | IngestFailure::IndexerGone => STATUS_PROCESSING_FAILURE,
        }
    }
}

/// What the C-STORE command and the presentation context say about the
/// instance being received.
#[derive(Debug, Clone)]
pub struct Expected {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub calling_ae: String,
}

/// An instance stored and indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub bytes: u64,
}

/// A temporary Part 10 file being received; removed on drop unless committed.
#[derive(Debug)]
pub struct IncomingFile {
    /// `None` once committed (renamed away).
    path: Option<PathBuf>,
    out: Option<BufWriter<File>>,
    len: u64,
    /// Where the data set starts (after preamble, magic and file meta).
    dataset_offset: u64,
    expected: Expected,
}

impl IncomingFile {
    /// Creates the temporary file and writes preamble, magic and file meta.
    pub fn create(incoming: &Path, expected: Expected) -> Result<Self, IngestFailure> {
        let meta = build_meta(&expected)?;
        let name = format!(
            "{}-{}.part",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        );
        let path = incoming.join(name);
        let open = || OpenOptions::new().write(true).create_new(true).open(&path);
        let file = match open() {
            // Someone pruned the (empty) directory, e.g. the store's repair.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(incoming)?;
                open()?
            }
            other => other?,
        };
        let mut this = Self {
            path: Some(path),
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            len: 0,
            dataset_offset: 0,
            expected,
        };
        let mut head = Vec::with_capacity(PREAMBLE_LEN + 4 + 256);
        head.extend_from_slice(&[0u8; PREAMBLE_LEN]);
        head.extend_from_slice(MAGIC);
        meta.write(&mut head)
            .map_err(|e| IngestFailure::Unparseable(format!("file meta: {e}")))?;
        this.append(&head)?;
        this.dataset_offset = this.len;
        Ok(this)
    }

    /// Appends data set bytes as they arrive.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("temporary file already closed"))?;
        out.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Checks, fsyncs, places and indexes the instance (see the module docs).
    pub fn commit(
        mut self,
        dirs: &Dirs,
        store: &Store,
        indexer: &Indexer,
    ) -> Result<Committed, IngestFailure> {
        let file = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("temporary file already closed"))?
            .into_inner()
            .map_err(|e| e.into_error())?;
        let temp = self
            .path
            .clone()
            .ok_or_else(|| io::Error::other("temporary file already committed"))?;
        let exp = &self.expected;
        let header = read_header(&temp, self.dataset_offset, &exp.transfer_syntax)?;
        if header.sop_instance_uid != exp.sop_instance_uid {
            return Err(IngestFailure::Mismatch {
                field: "SOPInstanceUID",
                dataset: header.sop_instance_uid,
                command: exp.sop_instance_uid.clone(),
            });
        }
        if header.sop_class_uid != exp.sop_class_uid {
            return Err(IngestFailure::Mismatch {
                field: "SOPClassUID",
                dataset: header.sop_class_uid,
                command: exp.sop_class_uid.clone(),
            });
        }
        let rel = laminate_store::instance_rel_path(
            &header.study_instance_uid,
            &header.series_instance_uid,
            &header.sop_instance_uid,
        )
        .map_err(IngestFailure::InvalidUid)?;
        let record = InstanceRecord {
            sop_instance_uid: header.sop_instance_uid,
            sop_class_uid: header.sop_class_uid,
            transfer_syntax: exp.transfer_syntax.clone(),
            study_instance_uid: header.study_instance_uid,
            series_instance_uid: header.series_instance_uid,
            series_number: header.series_number,
            patient_id: header.patient_id,
            path: rel,
            size: self.len,
            source: InstanceSource::Ingest,
            stored_at_ms: crate::clock::now_ms(),
        };
        let dest = dirs.data_dir.join(&record.path);
        // The file (fsync, rename, directory fsync) and the catalog (one
        // transaction + flush) are made durable side by side: the response
        // waits for both, and a crash between them leaves what the start-up
        // repair settles (a file without entry is re-indexed, an entry
        // without file dropped), the same as doing them one after the other.
        let pending = indexer.begin(&record);
        let placed = file
            .sync_data()
            .and_then(|()| place(&temp, &dest, &dirs.storage));
        let indexed = pending.finish();
        if placed.is_ok() {
            // Renamed away: nothing left to clean up, whatever happens next.
            self.path = None;
        }
        let previous = match (placed, indexed) {
            (Ok(()), Ok(previous)) => previous,
            (Err(e), indexed) => {
                // Not in place: take the entry back (best effort; the repair
                // at start-up would drop an entry without its file anyway).
                match indexed {
                    Ok(Some(previous)) => drop(store.put_instance(&previous)),
                    Ok(None) => drop(store.remove_instance(&record.sop_instance_uid)),
                    Err(_) => {}
                }
                return Err(IngestFailure::Io(e));
            }
            // In place but not indexed: the sender gets a failure and sends
            // again; until then the start-up repair would re-index the file.
            (Ok(()), Err(e)) => return Err(e),
        };
        if let Some(prev) = previous.as_ref().filter(|p| p.path != record.path) {
            // Same instance, now under another study/series: the catalog marked
            // the old copy a pending file deletion; remove it now if still so.
            if store.is_pending_deletion(&prev.path).unwrap_or(false) {
                let _ = fs::remove_file(dirs.data_dir.join(&prev.path));
            }
        }
        Ok(Committed {
            sop_instance_uid: record.sop_instance_uid,
            study_instance_uid: record.study_instance_uid,
            bytes: record.size,
        })
    }
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            drop(self.out.take());
            let _ = fs::remove_file(path);
        }
    }
}

fn build_meta(exp: &Expected) -> Result<FileMetaTable, IngestFailure> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(exp.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(exp.sop_instance_uid.as_str())
        .transfer_syntax(exp.transfer_syntax.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if !exp.calling_ae.is_empty() {
        builder = builder.source_application_entity_title(exp.calling_ae.as_str());
    }
    builder
        .build()
        .map_err(|e| IngestFailure::Unparseable(format!("file meta: {e}")))
}

/// Renames `temp` to `dest` (replacing any file there) and makes the new
/// directory entries durable.
fn place(temp: &Path, dest: &Path, storage: &Path) -> io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::other("destination has no directory"))?;
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
        // New series (and maybe study) directory: make their entries durable too.
        let mut up = dir.parent();
        while let Some(d) = up.filter(|d| d.starts_with(storage)) {
            sync_dir(d)?;
            up = d.parent();
        }
    }
    fs::rename(temp, dest)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Free space on the filesystem holding `dir`, for the disk floor.
pub fn available_space(dir: &Path) -> io::Result<u64> {
    fs2::available_space(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_removes_what_associations_left_in_incoming_and_nothing_else() {
        let data = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(data.path());
        fs::create_dir_all(&dirs.incoming).unwrap();
        let left = dirs.association_incoming();
        fs::write(left.path().join("1-7.part"), b"half an instance").unwrap();
        std::mem::forget(left); // as after a kill -9: the directory stays
        fs::write(dirs.incoming.join("1-8.part"), b"older layout").unwrap();
        let kept = dirs.storage.join("1.2/1.2.3/1.2.3.4.dcm");
        fs::create_dir_all(kept.parent().unwrap()).unwrap();
        fs::write(&kept, b"stored").unwrap();

        assert_eq!(dirs.prepare().unwrap(), 2);
        assert_eq!(fs::read_dir(&dirs.incoming).unwrap().count(), 0);
        assert!(kept.exists());
    }

    #[test]
    fn an_association_directory_goes_when_the_association_does() {
        let data = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(data.path());
        dirs.prepare().unwrap();
        let own = dirs.association_incoming();
        let path = own.path().to_path_buf();
        assert!(path.is_dir() && path.starts_with(&dirs.incoming));
        drop(own);
        assert!(!path.exists());
    }
}
