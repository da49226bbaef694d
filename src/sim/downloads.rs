//! The download API (PROTOCOL.md §5): `GET …/api/proxy/{subjects|sessions|scans}/{id}/download`.
//!
//! Archives are kept as `Bytes` and served as slices of it, so a body of hundreds of MB
//! costs no copy per request. Bodies are always streamed (chunked, no Content-Length) so
//! the client under test has to stream too. Scripted steps (see `DownloadStep`) let tests
//! inject failures one request at a time.

use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};

use super::state::{DownloadRequest, DownloadStep, EntityKind, Shared};

/// Size of the body chunks we hand to actix (one chunked-encoding chunk each, roughly).
const CHUNK: usize = 64 * 1024;

/// Pause before a scripted cut, so that the bytes already handed over are flushed to the
/// socket before the connection is dropped (actix drops the connection, unflushed data
/// included, as soon as the body stream fails).
const CUT_FLUSH: Duration = Duration::from_millis(200);

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>>>>;

/// `…/api/proxy/{kind}/{id}/download` (any prefix before `/api`) → (kind, id).
pub(crate) fn parse_path(path: &str) -> Option<(EntityKind, String)> {
    let mut segs = path.rsplit('/');
    if segs.next()? != "download" {
        return None;
    }
    let id = segs.next().filter(|id| !id.is_empty())?;
    let kind = EntityKind::from_segment(segs.next()?)?;
    (segs.next()? == "proxy" && segs.next()? == "api").then(|| (kind, id.to_owned()))
}

/// Answers one download request (method already checked by the caller).
pub(crate) fn serve(
    req: &HttpRequest,
    kind: EntityKind,
    id: String,
    shared: &Shared,
) -> HttpResponse {
    let key_ok = req
        .headers()
        .get("x-proxy-key")
        .and_then(|v| v.to_str().ok())
        == Some(shared.proxy_key.as_str());
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let (step, archive, ignore_ranges) = shared.update(|s| {
        let request = DownloadRequest {
            kind,
            id: id.clone(),
            range: range.clone(),
            key_ok,
            at: Instant::now(),
        };
        let tail_probe = request.is_tail_probe();
        s.download_requests.push(request);
        let key = (kind, id);
        // A request with a wrong key does not consume a scripted step: the script
        // describes what the backend does to the body requests it would otherwise
        // serve (tail probes are not part of it, so scripts mean the same whether
        // or not the client probes first).
        let step = if key_ok && !tail_probe {
            s.scripts.get_mut(&key).and_then(|q| q.pop_front())
        } else {
            None
        };
        (step, s.downloads.get(&key).cloned(), s.ignore_ranges)
    });

    if !key_ok {
        return HttpResponse::Unauthorized().finish();
    }
    let (cut, archive) = match step {
        Some(DownloadStep::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return HttpResponse::build(status).finish();
        }
        Some(DownloadStep::RedirectTo(url)) => {
            return HttpResponse::Found()
                .insert_header((header::LOCATION, url))
                .finish();
        }
        Some(DownloadStep::Stall) => {
            return HttpResponse::Ok()
                .content_type("application/zip")
                .streaming(stream::pending::<Result<Bytes, io::Error>>());
        }
        Some(DownloadStep::CutAfter(n)) => (Some(n), archive),
        Some(DownloadStep::Body(replacement)) => (None, Some(replacement)),
        Some(DownloadStep::Normal) | None => (None, archive),
    };
    let Some(archive) = archive else {
        return HttpResponse::NotFound().finish();
    };

    let total = archive.len();
    let range = range
        .as_deref()
        .filter(|_| !ignore_ranges)
        .and_then(|r| resolve_range(r, total));
    let (mut response, data) = match range {
        None => (HttpResponse::Ok(), archive),
        Some((start, _)) if start >= total => {
            return HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{total}")))
                .finish();
        }
        Some((start, end)) => {
            let end = end.map_or(total - 1, |e| e.min(total - 1));
            let mut partial = HttpResponse::PartialContent();
            partial.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{total}"),
            ));
            (partial, archive.slice(start..=end))
        }
    };
    response
        .content_type("application/zip")
        .insert_header((
            header::ACCEPT_RANGES,
            if ignore_ranges { "none" } else { "bytes" },
        ))
        .streaming(body(data, cut))
}

/// A `Range` value against an archive of `total` bytes: `bytes=-N` (the last N,
/// RFC 9110 §14.1.2) as an absolute range, the rest as [`parse_range`].
pub(super) fn resolve_range(value: &str, total: usize) -> Option<(usize, Option<usize>)> {
    match value.trim().strip_prefix("bytes=-") {
        Some(n) => {
            let n: usize = n.trim().parse().ok().filter(|n| *n > 0)?;
            Some((total.saturating_sub(n), None))
        }
        None => parse_range(value),
    }
}

/// `bytes=N-` or `bytes=N-M` → (N, M). Anything else (suffix or multiple ranges, bad
/// syntax, M < N) is ignored and the whole archive is served, which RFC 9110 allows.
pub(super) fn parse_range(value: &str) -> Option<(usize, Option<usize>)> {
    let (start, end) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse().ok().filter(|e| *e >= start)?),
    };
    Some((start, end))
}

/// The body as 64 KiB slices of `data`; with `cut`, only the first `cut` bytes and then an
/// error, which makes actix drop the connection mid-body.
fn body(data: Bytes, cut: Option<usize>) -> Body {
    let len = cut.map_or(data.len(), |n| n.min(data.len()));
    let chunks = stream::iter(
        (0..len)
            .step_by(CHUNK)
            .map(move |at| Ok(data.slice(at..(at + CHUNK).min(len)))),
    );
    match cut {
        None => Box::pin(chunks),
        Some(_) => Box::pin(chunks.chain(stream::once(async {
            tokio::time::sleep(CUT_FLUSH).await;
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "sim: scripted cut",
            ))
        }))),
    }
}
