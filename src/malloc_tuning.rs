//! glibc's allocator set up for a process that runs for months (issue 14's soak).
//!
//! With its defaults, glibc's malloc kept the appliance's resident memory creeping
//! up by ~0.8 MiB a minute under steady dispatching with nothing of ours growing:
//! each thread that allocates gets one of up to 8 arenas per core (associations,
//! blocking pools and the ingest SCP come and go on their own threads), and after a
//! large block is freed glibc raises its mmap threshold (up to 32 MiB), so later
//! buffers of a few hundred KiB (a sender's write chunk, a PDU, a zip entry) are
//! carved out of those arenas and what they leave behind is rarely given back.
//! Set here, once, before any thread exists:
//! - at most 2 arenas (`M_ARENA_MAX`), the usual setting for long-running servers;
//! - a fixed 128 KiB mmap threshold (`M_MMAP_THRESHOLD`): larger blocks are mapped
//!   and unmapped on their own, and setting it turns the dynamic raising off;
//! - a 128 KiB trim threshold (`M_TRIM_THRESHOLD`): free memory at the top of the
//!   heap goes back to the system sooner.
//!
//! A parameter the operator set through glibc's own environment variables
//! (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) or
//! `GLIBC_TUNABLES` is left as they set it. Other C libraries: nothing is done.
//! This module touches only those malloc parameters; it is the crate's one use of
//! `unsafe` (calls into the C library).
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// The value of each parameter.
pub const ARENA_MAX: i32 = 2;
/// Bytes from which a block is mapped on its own.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Free bytes at the heap's top from which they are given back.
pub const TRIM_THRESHOLD: i32 = 128 * 1024;

static APPLIED: OnceLock<String> = OnceLock::new();

/// What [`tune`] did, for the start-up log ("" before it ran).
pub fn applied() -> &'static str {
    APPLIED.get().map_or("", String::as_str)
}

/// Sets the parameters; call first thing in `main`, before any thread exists.
pub fn tune() {
    let _ = APPLIED.set(imp::tune());
}

/// Gives the memory malloc holds free back to the system (all arenas, not only
/// the top of the heap): after start-up's check of a large cache, which
/// allocates and frees one small block per instance, the process would
/// otherwise keep that peak for good.
pub fn trim() {
    imp::trim();
}

/// Whether the operator chose this parameter through glibc's environment.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn operator_set(env: &str, tunable: &str) -> bool {
    std::env::var_os(env).is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(tunable))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::{operator_set, ARENA_MAX, MMAP_THRESHOLD, TRIM_THRESHOLD};

    pub(super) fn tune() -> String {
        let params = [
            (
                "arena_max",
                "MALLOC_ARENA_MAX",
                "glibc.malloc.arena_max",
                libc::M_ARENA_MAX,
                ARENA_MAX,
            ),
            (
                "mmap_threshold",
                "MALLOC_MMAP_THRESHOLD_",
                "glibc.malloc.mmap_threshold",
                libc::M_MMAP_THRESHOLD,
                MMAP_THRESHOLD,
            ),
            (
                "trim_threshold",
                "MALLOC_TRIM_THRESHOLD_",
                "glibc.malloc.trim_threshold",
                libc::M_TRIM_THRESHOLD,
                TRIM_THRESHOLD,
            ),
        ];
        let mut done = Vec::new();
        for (name, env, tunable, param, value) in params {
            if operator_set(env, tunable) {
                done.push(format!("{name}=as set by {env}/GLIBC_TUNABLES"));
                continue;
            }
            // SAFETY: mallopt takes two integers, touches only malloc's own
            // parameters (under its lock) and reports failure by returning 0.
            let ok = unsafe { libc::mallopt(param, value) } == 1;
            done.push(if ok {
                format!("{name}={value}")
            } else {
                format!("{name}=refused")
            });
        }
        done.join(" ")
    }

    pub(super) fn trim() {
        // SAFETY: malloc_trim takes an integer and only returns free pages of
        // malloc's own heaps to the system (under its locks).
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn tune() -> String {
        "not glibc: allocator defaults".to_owned()
    }

    pub(super) fn trim() {}
}
