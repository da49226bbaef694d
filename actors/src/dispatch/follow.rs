//! An archive that is still being downloaded, read as if it were whole, so that
//! extraction can run alongside the download.
//!
//! The archive's end (its central directory) is fetched first with a suffix
//! `Range` request and kept in memory; the rest is read from the spool file as
//! the download writes it: a read past what is on disk waits for the download.
//! Extraction still checks the whole central directory before it writes
//! anything (PROTOCOL.md §5): it is in the tail, so that costs no waiting.
//!
//! Touches only the spool file (read-only) and the download's progress.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often a waiting reader looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// A reader waits for this much (or the end) rather than wake for every chunk
/// the download writes: the two share the CPU.
const MIN_READ: u64 = 256 * 1024;

/// Where the download is, shared between it (writer) and the reader.
#[derive(Debug, Default)]
pub struct DownloadProgress {
    state: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Bytes of the archive in the spool file, from its start.
    on_disk: u64,
    /// The download ended: `Some(true)` complete, `Some(false)` failed.
    ended: Option<bool>,
    /// A reader waits until this many bytes are on disk (0: none waits): the
    /// download wakes it then, not at every chunk.
    awaited: u64,
}

impl DownloadProgress {
    pub fn new() -> Arc<DownloadProgress> {
        Arc::new(DownloadProgress::default())
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        // Two plain fields: consistent whatever panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spool file now holds this many bytes (it may go down: a download
    /// that has to start over truncates the file).
    pub fn on_disk(&self, bytes: u64) {
        let mut st = self.lock();
        st.on_disk = bytes;
        let wake = st.awaited > 0 && bytes >= st.awaited;
        drop(st);
        if wake {
            self.changed.notify_all();
        }
    }

    /// The download ended, complete or not: readers waiting for more stop.
    pub fn ended(&self, complete: bool) {
        self.lock().ended = Some(complete);
        self.changed.notify_all();
    }
}

/// The archive's last bytes, fetched before the body.
#[derive(Debug, Clone)]
pub struct Tail {
    /// The archive's total length.
    pub total: u64,
    /// The bytes `[total - bytes.len(), total)`.
    pub bytes: Arc<[u8]>,
}

impl Tail {
    pub fn start(&self) -> u64 {
        self.total - self.bytes.len() as u64
    }

    /// Whether the finished spool file ends with these bytes (the archive did
    /// not change between the two requests).
    pub fn matches_file(&self, path: &Path) -> io::Result<bool> {
        let mut f = File::open(path)?;
        if f.metadata()?.len() != self.total {
            return Ok(false);
        }
        f.seek(SeekFrom::Start(self.start()))?;
        let mut on_disk = vec![0; self.bytes.len()];
        f.read_exact(&mut on_disk)?;
        Ok(on_disk[..] == self.bytes[..])
    }
}

/// A read that will never succeed: the download failed or the reader was
/// cancelled. Deliberately not `ErrorKind::Interrupted`: `std`'s `read_exact`,
/// `BufReader` and futures' `AllowStdIo` retry an interrupted read at once, so
/// that kind made a reader of a failed download spin forever (and the job that
/// waited for it hang in `downloading`).
fn stopped(why: &'static str) -> io::Error {
    io::Error::other(why)
}

/// `Read + Seek` over the archive being downloaded: the tail from memory, the
/// rest from the spool file once the download has written it.
pub struct FollowedArchive {
    path: PathBuf,
    /// Opened once the download has written something.
    file: Option<File>,
    tail: Tail,
    progress: Arc<DownloadProgress>,
    cancel: Arc<AtomicBool>,
    pos: u64,
}

impl FollowedArchive {
    /// Reads `spool_file` as the download writes it (it need not exist yet).
    pub fn new(
        spool_file: &Path,
        tail: Tail,
        progress: Arc<DownloadProgress>,
        cancel: Arc<AtomicBool>,
    ) -> FollowedArchive {
        FollowedArchive {
            path: spool_file.to_path_buf(),
            file: None,
            tail,
            progress,
            cancel,
            pos: 0,
        }
    }

    /// Waits until the spool file holds `need` bytes from `self.pos` (fewer
    /// once the download ended complete); returns how many it holds.
    fn wait_for_data(&self, need: u64) -> io::Result<u64> {
        let mut st = self.progress.lock();
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(stopped("cancelled"));
            }
            let there = st.on_disk.saturating_sub(self.pos);
            if there >= need || (there > 0 && st.ended.is_some()) {
                st.awaited = 0;
                return Ok(there);
            }
            st.awaited = self.pos + need;
            match st.ended {
                Some(true) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the downloaded archive is shorter than announced",
                    ))
                }
                Some(false) => return Err(stopped("the download stopped")),
                None => {}
            }
            st = self
                .progress
                .changed
                .wait_timeout(st, CANCEL_POLL)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Read for FollowedArchive {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (total, tail_start) = (self.tail.total, self.tail.start());
        if self.pos >= total || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= tail_start {
            let at = (self.pos - tail_start) as usize;
            let n = buf.len().min(self.tail.bytes.len() - at);
            buf[..n].copy_from_slice(&self.tail.bytes[at..at + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        loop {
            let need = (buf.len() as u64).min(tail_start - self.pos).min(MIN_READ);
            let available = self.wait_for_data(need.max(1))?.min(tail_start - self.pos);
            let want = buf
                .len()
                .min(usize::try_from(available).unwrap_or(usize::MAX));
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(File::open(&self.path)?),
            };
            let n = file.read_at(&mut buf[..want], self.pos)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            // The download started over and truncated the file after we
            // learnt its length: wait for it to get here again.
            std::thread::sleep(Duration::from_millis(1));
            if self.cancel.load(Ordering::Relaxed) {
                return Err(stopped("cancelled"));
            }
        }
    }
}

impl Seek for FollowedArchive {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::End(d) => (self.tail.total, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        match base.0.checked_add_signed(base.1) {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the archive",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn archive() -> Vec<u8> {
        (0..10_000u32).map(|i| (i % 251) as u8).collect()
    }

    fn tail_of(data: &[u8], n: usize) -> Tail {
        Tail {
            total: data.len() as u64,
            bytes: data[data.len() - n..].into(),
        }
    }

    #[test]
    fn the_tail_is_read_at_once_and_the_rest_as_the_download_writes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive.zip");
        let data = archive();
        let progress = DownloadProgress::new();
        let cancel = Arc::new(AtomicBool::new(false));
        let mut view = FollowedArchive::new(&path, tail_of(&data, 1000), progress.clone(), cancel);
        // The end is there before a byte is downloaded.
        let mut end = [0u8; 22];
        view.seek(SeekFrom::End(-22)).expect("seek");
        view.read_exact(&mut end).expect("tail");
        assert_eq!(end[..], data[data.len() - 22..]);
        // The start comes as the download writes it.
        let writer = {
            let (path, data, progress) = (path.clone(), data.clone(), progress.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(&path).expect("create");
                for chunk in data.chunks(700) {
                    std::thread::sleep(Duration::from_millis(2));
                    f.write_all(chunk).expect("write");
                    progress.on_disk(f.metadata().expect("len").len());
                }
                progress.ended(true);
            })
        };
        view.seek(SeekFrom::Start(0)).expect("seek");
        let mut all = Vec::new();
        view.read_to_end(&mut all).expect("read");
        writer.join().expect("writer");
        assert_eq!(all, data);
    }

    #[test]
    fn a_failed_download_or_a_cancel_ends_a_waiting_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive.zip");
        let data = archive();
        let progress = DownloadProgress::new();
        let cancel = Arc::new(AtomicBool::new(false));
        let mut view =
            FollowedArchive::new(&path, tail_of(&data, 100), progress.clone(), cancel.clone());
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            progress.ended(false);
        });
        let mut buf = [0u8; 10];
        let err = view.read(&mut buf).expect_err("stopped");
        assert_ne!(err.kind(), io::ErrorKind::Interrupted);
        stopper.join().expect("stopper");

        let mut view = FollowedArchive::new(
            &path,
            tail_of(&data, 100),
            DownloadProgress::new(),
            cancel.clone(),
        );
        cancel.store(true, Ordering::Relaxed);
        assert!(view.read(&mut buf).is_err());
    }

    /// `read_exact` (as the zip reader uses through `BufReader`) retries
    /// interrupted reads: a failed download must end it, not make it spin.
    #[test]
    fn read_exact_over_a_failed_download_returns_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive.zip");
        let data = archive();
        let progress = DownloadProgress::new();
        progress.ended(false);
        let cancel = Arc::new(AtomicBool::new(false));
        let view = FollowedArchive::new(&path, tail_of(&data, 100), progress, cancel);
        let mut reader = io::BufReader::new(view);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let _ = tx.send(reader.read_exact(&mut buf).is_err());
        });
        let failed = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("read_exact returned");
        assert!(failed);
    }

    #[test]
    fn a_file_that_ends_otherwise_than_the_tail_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive.zip");
        let data = archive();
        std::fs::write(&path, &data).expect("write");
        assert!(tail_of(&data, 500).matches_file(&path).expect("read"));
        let mut other = data.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        assert!(!tail_of(&other, 500).matches_file(&path).expect("read"));
        std::fs::write(&path, &data[..9000]).expect("write");
        assert!(!tail_of(&data, 500).matches_file(&path).expect("read"));
    }
}
