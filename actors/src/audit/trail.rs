//! The audit trail's files: `audit/YYYY-MM-DD.jsonl`, one per UTC day, one JSON
//! record per line, only ever appended to.
//!
//! Durability: each record is one `write` of its whole line on a file opened for
//! appending, so a reader sees it at once and a crash leaves at most a partial last
//! line (readers skip a line that does not parse). The writer calls `sync_data`
//! whenever its queue runs empty (a burst of records costs one sync, a lone record
//! one) and when a day's file is closed, so a power loss loses at most the burst
//! being written. Pruning removes whole day files older than `audit_days`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use time::{Date, OffsetDateTime};

/// The directory in the data dir.
pub const AUDIT_DIR: &str = "audit";

/// The day (UTC) of an instant given in epoch ms.
pub fn day_of_ms(ms: u64) -> Option<Date> {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(|t| t.date())
}

fn file_name(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}.jsonl",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// The day a file name stands for, if it is one of ours.
fn day_of_name(name: &str) -> Option<Date> {
    let stem = name.strip_suffix(".jsonl")?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(stem, fmt).ok()
}

/// Our day files in `dir`, oldest first.
pub fn day_files(dir: &Path) -> io::Result<Vec<(Date, PathBuf)>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(day) = entry.file_name().to_str().and_then(day_of_name) {
            files.push((day, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// The appending side; owned by the audit writer's thread alone.
pub struct Trail {
    dir: PathBuf,
    open: Option<(Date, File)>,
    unsynced: bool,
}

impl Trail {
    /// The trail in `{data_dir}/audit` (created if missing).
    pub fn new(data_dir: &Path) -> io::Result<Trail> {
        let dir = data_dir.join(AUDIT_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Trail {
            dir,
            open: None,
            unsynced: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one line (without its newline) to the file of `day`.
    pub fn append(&mut self, day: Date, line: &str) -> io::Result<()> {
        if self.open.as_ref().is_none_or(|(d, _)| *d != day) {
            self.close()?;
            let path = self.dir.join(file_name(day));
            let open = || OpenOptions::new().create(true).append(true).open(&path);
            let file = match open() {
                // The directory was removed under us: make it again rather than lose records.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&self.dir)?;
                    open()?
                }
                other => other?,
            };
            if let Ok(d) = File::open(&self.dir) {
                // The new file's name is durable too.
                let _ = d.sync_all();
            }
            self.open = Some((day, file));
        }
        let Some((_, file)) = self.open.as_mut() else {
            return Err(io::Error::other("audit file not open"));
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        file.write_all(&buf)?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            if let Some((_, f)) = &self.open {
                f.sync_data()?;
            }
            self.unsynced = false;
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        self.sync()?;
        self.open = None;
        Ok(())
    }

    /// Removes the day files older than `days` days before `today`; returns how many.
    pub fn prune(&mut self, today: Date, days: u64) -> io::Result<usize> {
        let keep_from = today
            .checked_sub(time::Duration::days(
                i64::try_from(days.saturating_sub(1)).unwrap_or(i64::MAX / 86_400),
            ))
            .unwrap_or(Date::MIN);
        let mut removed = 0;
        for (day, path) in day_files(&self.dir)? {
            if day < keep_from {
                if self.open.as_ref().is_some_and(|(d, _)| *d == day) {
                    self.open = None;
                }
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// What a read of the trail found.
#[derive(Debug, Default)]
pub struct Page {
    /// Oldest first.
    pub records: Vec<serde_json::Value>,
    /// `at` of the first record left out by the limit (read on from there).
    pub next: Option<String>,
}

/// A line's `at` as epoch ms.
fn at_ms(v: &serde_json::Value) -> Option<i128> {
    let at = v.get("at")?.as_str()?;
    let t = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() / 1_000_000)
}

fn read_lines(path: &Path, mut each: impl FnMut(serde_json::Value) -> bool) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        // Pruned meanwhile.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).lines() {
        let line = line?;
        // A partial last line (a crash mid-write) does not parse: skipped.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if !each(v) {
                break;
            }
        }
    }
    Ok(())
}

/// Records at or after `since_ms` (epoch ms), oldest first, at most `limit`; without
/// `since_ms`, the newest `limit` records (still oldest first).
pub fn read(data_dir: &Path, since_ms: Option<i128>, limit: usize) -> io::Result<Page> {
    let dir = data_dir.join(AUDIT_DIR);
    let files = day_files(&dir)?;
    let mut page = Page::default();
    match since_ms {
        Some(since) => {
            let first_day = u64::try_from(since).ok().and_then(day_of_ms);
            for (day, path) in files {
                if first_day.is_some_and(|d| day < d) {
                    continue;
                }
                read_lines(&path, |v| {
                    if at_ms(&v).is_none_or(|t| t < since) {
                        return true;
                    }
                    if page.records.len() >= limit {
                        page.next = v.get("at").and_then(|a| a.as_str()).map(str::to_owned);
                        return false;
                    }
                    page.records.push(v);
                    true
                })?;
                if page.next.is_some() {
                    break;
                }
            }
        }
        None => {
            // Newest files first until the limit is reached, then put back in order.
            let mut newest: std::collections::VecDeque<serde_json::Value> = Default::default();
            for (_, path) in files.iter().rev() {
                let mut day = Vec::new();
                read_lines(path, |v| {
                    day.push(v);
                    true
                })?;
                for v in day.into_iter().rev() {
                    if newest.len() >= limit {
                        break;
                    }
                    newest.push_front(v);
                }
                if newest.len() >= limit {
                    break;
                }
            }
            page.records = newest.into();
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(s: &str) -> Date {
        day_of_name(&format!("{s}.jsonl")).unwrap()
    }

    fn line(at: &str, n: u32) -> String {
        json!({"at": at, "n": n}).to_string()
    }

    #[test]
    fn records_go_to_their_days_file_and_read_back_from_since_on() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Trail::new(tmp.path()).unwrap();
        t.append(day("2026-01-01"), &line("2026-01-01T23:59:59.000Z", 1))
            .unwrap();
        t.append(day("2026-01-02"), &line("2026-01-02T00:00:00.000Z", 2))
            .unwrap();
        t.append(day("2026-01-02"), &line("2026-01-02T10:00:00.000Z", 3))
            .unwrap();
        t.sync().unwrap();
        let names: Vec<_> = day_files(t.dir())
            .unwrap()
            .into_iter()
            .map(|(_, p)| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["2026-01-01.jsonl", "2026-01-02.jsonl"]);

        let ms = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp_nanos()
                / 1_000_000
        };
        let ns = |p: &Page| {
            p.records
                .iter()
                .map(|v| v["n"].as_u64().unwrap())
                .collect::<Vec<_>>()
        };
        let p = read(tmp.path(), Some(ms("2026-01-01T12:00:00Z")), 10).unwrap();
        assert_eq!(ns(&p), [1, 2, 3]);
        let p = read(tmp.path(), Some(ms("2026-01-02T00:00:00Z")), 1).unwrap();
        assert_eq!(ns(&p), [2]);
        assert_eq!(p.next.as_deref(), Some("2026-01-02T10:00:00.000Z"));
        let p = read(tmp.path(), None, 2).unwrap();
        assert_eq!(ns(&p), [2, 3]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_appending_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Trail::new(tmp.path()).unwrap();
        let d = day("2026-03-04");
        t.append(d, &line("2026-03-04T01:00:00.000Z", 1)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(t.dir().join("2026-03-04.jsonl"))
            .unwrap()
            .write_all(b"{\"at\": \"2026-03-04T01:")
            .unwrap();
        let p = read(tmp.path(), None, 10).unwrap();
        assert_eq!(p.records.len(), 1);
    }

    #[test]
    fn a_removed_directory_is_made_again_at_the_next_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Trail::new(tmp.path()).unwrap();
        std::fs::remove_dir_all(t.dir()).unwrap();
        t.append(day("2026-05-06"), &line("2026-05-06T00:00:00.000Z", 1))
            .unwrap();
        assert_eq!(read(tmp.path(), None, 10).unwrap().records.len(), 1);
    }

    #[test]
    fn pruning_keeps_exactly_audit_days_days() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Trail::new(tmp.path()).unwrap();
        for d in ["2026-01-01", "2026-01-08", "2026-01-09", "2026-01-10"] {
            t.append(day(d), &line(&format!("{d}T00:00:00.000Z"), 0))
                .unwrap();
        }
        std::fs::write(t.dir().join("notes.txt"), "kept").unwrap();
        assert_eq!(t.prune(day("2026-01-10"), 3).unwrap(), 1);
        let left: Vec<Date> = day_files(t.dir())
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(
            left,
            [day("2026-01-08"), day("2026-01-09"), day("2026-01-10")]
        );
        assert_eq!(t.prune(day("2026-01-10"), 1).unwrap(), 2);
        assert!(t.dir().join("notes.txt").exists());
        t.append(day("2026-01-10"), &line("2026-01-10T01:00:00.000Z", 1))
            .unwrap();
        assert_eq!(read(tmp.path(), None, 10).unwrap().records.len(), 2);
    }
}
