//! A download that would cross the free-space floor (`min_free_gb`) waits: every open
//! node is reported `queued` with the reason `waiting for disk space`, the evictor is
//! asked for the missing bytes, and the room is looked at again whenever an eviction
//! freed something or the limits changed, and every [`RECHECK`] (space freed by hand).
//! No retry is used up by waiting; the partial archive stays for a `Range` resume.

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

/// The room the next try needs above the floor: unknown (0) without the archive's size;
/// otherwise the rest of the archive and its extraction ([`super::download::room_needed`]).
pub(super) async fn need_for(dest: &std::path::Path, total: Option<u64>) -> u64 {
    let Some(total) = total else { return 0 };
    let have = tokio::fs::metadata(dest).await.map_or(0, |m| m.len());
    super::download::room_needed(total, have)
}
