//! Disk usage of the data dir, for the heartbeat's `disk_usage_gb`.

use std::path::Path;

/// Sum of the sizes of the regular files under `dir` (symlinks not followed;
/// unreadable entries skipped). Blocking: run it off the actor thread.
pub fn dir_size_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_nested_files() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
        std::fs::write(d.path().join("a/b/x"), [0u8; 100]).expect("write");
        std::fs::write(d.path().join("y"), [0u8; 23]).expect("write");
        assert_eq!(super::dir_size_bytes(d.path()), 123);
    }
}
