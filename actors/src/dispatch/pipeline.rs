//! The stages of one dispatch: download → extract → index into the cache → send
//! to every node → final statuses. Each stage is journaled before it is reported,
//! and the pipeline starts from whatever stage the journal says, so a restart
//! (crash, `kill -9`, actor restart) resumes instead of starting over.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use laminate_config::settings::api_endpoint_segments;
use laminate_store::{Findings, NodeStatus, Stage};

use super::cache_index::{index_into_cache, CacheIndexed};
use super::disk_wait;
use super::download::{download, fetch_tail, Download, DownloadError, HEAD_TIMEOUT};
use super::extract::{ArchiveSource, Extracted, Extraction};
use super::follow::{DownloadProgress, Tail};
use super::retry::Retries;
use super::shared::{JobEnv, JobShared};
use super::watchdog::Beat;

const ARCHIVE: &str = "archive.zip";
const EXTRACTED: &str = "x";

/// The archive's end is fetched before its body, up to this much: the central
/// directory of about 5000 entries. A larger one is read when the download gets
/// there (extraction then starts later, nothing else changes).
const TAIL_PROBE: u64 = 1024 * 1024;

/// An extraction that started with the download, following it.
struct Following {
    extraction: Extraction,
    tail: Tail,
}

/// Runs the dispatch to its end (every node final) from its journaled stage.
pub async fn run(env: Rc<JobEnv>, sh: Rc<JobShared>) {
    let mut following = None;
    loop {
        if sh.all_final() {
            finish(&env, &sh).await;
            return;
        }
        let stage = sh.rec.borrow().stage;
        match stage {
            Stage::Queued | Stage::Downloading => following = download_stage(&env, &sh).await,
            Stage::Extracting => extract_stage(&env, &sh, following.take()).await,
            Stage::Sending => super::send_stage::send_stage(&env, &sh).await,
            Stage::Finished => {
                // Finished with open nodes only after a crash mid-update: send what is left.
                set_stage(&env, &sh, Stage::Sending);
            }
        }
    }
}

fn set_stage(env: &JobEnv, sh: &JobShared, stage: Stage) {
    {
        let mut rec = sh.rec.borrow_mut();
        rec.stage = stage;
        rec.updated_at_ms = crate::clock::now_ms();
    }
    sh.journal(env);
}

async fn finish(env: &JobEnv, sh: &JobShared) {
    if sh.rec.borrow().stage != Stage::Finished {
        set_stage(env, sh, Stage::Finished);
    }
    let spool = env.spool_dir(&sh.id());
    let _ = tokio::fs::remove_dir_all(&spool).await;
    let rec = sh.rec.borrow();
    tracing::info!(dispatch = %rec.id, state = ?rec.state(), "dispatch finished");
}

/// Downloads the archive; where the server lets us read its end first, an
/// extraction follows the download and is handed on (stage `Extracting`).
///
/// Every try runs under the stage watchdog: a download that makes no progress
/// for longer than its idle limit (plus the response head's deadline) is
/// dropped and retried like any other transient failure, whatever it was
/// waiting for.
async fn download_stage(env: &JobEnv, sh: &JobShared) -> Option<Following> {
    sh.wait_unpaused().await;
    // Not even the floor itself: wait before anything is fetched.
    disk_wait::wait_for_room(env, sh, 0).await?;
    set_stage(env, sh, Stage::Downloading);
    sh.update_open(env, NodeStatus::Downloading, None);
    let (kind, entity_id, id) = {
        let r = sh.rec.borrow();
        (r.kind, r.entity_id.clone(), r.id.clone())
    };
    let url = match api_endpoint_segments(
        &env.api_url,
        &["api", "proxy", kind.segment(), &entity_id, "download"],
    ) {
        Ok(u) => u,
        Err(e) => {
            sh.update_open(
                env,
                NodeStatus::Failed,
                Some(format!("download: bad entity id: {e}")),
            );
            return None;
        }
    };
    let job = Download {
        url,
        proxy_key: env.proxy_key.clone(),
        dest: env.spool_dir(&id).join(ARCHIVE),
        tls: env.tls.clone(),
        idle_timeout: env.stage_limits.download_idle,
        disk: Some(env.disk.clone()),
    };
    let limit = env.stage_limits.download_idle + HEAD_TIMEOUT;
    let extract_to = env.spool_dir(&id).join(EXTRACTED);
    let tail = {
        let beat = sh.watch.lane("download", None);
        let tail = tokio::select! {
            t = fetch_tail(&job, TAIL_PROBE) => t,
            s = beat.stalled(limit) => {
                tracing::warn!(dispatch = %id, stalled = %s, "tail probe stalled; downloading without it");
                None
            }
            _ = wait_all_final(sh) => None,
        };
        sh.watch.close(&beat);
        tail
    };
    if sh.all_final() {
        return None;
    }
    let mut retries = Retries::default();
    let mut short_by = None;
    loop {
        let total = tail.as_ref().map(|t| t.total);
        disk_wait::before_try(env, sh, &job.dest, total, short_by.take()).await?;
        let started = Instant::now();
        let progress = DownloadProgress::new();
        let beat = sh.watch.lane("download", None);
        let mut follower = None;
        if let Some(tail) = &tail {
            // A previous try may have stopped half-way.
            let _ = tokio::fs::remove_dir_all(&extract_to).await;
            let source = ArchiveSource::Following {
                spool_file: job.dest.clone(),
                tail: tail.clone(),
                progress: progress.clone(),
            };
            // The follower's own progress is the download's: it waits for it.
            follower = Some(Extraction::start(source, &extract_to, &env.limits, None));
        }
        let on_disk = |n| {
            beat.tick();
            progress.on_disk(n);
        };
        let attempt = async {
            #[cfg(feature = "fault-injection")]
            crate::faults::maybe_stall("download").await;
            download(&job, &on_disk).await
        };
        let outcome = tokio::select! {
            r = attempt => Some(r),
            s = beat.stalled(limit) => Some(Err(DownloadError::Transient(s.to_string()))),
            _ = wait_all_final(sh) => None,
        };
        sh.watch.close(&beat);
        progress.ended(matches!(outcome, Some(Ok(_))));
        let Some(outcome) = outcome else {
            if let Some(f) = follower {
                f.cancel().await;
            }
            return None;
        };
        match outcome {
            Ok(bytes) => {
                tracing::info!(dispatch = %id, bytes, seconds = started.elapsed().as_secs_f64(), "archive downloaded");
                set_stage(env, sh, Stage::Extracting);
                return follower
                    .zip(tail)
                    .map(|(extraction, tail)| Following { extraction, tail });
            }
            Err(DownloadError::NoRoom(short)) => {
                if let Some(f) = follower {
                    f.cancel().await;
                }
                short_by = Some(short.need);
            }
            Err(
                e @ (DownloadError::NotFound
                | DownloadError::Rejected(_)
                | DownloadError::Refused(_)),
            ) => {
                if let Some(f) = follower {
                    f.cancel().await;
                }
                let _ = tokio::fs::remove_file(&job.dest).await;
                sh.update_open(env, NodeStatus::Failed, Some(e.to_string()));
                return None;
            }
            Err(e) => {
                // Stopped without blocking this thread: the job's arbiter
                // serves other jobs meanwhile.
                if let Some(f) = follower {
                    f.cancel().await;
                }
                let delay = retry_delay(env, sh, &mut retries, &format!("download: {e}"))?;
                tracing::warn!(dispatch = %id, error = %e, retry_in_s = delay.as_secs(), "download failed; retrying");
                sleep_through(sh, delay).await;
                sh.wait_unpaused().await;
                if sh.all_final() {
                    return None;
                }
                sh.update_open(env, NodeStatus::Downloading, None);
            }
        }
    }
}

/// A transient failure of a stage reported for every open node: `retrying`
/// with the delay, or `failed` once the tries are used up (then `None`).
fn retry_delay(
    env: &JobEnv,
    sh: &JobShared,
    retries: &mut Retries,
    error: &str,
) -> Option<Duration> {
    match retries.next(&sh.policy.get()) {
        None => {
            sh.update_open(
                env,
                NodeStatus::Failed,
                Some(format!(
                    "{error} (gave up after {} tries)",
                    retries.failures()
                )),
            );
            None
        }
        Some(delay) => {
            sh.update_open(
                env,
                NodeStatus::Retrying,
                Some(format!("{error}; next try in {} s", delay.as_secs())),
            );
            Some(delay)
        }
    }
}

/// Sleeps the whole delay unless every node became final meanwhile.
async fn sleep_through(sh: &JobShared, delay: Duration) {
    let until = Instant::now() + delay;
    while Instant::now() < until && !sh.all_final() {
        sh.sleep(until - Instant::now()).await;
    }
}

async fn wait_all_final(sh: &JobShared) {
    while !sh.all_final() {
        sh.changed.notified().await;
    }
}

/// Extracts and indexes the archive under the stage watchdog: an extraction or
/// an indexing that makes no progress for the stage limit is dropped and tried
/// again (from the downloaded archive) with the retry policy's backoff.
async fn extract_stage(env: &JobEnv, sh: &JobShared, following: Option<Following>) {
    sh.wait_unpaused().await;
    let archive = env.spool_dir(&sh.id()).join(ARCHIVE);
    if following.is_none()
        && disk_wait::before_extracting(env, sh, &archive)
            .await
            .is_none()
    {
        return;
    }
    if sh.all_final() {
        return;
    }
    sh.update_open(env, NodeStatus::Extracting, None);
    let mut following = following;
    let mut retries = Retries::default();
    loop {
        let beat = sh.watch.lane("extract", None);
        // A cancel (the entity deleted) drops the extraction: it stops at its
        // next chunk and removes what it wrote; `finish` removes the spool.
        let outcome = tokio::select! {
            () = extract_and_index(env, sh, following.take(), &beat) => None,
            s = beat.stalled(env.stage_limits.stage_idle) => Some(s),
            _ = wait_all_final(sh) => None,
        };
        sh.watch.close(&beat);
        let Some(stalled) = outcome else { return };
        tracing::warn!(dispatch = %sh.id(), %stalled, "extraction stalled; retrying");
        let Some(delay) = retry_delay(env, sh, &mut retries, &stalled.to_string()) else {
            return;
        };
        sleep_through(sh, delay).await;
        sh.wait_unpaused().await;
        if sh.all_final() {
            return;
        }
        sh.update_open(env, NodeStatus::Extracting, None);
    }
}

/// One try of the extract stage: ends with the stage `Sending`, or with every
/// open node `failed` (a refused archive, nothing to send, the index lost).
async fn extract_and_index(
    env: &JobEnv,
    sh: &JobShared,
    following: Option<Following>,
    beat: &Beat,
) {
    #[cfg(feature = "fault-injection")]
    crate::faults::maybe_stall("extract").await;
    let id = sh.id();
    let spool = env.spool_dir(&id);
    let archive = spool.join(ARCHIVE);
    let dest = spool.join(EXTRACTED);
    let started = Instant::now();
    let followed = match following {
        Some(f) => finish_following(f, &archive).await,
        None => None,
    };
    let extracted = match followed {
        Some(x) => Ok(x),
        None => {
            // A previous try may have stopped half-way.
            let _ = tokio::fs::remove_dir_all(&dest).await;
            Extraction::start(
                ArchiveSource::File(archive.clone()),
                &dest,
                &env.limits,
                Some(beat.clone()),
            )
            .finish()
            .await
        }
    };
    let extracted = match extracted {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(dispatch = %id, error = %e, "archive refused");
            let _ = tokio::fs::remove_dir_all(&spool).await;
            sh.update_open(env, NodeStatus::Failed, Some(format!("archive: {e}")));
            return;
        }
    };
    let extract_s = started.elapsed().as_secs_f64();
    if sh.all_final() {
        // Cancelled meanwhile: nothing of it goes into the cache.
        return;
    }
    let started = Instant::now();
    beat.tick();
    #[cfg(feature = "fault-injection")]
    crate::faults::maybe_stall("index").await;
    let store = env.store.clone();
    let data_dir = env.data_dir.clone();
    let subject = sh.rec.borrow().subject_id.clone();
    let d = dest.clone();
    let b = beat.clone();
    let indexed = tokio::task::spawn_blocking(move || {
        index_into_cache(&store, &data_dir, &d, subject.as_deref(), &b)
    })
    .await;
    let CacheIndexed {
        files,
        studies,
        skipped,
    } = match indexed.map_err(|e| e.to_string()).and_then(|r| r) {
        Ok(x) => x,
        Err(e) => {
            sh.update_open(
                env,
                NodeStatus::Failed,
                Some(format!("indexing failed: {e}")),
            );
            return;
        }
    };
    tracing::info!(dispatch = %id, files = extracted.files.len(), instances = files.len(), skipped = skipped.len(), extract_s, index_s = started.elapsed().as_secs_f64(), "archive extracted and indexed");
    if let Err(e) = env.store.journal_set_skipped(&id, skipped) {
        tracing::error!(error = %e, dispatch = %id, "cannot journal the skipped entries");
    }
    if files.is_empty() {
        let _ = tokio::fs::remove_dir_all(&spool).await;
        sh.update_open(
            env,
            NodeStatus::Failed,
            Some("the archive holds no DICOM instance".into()),
        );
        return;
    }
    if let Err(e) = env.store.journal_set_instance_files(&id, &files) {
        tracing::error!(error = %e, dispatch = %id, "cannot journal the instance set");
        return;
    }
    sh.rec.borrow_mut().study_uids = studies.into_iter().collect();
    set_stage(env, sh, Stage::Sending);
    // The spool (the archive) stays until the dispatch finishes: removing a
    // large file frees (and on a `discard` mount trims) its blocks in the next
    // journal commit, and every acknowledgement's flush would wait for that.
}

/// The result of the extraction that followed the download, if it can be
/// trusted: it succeeded, and the archive on disk ends with the tail it read
/// the central directory from. Otherwise `None`, and the downloaded archive is
/// extracted again (an archive refused here is refused there too, with the
/// same error).
async fn finish_following(f: Following, archive: &Path) -> Option<Extracted> {
    let extracted = match f.extraction.finish().await {
        Ok(x) => x,
        Err(e) => {
            tracing::info!(error = %e, "extraction while downloading failed; extracting the downloaded archive");
            return None;
        }
    };
    let (tail, path) = (f.tail, archive.to_path_buf());
    let same = tokio::task::spawn_blocking(move || tail.matches_file(&path)).await;
    if matches!(same, Ok(Ok(true))) {
        return Some(extracted);
    }
    tracing::warn!(
        "the archive's end changed between its two requests; extracting the downloaded archive"
    );
    None
}
