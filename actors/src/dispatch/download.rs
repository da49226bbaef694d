//! Downloading a dispatch's archive (PROTOCOL.md §5): streamed to the job's spool
//! file, never held in memory; resumed with `Range` where the server answers 206;
//! same-origin redirects only; no decompression; a per-chunk idle timeout.
//!
//! awc reports a connection cut between chunks as a clean end of body, so a
//! download is complete only when its length is confirmed (Content-Length or
//! Content-Range) or, without one, when the archive's end record is present.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use awc::http::header;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use url::Url;

use super::follow::Tail;
use crate::disk::{DiskState, Shortage};

/// Deadline for the response head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A body that sends nothing for this long is a transient failure (the
/// default of [`Download::idle_timeout`]).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// While streaming, the free space is read again after this many bytes (other writers
/// share the disk), and whenever the room last read is used up.
const ROOM_CHECK_EVERY: u64 = 4 * 1024 * 1024;
/// Stopped at the floor with the archive's size unknown, a download waits for this much
/// room above it before it resumes (rather than stopping again a few chunks later).
const ROOM_TO_RESUME: u64 = 64 * 1024 * 1024;
/// Same-origin redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Why a download did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// 404: the entity does not exist (final).
    #[error("not found")]
    NotFound,
    /// 401/403: the key is not allowed to download it (final).
    #[error("download rejected ({0})")]
    Rejected(u16),
    /// A redirect off `api_url`'s origin, or another answer that retrying cannot fix (final).
    #[error("{0}")]
    Refused(String),
    /// 5xx, resets, timeouts, a cut body: retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// The spool file could not be written (disk full, permissions): retried.
    #[error("spool: {0}")]
    Local(String),
    /// Writing on would cross the free-space floor (`min_free_gb`): the partial file
    /// stays for a `Range` resume once there is room (`disk_wait.rs`).
    #[error("waiting for disk space ({} bytes short)", .0.missing())]
    NoRoom(Shortage),
}

impl DownloadError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DownloadError::Transient(_) | DownloadError::Local(_))
    }
}

/// One archive to fetch.
#[derive(Clone)]
pub struct Download {
    pub url: Url,
    pub proxy_key: String,
    pub dest: PathBuf,
    pub tls: Arc<rustls::ClientConfig>,
    /// A body that sends nothing for this long is a transient failure.
    pub idle_timeout: Duration,
    /// The free-space floor the download must not cross (`None`: unchecked). Checked
    /// against the announced size before the body, and every few MiB while it streams.
    pub disk: Option<Arc<DiskState>>,
}

/// Fetches the archive into `dest`, resuming a partial file when the server allows;
/// calls `progress(bytes_in_the_file)` as data arrives (only bytes a reader of the
/// file can already read). Returns the archive's size.
pub async fn download(d: &Download, progress: &dyn Fn(u64)) -> Result<u64, DownloadError> {
    let client = client(d);
    if let Some(dir) = d.dest.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| DownloadError::Local(e.to_string()))?;
    }
    let have = tokio::fs::metadata(&d.dest)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let range = (have > 0).then(|| format!("bytes={have}-"));
    let mut resp = get(&client, d, range).await?;
    let code = resp.status().as_u16();
    let (append, expected_total) = match code {
        200 => (false, content_length(resp.headers())),
        206 => match content_range(resp.headers()) {
            Some((start, total)) if start == have => (true, total),
            _ => {
                return Err(restart(&d.dest, "inconsistent Content-Range").await);
            }
        },
        416 => return Err(restart(&d.dest, "range not satisfiable").await),
        404 => return Err(DownloadError::NotFound),
        401 | 403 => return Err(DownloadError::Rejected(code)),
        c if c >= 500 => return Err(DownloadError::Transient(format!("server error {c}"))),
        c => return Err(DownloadError::Refused(format!("unexpected answer {c}"))),
    };
    if let (Some(disk), Some(total)) = (&d.disk, expected_total) {
        let already = if append { have } else { 0 };
        disk.room_for(room_needed(total, already))
            .map_err(DownloadError::NoRoom)?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!append)
        .append(append)
        .open(&d.dest)
        .await
        .map_err(|e| DownloadError::Local(e.to_string()))?;
    let mut written = if append { have } else { 0 };
    let mut room = Room::default();
    progress(written);
    loop {
        let chunk = match tokio::time::timeout(d.idle_timeout, resp.next()).await {
            Err(_) => {
                let _ = file.sync_all().await;
                return Err(DownloadError::Transient(format!(
                    "no data for {} s",
                    d.idle_timeout.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let _ = file.sync_all().await;
                return Err(DownloadError::Transient(format!("body cut: {e}")));
            }
            Ok(Some(Ok(bytes))) => bytes,
        };
        if let Some(disk) = &d.disk {
            if let Err(short) = room.take(disk, chunk.len() as u64) {
                let _ = file.sync_all().await;
                let need = expected_total.map_or(ROOM_TO_RESUME, |t| room_needed(t, written));
                return Err(DownloadError::NoRoom(Shortage { need, ..short }));
            }
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| DownloadError::Local(e.to_string()))?;
        // tokio's file takes a write before it has reached the OS, and the one
        // before only once that has: `written` is now in the file, not yet the
        // new chunk (a reader of the file relies on this).
        progress(written);
        written += chunk.len() as u64;
    }
    file.flush()
        .await
        .map_err(|e| DownloadError::Local(e.to_string()))?;
    progress(written);
    file.sync_all()
        .await
        .map_err(|e| DownloadError::Local(e.to_string()))?;
    drop(file);
    match expected_total {
        Some(total) if written < total => Err(DownloadError::Transient(format!(
            "body cut after {written} of {total} bytes"
        ))),
        Some(total) if written > total => Err(restart(&d.dest, "more bytes than announced").await),
        Some(_) => Ok(written),
        None if has_zip_end_record(&d.dest).await => Ok(written),
        None => Err(DownloadError::Transient(format!(
            "body ended after {written} bytes without the archive's end record"
        ))),
    }
}

/// The room above the floor a streaming download may still write into without reading
/// the free space again.
#[derive(Debug, Default)]
struct Room {
    /// Bytes that may still be written (0: read the free space first).
    left: u64,
    /// Bytes written since the free space was read.
    since_read: u64,
}

impl Room {
    /// Takes `n` bytes of room, reading the free space when the room is used up or
    /// [`ROOM_CHECK_EVERY`] bytes went since; `Err` when writing `n` would cross the floor.
    fn take(&mut self, disk: &DiskState, n: u64) -> Result<(), Shortage> {
        if self.left < n || self.since_read >= ROOM_CHECK_EVERY {
            self.since_read = 0;
            self.left = match disk.headroom() {
                Some(Ok(room)) => room,
                Some(Err(short)) => return Err(short),
                // Not knowing is no reason to stop: writing will tell.
                None => u64::MAX,
            };
            if self.left < n {
                let floor = disk.min_free_bytes();
                return Err(Shortage {
                    free: floor.saturating_add(self.left),
                    floor,
                    need: n,
                });
            }
        }
        self.left -= n;
        self.since_read += n;
        Ok(())
    }
}

/// The room a download of a `total`-byte archive with `have` bytes in the spool needs
/// above the floor: the rest of the archive, and its extracted files (counted as large as
/// the archive: DICOM compresses little, and the extraction limits refuse bombs).
pub fn room_needed(total: u64, have: u64) -> u64 {
    total.saturating_sub(have).saturating_add(total)
}

/// The client of a download: TLS as configured, the head deadline, redirects
/// followed by [`get`] (same origin only).
fn client(d: &Download) -> awc::Client {
    crate::http_client::client_builder(d.tls.clone())
        .timeout(HEAD_TIMEOUT)
        .disable_redirects()
        .finish()
}

/// GET with the key and an optional `Range`, following same-origin redirects only.
async fn get(
    client: &awc::Client,
    d: &Download,
    range: Option<String>,
) -> Result<
    awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
    DownloadError,
> {
    let mut url = d.url.clone();
    let mut hops = 0;
    loop {
        let mut req = client
            .get(url.as_str())
            .insert_header(("X-Proxy-Key", d.proxy_key.as_str()))
            .no_decompress();
        if let Some(r) = &range {
            req = req.insert_header((header::RANGE, r.as_str()));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| DownloadError::Transient(format!("request failed: {e}")))?;
        let code = resp.status().as_u16();
        if !(300..400).contains(&code) {
            return Ok(resp);
        }
        let next = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .ok_or_else(|| {
                DownloadError::Refused(format!("redirect ({code}) without a usable Location"))
            })?;
        if next.origin() != d.url.origin() {
            return Err(DownloadError::Refused(format!(
                "redirect to another origin refused ({})",
                next.origin().ascii_serialization()
            )));
        }
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(DownloadError::Refused("too many redirects".into()));
        }
        url = next;
    }
}

/// Fetches the archive's last `max_len` bytes (its central directory, usually)
/// with a suffix `Range`, so that extraction can start before the body is in.
/// `None` when the server does not answer 206 with a usable `Content-Range`,
/// or anything else goes wrong: the download then runs alone, as without it.
pub async fn fetch_tail(d: &Download, max_len: u64) -> Option<Tail> {
    let client = client(d);
    let mut resp = get(&client, d, Some(format!("bytes=-{max_len}")))
        .await
        .ok()?;
    if resp.status().as_u16() != 206 {
        // Probably the whole body (no range support): not read.
        return None;
    }
    let (start, total) = match content_range(resp.headers())? {
        (start, Some(total)) if start < total && total - start <= max_len => (start, total),
        _ => return None,
    };
    let body = tokio::time::timeout(d.idle_timeout, resp.body().limit(max_len as usize))
        .await
        .ok()?
        .ok()?;
    (body.len() as u64 == total - start).then(|| Tail {
        total,
        bytes: body.to_vec().into(),
    })
}

/// Deletes a partial file that cannot be resumed; the retry starts from zero.
async fn restart(dest: &Path, why: &str) -> DownloadError {
    let _ = tokio::fs::remove_file(dest).await;
    DownloadError::Transient(format!("{why}; starting over"))
}

fn content_length(h: &header::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL if known).
fn content_range(h: &header::HeaderMap) -> Option<(u64, Option<u64>)> {
    parse_content_range(h.get(header::CONTENT_RANGE)?.to_str().ok()?)
}

fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Whether the file ends with a zip end-of-central-directory record (within the
/// last 64 KiB + 22 bytes, the record's maximal distance from the end).
pub async fn has_zip_end_record(path: &Path) -> bool {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return false;
    };
    let Ok(len) = f.metadata().await.map(|m| m.len()) else {
        return false;
    };
    let tail = len.min(65_536 + 22);
    if tail < 22 || f.seek(std::io::SeekFrom::Start(len - tail)).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; tail as usize];
    if f.read_exact(&mut buf).await.is_err() {
        return false;
    }
    buf.windows(4)
        .rposition(|w| w == EOCD)
        .is_some_and(|i| buf.len() - i >= 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }

    #[test]
    fn streaming_room_is_refused_under_the_floor_and_given_above_it() {
        let mut settings = laminate_config::ProxySettings {
            min_free_gb: 0.0,
            ..Default::default()
        };
        let disk = DiskState::new(std::env::temp_dir(), &settings);
        let mut room = Room::default();
        for _ in 0..10 {
            room.take(&disk, 64 * 1024)
                .expect("room above a zero floor");
        }
        // A floor above anything free: the next read of the free space refuses.
        settings.min_free_gb = 100_000.0;
        disk.apply(&settings);
        let mut room = Room::default();
        let short = room.take(&disk, 1).expect_err("under the floor");
        assert_eq!(short.floor, 100_000_000_000_000);
        assert!(short.missing() > 0);
    }
}
