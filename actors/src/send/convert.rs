//! Re-encoding a dataset into the native syntax the node accepted, when it
//! refused the file's own: the fallback, never the first choice (see
//! `contexts::choose`). The work is [`crate::transcode`]'s: inflating,
//! byte-swapping, or decoding compressed pixel data; an instance that cannot
//! be decoded fails, alone, with the decoder's reason.

use super::Item;

/// Reads the whole file and writes its dataset in `to` (a native syntax).
/// The error is the instance's permanent failure message.
pub(crate) fn convert(item: &Item, to: &str) -> Result<Vec<u8>, String> {
    crate::transcode::transcode_file(&item.path, &[to])
        .map(|t| t.dataset)
        .map_err(|e| {
            format!(
                "the node refused transfer syntax {} for {}: {e}",
                super::contexts::trim_uid(&item.transfer_syntax),
                item.path.display()
            )
        })
}
