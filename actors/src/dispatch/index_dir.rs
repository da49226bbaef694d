//! Walking an extracted archive: every regular file under a directory read
//! with [`index_file`], sorted into DICOM instances (with their headers),
//! broken DICOM files (with why) and files that are not DICOM at all, so the
//! index stage can say what it left out.

use std::path::{Path, PathBuf};

use super::index::{index_file, DicomHeader, IndexError};

/// The DICOM files found by [`index_dir`], with their headers.
pub type Indexed = Vec<(PathBuf, DicomHeader)>;
/// The files [`index_dir`] found claiming DICOM but broken.
pub type IndexFailures = Vec<(PathBuf, IndexError)>;

/// Everything [`index_dir_with`] found under a directory, each list sorted by path.
#[derive(Debug, Default)]
pub struct IndexedDir {
    /// DICOM files with their headers.
    pub found: Indexed,
    /// Files that claim DICOM but are broken (and directories that cannot be read).
    pub failed: IndexFailures,
    /// Files that are not DICOM (no `DICM` marker): manifests, READMEs.
    pub not_dicom: Vec<PathBuf>,
}

/// Indexes every regular file under `dir`, recursively: the DICOM headers found and the
/// files that claim DICOM but are broken, both sorted by path. Non-DICOM files are
/// skipped; symlinks are not followed (extraction makes none).
pub fn index_dir(dir: &Path) -> (Indexed, IndexFailures) {
    let all = index_dir_with(dir, &|| {});
    (all.found, all.failed)
}

/// [`index_dir`], calling `progressed` after every file read (the stage
/// watchdog's beat), and listing the files that are not DICOM too.
pub fn index_dir_with(dir: &Path, progressed: &dyn Fn()) -> IndexedDir {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    let mut not_dicom = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) => {
                failed.push((current, IndexError::Io(e)));
                continue;
            }
        };
        for entry in entries {
            let (path, file_type) = match entry.and_then(|e| Ok((e.path(), e.file_type()?))) {
                Ok(ok) => ok,
                Err(e) => {
                    failed.push((current.clone(), IndexError::Io(e)));
                    continue;
                }
            };
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_file() {
                progressed();
                match index_file(&path) {
                    Ok(Some(header)) => found.push((path, header)),
                    Ok(None) => not_dicom.push(path),
                    Err(e) => failed.push((path, e)),
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    not_dicom.sort();
    IndexedDir {
        found,
        failed,
        not_dicom,
    }
}
