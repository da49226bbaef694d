//! A download that would cross the free-space floor (`min_free_gb`) waits: every open
//! node is reported `queued` with the reason `waiting for disk space`, the evictor is
//! asked for the missing bytes, and the room is looked at again whenever an eviction
//! freed something or the limits changed, and every [`RECHECK`] (space freed by hand).
//! No retry is used up by waiting; the partial archive stays for a `Range` resume.

use std::path::Path;
use std::time::Duration;

use laminate_store::NodeStatus;

use super::shared::{JobEnv, JobShared};

/// The reason reported while waiting (PROTOCOL's `queued` with `error`).
pub const WAITING_FOR_DISK_SPACE: &str = "waiting for disk space";

/// How often the free space is read while waiting without being woken.
const RECHECK: Duration = Duration::from_secs(5);
/// How often the evictor is asked again while the shortage lasts (each ask is a pass
/// that reads the journal).
const ASK_EVERY: Duration = Duration::from_secs(60);

/// Waits until `need` bytes fit above the floor: `Some(waited)`, or `None` when every
/// node became final meanwhile (cancelled). Reports `queued` on the first shortage; the
/// caller reports what comes next.
pub(super) async fn wait_for_room(env: &JobEnv, sh: &JobShared, need: u64) -> Option<bool> {
    let mut waiting = false;
    let mut asked: Option<(std::time::Instant, u64)> = None;
    loop {
        if sh.all_final() {
            return None;
        }
        let short = match env.disk.room_for(need) {
            Ok(()) => {
                if waiting {
                    tracing::info!(dispatch = %sh.id(), "disk space available again");
                }
                return Some(waiting);
            }
            Err(short) => short,
        };
        let missing = short.missing();
        let ask = asked.is_none_or(|(at, before)| missing > before || at.elapsed() >= ASK_EVERY);
        if ask {
            env.disk.want_space(missing);
            asked = Some((std::time::Instant::now(), missing));
        }
        if !waiting {
            waiting = true;
            tracing::warn!(
                dispatch = %sh.id(),
                free = short.free,
                floor = short.floor,
                need = short.need,
                "download waits for disk space"
            );
            sh.update_open(
                env,
                NodeStatus::Queued,
                Some(WAITING_FOR_DISK_SPACE.to_owned()),
            );
        }
        tokio::select! {
            () = env.disk.space_changed() => {}
            _ = sh.sleep(RECHECK) => {}
        }
        sh.wait_unpaused().await;
    }
}

/// Before a download try: waits for room for the rest of the archive and its extraction
/// (`short_by`: what the last try said it lacked; else from the archive's size, when
/// known), and reports `downloading` again if it waited. `None`: every node is final.
pub(super) async fn before_try(
    env: &JobEnv,
    sh: &JobShared,
    dest: &Path,
    total: Option<u64>,
    short_by: Option<u64>,
) -> Option<()> {
    let need = match (short_by, total) {
        (Some(need), _) => need,
        (None, None) => 0,
        (None, Some(total)) => {
            let have = tokio::fs::metadata(dest).await.map_or(0, |m| m.len());
            super::download::room_needed(total, have)
        }
    };
    if wait_for_room(env, sh, need).await? {
        sh.update_open(env, NodeStatus::Downloading, None);
    }
    Some(())
}

/// Before extracting a downloaded `archive` (not followed while it downloaded): waits for
/// room for its files, about the archive's size. `None`: every node is final.
pub(super) async fn before_extracting(env: &JobEnv, sh: &JobShared, archive: &Path) -> Option<()> {
    let need = tokio::fs::metadata(archive).await.map_or(0, |m| m.len());
    wait_for_room(env, sh, need).await.map(|_| ())
}
