//! Re-encoding a dataset into a syntax the node accepted. Only what needs no
//! pixel decoding: between native syntaxes (implicit/explicit little endian,
//! explicit big endian) and from deflate. Encapsulated (compressed) pixel
//! data would have to be decoded: that instance fails, alone.

use dicom_object::OpenFileOptions;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::Item;

/// Reads the whole file and writes its dataset in `to` (a native syntax).
/// The error is the instance's permanent failure message.
pub(crate) fn convert(item: &Item, to: &str) -> Result<Vec<u8>, String> {
    let from_uid = super::contexts::trim_uid(&item.transfer_syntax);
    let from = TransferSyntaxRegistry.get(from_uid).ok_or_else(|| {
        format!("the node refused transfer syntax {from_uid}, which is unknown here and cannot be converted")
    })?;
    if from.is_encapsulated_pixel_data() {
        return Err(format!(
            "the node refused transfer syntax {} ({from_uid}) and accepts only uncompressed syntaxes; \
             converting needs pixel decoding, which is not done",
            from.name()
        ));
    }
    if from.is_unsupported() {
        return Err(format!(
            "the node refused transfer syntax {} ({from_uid}), which cannot be read here to convert it",
            from.name()
        ));
    }
    let target = TransferSyntaxRegistry
        .get(to)
        .ok_or_else(|| format!("unknown target transfer syntax {to}"))?;
    let obj = OpenFileOptions::new()
        .open_file(&item.path)
        .map_err(|e| format!("cannot read {} to convert it: {e}", item.path.display()))?;
    let size = std::fs::metadata(&item.path).map(|m| m.len()).unwrap_or(0);
    let mut out = Vec::with_capacity(size as usize + 1024);
    obj.write_dataset_with_ts(&mut out, target).map_err(|e| {
        format!(
            "cannot convert {} from {} to {}: {e}",
            item.path.display(),
            from.name(),
            target.name()
        )
    })?;
    Ok(out)
}
