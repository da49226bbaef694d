//! One instance to send, and reading it from a DICOM file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTable, OpenFileOptions};

/// One instance to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The dataset's SOP Instance UID (sent in the command set).
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    /// The file's transfer syntax (the syntax of the bytes from `dataset_offset`).
    pub transfer_syntax: String,
    pub path: PathBuf,
    /// Where the dataset starts in the file: after preamble, `DICM` and meta group.
    pub dataset_offset: u64,
    /// Times a node aborted the association while this instance was in flight.
    pub aborts: u8,
    /// Send it converted to a native syntax even where the node accepted its
    /// own (the try after repeated aborts).
    pub force_native: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a DICOM file (no DICM prefix)")]
    NotDicom(PathBuf),
    #[error("{path}: bad file meta group: {reason}")]
    Meta { path: PathBuf, reason: String },
    #[error("{path}: bad dataset: {reason}")]
    Dataset { path: PathBuf, reason: String },
}

/// Counts the bytes its reader hands out, to learn where the meta group ends.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

fn trim_uid(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).trim_start().to_string()
}

impl Item {
    /// Reads what sending needs from a DICOM file (with or without the
    /// 128-byte preamble): the transfer syntax, where the dataset starts, and
    /// the SOP Class/Instance UIDs **of the dataset** (a meta group that
    /// disagrees is logged and ignored).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Item, ItemError> {
        let path = path.as_ref();
        let io = |source| ItemError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut head = [0u8; 132];
        let meta_start: u64 = match file.read_exact(&mut head) {
            Ok(()) if &head[128..132] == b"DICM" => 128,
            Ok(()) if &head[..4] == b"DICM" => 0,
            Ok(()) => return Err(ItemError::NotDicom(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ItemError::NotDicom(path.to_path_buf()))
            }
            Err(e) => return Err(io(e)),
        };
        file.seek(SeekFrom::Start(meta_start)).map_err(io)?;
        let mut counting = Counting {
            inner: BufReader::new(file),
            count: 0,
        };
        // `from_reader` reads `DICM` and exactly the meta group.
        let meta = FileMetaTable::from_reader(&mut counting).map_err(|e| ItemError::Meta {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let dataset_offset = meta_start + counting.count;

        let obj = OpenFileOptions::new()
            // Only the SOP UIDs are needed (see `HEADER_END`).
            .read_until(crate::dispatch::index::HEADER_END)
            .open_file(path)
            .map_err(|e| ItemError::Dataset {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let dataset_str = |tag| -> Option<String> {
            obj.element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok().map(|s| trim_uid(&s)))
                .filter(|s| !s.is_empty())
        };
        let meta_instance = trim_uid(meta.media_storage_sop_instance_uid());
        let meta_class = trim_uid(meta.media_storage_sop_class_uid());
        let sop_instance_uid = match dataset_str(tags::SOP_INSTANCE_UID) {
            Some(uid) => {
                if uid != meta_instance {
                    tracing::warn!(
                        path = %path.display(),
                        meta_uid = %meta_instance,
                        dataset_uid = %uid,
                        "meta and dataset SOP Instance UIDs disagree; sending the dataset's"
                    );
                }
                uid
            }
            None if !meta_instance.is_empty() => {
                tracing::warn!(path = %path.display(), "dataset has no SOP Instance UID; using the meta group's");
                meta_instance
            }
            None => {
                return Err(ItemError::Dataset {
                    path: path.to_path_buf(),
                    reason: "no SOP Instance UID".into(),
                })
            }
        };
        let sop_class_uid = match dataset_str(tags::SOP_CLASS_UID) {
            Some(uid) => uid,
            None if !meta_class.is_empty() => meta_class,
            None => {
                return Err(ItemError::Dataset {
                    path: path.to_path_buf(),
                    reason: "no SOP Class UID".into(),
                })
            }
        };
        Ok(Item {
            sop_instance_uid,
            sop_class_uid,
            transfer_syntax: trim_uid(meta.transfer_syntax()),
            path: path.to_path_buf(),
            dataset_offset,
            aborts: 0,
            force_native: false,
        })
    }
}
