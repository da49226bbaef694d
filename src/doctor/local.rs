//! The doctor's checks on this machine's disk: the config files, the data dir
//! (exists or can be created, writable), free space against `min_free_gb`, the
//! store (opens; a running appliance's lock is a warning) and whether the
//! index agrees with the files. Reads only, apart from one probe file that is
//! written, synced and removed again.

use std::fs;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use laminate_config::{
    parse_nodes_file, parse_status_file, NodesFile, ProxyFile, NODES_FILE, PROXY_FILE, STATUS_FILE,
};
use laminate_store::{Store, StoreError, STORAGE_DIR};
use serde_json::Value;

use super::Report;
use crate::http::{disk_limits, DEFAULT_MIN_FREE_GB};

const GB: f64 = 1e9;

/// What the config files tell the later checks.
struct ConfigFiles {
    /// `nodes.json` when it is valid (missing: none configured yet).
    nodes: Option<NodesFile>,
    min_free_gb: f64,
}

const KEPT: &str = "fix or move the file: `run` refuses to start with it and never overwrites it";

/// `nodes.json`, `proxy.json`, `status.json`: parse and validate, as `run` would.
fn config_files(r: &mut Report, dir: &Path) -> ConfigFiles {
    let mut out = ConfigFiles {
        nodes: None,
        min_free_gb: DEFAULT_MIN_FREE_GB,
    };
    if let Some(v) = read(r, dir, NODES_FILE) {
        match v.map(|v| parse_nodes_file(&v)) {
            None => {
                r.ok(
                    NODES_FILE,
                    "not there yet (`run` writes an empty one; the backend sends the nodes)",
                );
                out.nodes = Some(NodesFile::default());
            }
            Some(Ok(nodes)) => {
                let active = nodes.nodes.iter().filter(|n| n.is_active).count();
                r.ok(
                    NODES_FILE,
                    format!("valid: {} nodes, {active} active", nodes.nodes.len()),
                );
                out.nodes = Some(nodes);
            }
            Some(Err(problems)) => r.fail(NODES_FILE, joined(&problems), KEPT),
        }
    }
    site_settings(r, dir, &mut out.nodes);
    if let Some(v) = read(r, dir, PROXY_FILE) {
        match v.map(ProxyFile::from_value) {
            None => r.ok(PROXY_FILE, "not there yet (`run` writes the defaults)"),
            Some(Err(p)) => r.fail(PROXY_FILE, p.to_string(), KEPT),
            Some(Ok(file)) => {
                // The same reading of the floor as the status page's gauge.
                out.min_free_gb = disk_limits(dir).0;
                match file.settings() {
                    Ok(_) => {
                        let unknown = file.unknown_keys();
                        let found = if unknown.is_empty() {
                            "valid".to_owned()
                        } else {
                            format!(
                                "valid (keys this version does not use, kept: {})",
                                unknown.join(", ")
                            )
                        };
                        r.ok(PROXY_FILE, found);
                    }
                    Err(e) => r.fail(PROXY_FILE, e.to_string(), KEPT),
                }
            }
        }
    }
    if let Some(v) = read(r, dir, STATUS_FILE) {
        match v.map(|v| parse_status_file(&v)) {
            None => r.ok(STATUS_FILE, "not there yet (`run` starts active)"),
            Some(Ok(s)) => {
                let found = format!(
                    "valid: {}{}",
                    s.status,
                    if s.is_active {
                        ""
                    } else {
                        ", dispatch work paused"
                    }
                );
                if s.is_active {
                    r.ok(STATUS_FILE, found);
                } else {
                    r.warn(
                        STATUS_FILE,
                        found,
                        "nothing to do here: the backend pauses and resumes the appliance (proxy.status_changed)",
                    );
                }
            }
            Some(Err(problems)) => r.fail(STATUS_FILE, joined(&problems), KEPT),
        }
    }
    out
}

/// The file's JSON: `Some(None)` when it does not exist, `None` when it cannot
/// be read or is not JSON (reported).
fn read(r: &mut Report, dir: &Path, name: &str) -> Option<Option<Value>> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if is_missing(&e) => return Some(None),
        Err(e) => {
            r.fail(
                name,
                format!("cannot read {}: {e}", path.display()),
                "make it readable by the user running laminate-proxy",
            );
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(Some(v)),
        Err(e) => {
            r.fail(name, format!("{} is not JSON: {e}", path.display()), KEPT);
            None
        }
    }
}

fn joined(problems: &[laminate_config::Problem]) -> String {
    laminate_config::error::join_problems(problems)
}

fn is_missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// `node-settings.json` as `run` reads it (TLS files loaded); its settings are
/// attached to the nodes so that their checks use TLS where it is set.
fn site_settings(r: &mut Report, dir: &Path, nodes: &mut Option<NodesFile>) {
    match laminate_config::load_node_settings(dir) {
        Ok(None) => r.ok(
            laminate_config::NODE_SETTINGS_FILE,
            "none (every node plain TCP with the backend's settings)",
        ),
        Ok(Some(f)) => {
            let tls = f.nodes.values().filter(|s| s.tls.is_some()).count();
            r.ok(
                laminate_config::NODE_SETTINGS_FILE,
                format!("valid: {} nodes, {tls} with TLS", f.nodes.len()),
            );
            if let Some(n) = nodes {
                n.nodes = f.apply(&n.nodes);
            }
        }
        Err(e) => r.fail(
            laminate_config::NODE_SETTINGS_FILE,
            e.to_string(),
            "fix the file (a running appliance keeps its previous settings; `run` refuses to start with it)",
        ),
    }
}

/// The data dir, its config files, the disk under it, the store and the index;
/// returns the nodes to check (`None` when `nodes.json` is unusable).
pub fn data_dir(r: &mut Report, dir: &Path) -> Option<NodesFile> {
    let (exists, probe_dir) = writable(r, dir)?;
    let files = if exists {
        config_files(r, dir)
    } else {
        ConfigFiles {
            nodes: Some(NodesFile::default()),
            min_free_gb: DEFAULT_MIN_FREE_GB,
        }
    };
    free_space(r, &probe_dir, files.min_free_gb);
    if exists {
        store_and_index(r, dir);
    }
    files.nodes
}

/// Whether the data dir exists, and the directory the probe was written in (the
/// data dir, or the ancestor `run` would create it in); `None` when unusable.
fn writable(r: &mut Report, dir: &Path) -> Option<(bool, PathBuf)> {
    const CHECK: &str = "data dir";
    const FIX: &str = "give --data-dir (LAMINATE_PROXY_DATA_DIR) a directory the user running laminate-proxy may write (chown/chmod, or another path)";
    let exists = match fs::metadata(dir) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            r.fail(
                CHECK,
                format!("{} exists but is not a directory", dir.display()),
                FIX,
            );
            return None;
        }
        Err(e) if is_missing(&e) => false,
        Err(e) => {
            r.fail(CHECK, format!("{}: {e}", dir.display()), FIX);
            return None;
        }
    };
    let probe_dir = if exists {
        dir.to_path_buf()
    } else {
        match nearest_existing_dir(dir) {
            Ok(d) => d,
            Err(why) => {
                r.fail(
                    CHECK,
                    format!("{} cannot be created: {why}", dir.display()),
                    FIX,
                );
                return None;
            }
        }
    };
    if let Err(e) = probe(&probe_dir) {
        r.fail(
            CHECK,
            format!("cannot write in {}: {e}", probe_dir.display()),
            FIX,
        );
        return None;
    }
    if exists {
        r.ok(
            CHECK,
            format!(
                "{} is writable (a probe file was written, synced and removed)",
                dir.display()
            ),
        );
    } else {
        r.ok(
            CHECK,
            format!(
                "{} does not exist yet; `run` creates it ({} is writable)",
                dir.display(),
                probe_dir.display()
            ),
        );
    }
    Some((exists, probe_dir))
}

/// The nearest ancestor of `dir` that exists; an error if that is not a
/// directory (then nothing below it can be created, not even by root).
fn nearest_existing_dir(dir: &Path) -> Result<PathBuf, String> {
    let mut cur = dir.parent();
    while let Some(d) = cur {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        match fs::metadata(d) {
            Ok(m) if m.is_dir() => return Ok(d.to_path_buf()),
            Ok(_) => return Err(format!("{} is a file, not a directory", d.display())),
            Err(e) if is_missing(&e) => cur = d.parent(),
            Err(e) => return Err(format!("{}: {e}", d.display())),
        }
    }
    Err("no existing parent directory".to_owned())
}

/// Writes, syncs and removes a small file in `dir`.
fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".doctor-probe-{}", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(b"laminate-proxy doctor probe\n")?;
        f.sync_all()
    })();
    let removed = fs::remove_file(&path);
    written?;
    match removed {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn free_space(r: &mut Report, dir: &Path, min_free_gb: f64) {
    const CHECK: &str = "free space";
    let (free, total) = match (fs2::available_space(dir), fs2::total_space(dir)) {
        (Ok(f), Ok(t)) => (f as f64 / GB, t as f64 / GB),
        (Err(e), _) | (_, Err(e)) => {
            r.warn(
                CHECK,
                format!("cannot read the free space of {}: {e}", dir.display()),
                "check the file system with df",
            );
            return;
        }
    };
    let found =
        format!("{free:.1} GB free of {total:.1} GB; the floor (min_free_gb) is {min_free_gb} GB");
    if free < min_free_gb {
        r.fail(
            CHECK,
            found,
            "free disk space (or give the data dir a larger disk); below the floor downloads wait and the ingest SCP refuses instances",
        );
    } else if free < 2.0 * min_free_gb {
        r.warn(
            CHECK,
            found,
            "free disk space soon: under the floor downloads wait and ingest is refused",
        );
    } else {
        r.ok(CHECK, found);
    }
}

fn store_and_index(r: &mut Report, dir: &Path) {
    let store_dir = dir.join("store");
    if !store_dir.exists() {
        r.ok(
            "store",
            format!("{} not there yet (`run` creates it)", store_dir.display()),
        );
        return;
    }
    let store = match Store::open(&store_dir) {
        Ok(s) => s,
        Err(StoreError::Open { source, .. })
            if source.to_string().contains("could not acquire lock") =>
        {
            r.warn(
                "store",
                format!("{} is in use by a running appliance", store_dir.display()),
                "nothing to do if it is meant to run; stop it to check the store and the index",
            );
            return;
        }
        Err(e) => {
            r.fail(
                "store",
                e.to_string(),
                "restore the data dir from a backup, or move store/ aside and run `laminate-proxy rebuild-index` (the cache files stay)",
            );
            return;
        }
    };
    let figures = laminate_store::Catalog::figures(&store);
    r.ok(
        "store",
        match figures {
            Ok(f) => format!(
                "{} opens: {} instances of {} studies indexed",
                store_dir.display(),
                f.instances,
                f.sessions
            ),
            Err(e) => format!("{} opens (figures unreadable: {e})", store_dir.display()),
        },
    );
    match laminate_store::audit(&store, dir) {
        Ok(a) if a.agrees() => r.ok(
            "index",
            format!(
                "agrees with {}/: {} entries, {} files",
                STORAGE_DIR, a.entries, a.files
            ),
        ),
        Ok(a) => {
            let mut found = Vec::new();
            for (n, what) in [
                (a.entries_without_file, "entries without a file"),
                (a.entries_size_mismatch, "files changed since indexed"),
                (a.bad_entries, "unreadable entries"),
                (a.files_without_entry, "files without an entry"),
                (a.partial_files, "partly written files"),
                (a.pending_deletions, "unfinished deletions"),
            ] {
                if n > 0 {
                    found.push(format!("{n} {what}"));
                }
            }
            r.warn(
                "index",
                format!("differs from {}/: {} ({} entries, {} files)", STORAGE_DIR, found.join(", "), a.entries, a.files),
                "`run` repairs this at start-up; if the index is damaged beyond that, stop the appliance and run `laminate-proxy rebuild-index`",
            );
        }
        Err(e) => r.fail(
            "index",
            format!("cannot compare with the files: {e}"),
            "stop the appliance and run `laminate-proxy rebuild-index`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Outcome;

    fn quiet() -> Report {
        let mut r = Report::new(None);
        r.quiet = true;
        r
    }

    #[test]
    fn a_data_dir_under_a_file_fails_even_for_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("plain-file");
        fs::write(&file, b"x").expect("file");
        let mut r = quiet();
        assert!(data_dir(&mut r, &file.join("data")).is_none());
        let l = &r.lines()[0];
        assert_eq!(
            (l.outcome, l.check.as_str()),
            (Outcome::Fail, "data dir"),
            "{l}"
        );
        assert!(l.found.contains("is a file"), "{l}");
    }

    #[test]
    fn a_missing_data_dir_under_a_writable_parent_is_fine_and_not_created() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/data");
        let mut r = quiet();
        assert!(data_dir(&mut r, &dir).is_some());
        assert_eq!(r.lines()[0].outcome, Outcome::Ok, "{}", r.lines()[0]);
        assert_eq!(r.lines()[1].check, "free space");
        assert!(!tmp.path().join("a").exists(), "nothing is created");
        assert_eq!(
            fs::read_dir(tmp.path()).expect("ls").count(),
            0,
            "the probe is gone"
        );
    }

    #[test]
    fn free_space_below_the_floor_fails() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut r = quiet();
        free_space(&mut r, tmp.path(), 1e9);
        assert_eq!(r.lines()[0].outcome, Outcome::Fail);
    }

    #[test]
    fn an_invalid_node_settings_file_fails_with_its_problem() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(laminate_config::NODE_SETTINGS_FILE);
        fs::write(&path, br#"{"node_1": {"max_associations": 0}}"#).expect("write");
        let mut r = quiet();
        config_files(&mut r, tmp.path());
        let line = r
            .lines()
            .iter()
            .find(|l| l.check == laminate_config::NODE_SETTINGS_FILE)
            .expect("a node-settings line");
        assert_eq!(line.outcome, Outcome::Fail);
        assert!(
            line.found.contains("node_1.max_associations"),
            "{}",
            line.found
        );
        assert_eq!(
            fs::read(&path).expect("read"),
            br#"{"node_1": {"max_associations": 0}}"#
        );
    }

    #[test]
    fn config_files_are_validated_without_being_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(
            tmp.path().join(PROXY_FILE),
            br#"{"heartbeat_interval_s": 1, "min_free_gb": 7}"#,
        )
        .expect("write");
        fs::write(tmp.path().join(STATUS_FILE), b"{not json").expect("write");
        let mut r = quiet();
        let files = config_files(&mut r, tmp.path());
        let outcomes: Vec<_> = r
            .lines()
            .iter()
            .map(|l| (l.check.as_str(), l.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                (NODES_FILE, Outcome::Ok),
                (laminate_config::NODE_SETTINGS_FILE, Outcome::Ok),
                (PROXY_FILE, Outcome::Fail),
                (STATUS_FILE, Outcome::Fail)
            ]
        );
        assert_eq!(files.min_free_gb, 7.0);
        assert!(!tmp.path().join(NODES_FILE).exists());
    }
}
