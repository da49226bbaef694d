//! Crash-safe replacement of a JSON file: after a crash at any point, the file holds
//! either its old content or its new content, never a mix or nothing.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::ConfigError;

/// Distinguishes temp files of concurrent writers within this process
/// (the process id distinguishes processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `value` as pretty JSON with a trailing newline to `path`, atomically:
/// a temp file in the same directory is written and fsynced, renamed over `path`,
/// then the directory is fsynced so the rename itself survives a power cut.
///
/// On failure the temp file is removed and `path` is unchanged.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), ConfigError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ConfigError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');

    let dir = parent_dir(path);
    let tmp = temp_path(path, &dir);
    if let Err(e) = write_and_sync(&tmp, &bytes) {
        // Best effort: the temp file may not even exist; the write error is what matters.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    sync_dir(&dir)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.{name}.tmp.{pid}.{n}` beside the target: hidden, recognisable, unique.
fn temp_path(path: &Path, dir: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".to_owned());
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

fn write_and_sync(tmp: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    // create_new: never follow or clobber something already at the temp name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Makes the rename durable. Directories can be opened and fsynced on Unix; on other
/// platforms the rename is as durable as the OS makes it.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), ConfigError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ConfigError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), ConfigError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_pretty_json_with_newline_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_json_atomic(&path, &json!({"a": 1})).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\n  \"a\": 1\n}\n");
        assert_eq!(entries(dir.path()), vec!["x.json"]);
    }

    #[test]
    fn replaces_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        fs::write(&path, "old").unwrap();
        write_json_atomic(&path, &json!([1, 2])).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v, json!([1, 2]));
        assert_eq!(entries(dir.path()), vec!["x.json"]);
    }

    #[test]
    fn missing_directory_is_an_io_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("x.json");
        let err = write_json_atomic(&path, &json!({})).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn failed_rename_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory at the target name makes the rename fail.
        let path = dir.path().join("x.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "k").unwrap();
        let err = write_json_atomic(&path, &json!({})).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert_eq!(entries(dir.path()), vec!["x.json"]);
        assert_eq!(fs::read_to_string(path.join("keep")).unwrap(), "k");
    }

    #[test]
    fn concurrent_writers_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::thread::scope(|s| {
            for i in 0..8 {
                let path = &path;
                s.spawn(move || write_json_atomic(path, &json!({"i": i})).unwrap());
            }
        });
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert!(v["i"].is_u64());
        assert_eq!(entries(dir.path()), vec!["x.json"]);
    }
}
