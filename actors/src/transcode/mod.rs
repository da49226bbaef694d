//! Transcoding one instance into a native transfer syntax a node accepted,
//! for nodes that refuse the file's own syntax.
//!
//! - Deflated Explicit VR Little Endian and Explicit VR Big Endian are
//!   re-encoded without touching the pixels (inflate, byte swap by the parser).
//! - Encapsulated (compressed) pixel data is decoded with dicom-rs's pixel
//!   data support (`pixel.rs`): JPEG Baseline/Extended/Lossless and RLE
//!   natively, JPEG 2000 with the Rust port of OpenJPEG, JPEG-LS with CharLS.
//!   The pixel module is then made to describe the decoded pixels.
//!
//! Everything here is blocking and CPU-bound: callers run it on a blocking
//! thread, one instance at a time. The whole instance is held in memory while
//! it is converted (the compressed dataset, its decoded pixels and the encoded
//! result); each buffer is dropped as soon as the next one exists.
//!
//! This module reads files and touches nothing else: no network, no store.

mod jpeg_rgb;
mod pixel;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::path::Path;

use dicom_encoding::TransferSyntax;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use crate::dimse::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// Deflated Explicit VR Little Endian.
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian (retired, still found in archives).
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Why an instance could not be transcoded. Each is final for that instance
/// (the same file gives the same error on every try).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The node accepted neither Explicit nor Implicit VR Little Endian.
    #[error(
        "the node accepts no native transfer syntax to convert into (it accepted: {accepted})"
    )]
    NoNativeTarget { accepted: String },
    /// The file could not be read or parsed.
    #[error("cannot read {what} to transcode it: {reason}")]
    Read { what: String, reason: String },
    /// The file's transfer syntax is not known here at all.
    #[error("transfer syntax {uid} is unknown here and cannot be converted")]
    UnknownSyntax { uid: String },
    /// Known, but no decoder for its pixel data (or its dataset) is built in.
    #[error("cannot decode {name} ({uid}): no decoder for it is built in")]
    NoDecoder { uid: String, name: String },
    /// The codec failed on this instance's pixel data.
    #[error("cannot decode the {name} ({uid}) pixel data: {reason}")]
    Decode {
        uid: String,
        name: String,
        reason: String,
    },
    /// The decoder produced pixels that do not fit the image's attributes.
    #[error("decoded {name} ({uid}) pixel data does not match the image: {reason}")]
    Inconsistent {
        uid: String,
        name: String,
        reason: String,
    },
    /// Writing the converted dataset failed.
    #[error("cannot encode the dataset in {target}: {reason}")]
    Encode { target: String, reason: String },
}

/// One transcoded instance: the dataset (no preamble, no meta group) in
/// `transfer_syntax`, ready to be sent as a C-STORE data set.
#[derive(Clone, PartialEq, Eq)]
pub struct Transcoded {
    /// The syntax of `dataset`: Explicit or Implicit VR Little Endian.
    pub transfer_syntax: &'static str,
    /// The file's own transfer syntax.
    pub source_syntax: String,
    /// Whether pixel data was decoded (false: only re-encoded, e.g. inflated).
    pub pixels_decoded: bool,
    pub dataset: Vec<u8>,
}

impl std::fmt::Debug for Transcoded {
    // The dataset's length, not its bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoded")
            .field("transfer_syntax", &self.transfer_syntax)
            .field("source_syntax", &self.source_syntax)
            .field("pixels_decoded", &self.pixels_decoded)
            .field("dataset_len", &self.dataset.len())
            .finish()
    }
}

fn trim_uid(s: &str) -> &str {
    s.trim_end_matches(['\0', ' ']).trim_start()
}

/// The native syntax to convert into, among those a node accepted for the
/// instance's SOP class: Explicit VR Little Endian, else Implicit.
pub fn target_syntax<S: AsRef<str>>(accepted: &[S]) -> Option<&'static str> {
    [EXPLICIT_VR_LE, IMPLICIT_VR_LE]
        .into_iter()
        .find(|native| accepted.iter().any(|a| trim_uid(a.as_ref()) == *native))
}

/// Whether sending an instance of `transfer_syntax` to a node that refused
/// it needs its pixel data decoded (not merely re-encoded).
pub fn needs_pixel_decoding(transfer_syntax: &str) -> bool {
    TransferSyntaxRegistry
        .get(trim_uid(transfer_syntax))
        .is_some_and(|ts| ts.is_encapsulated_pixel_data())
}

/// Reads the DICOM file at `path` (with or without preamble) and encodes its
/// dataset in the native syntax [`target_syntax`] picks from `accepted`.
pub fn transcode_file<S: AsRef<str>>(
    path: &Path,
    accepted: &[S],
) -> Result<Transcoded, TranscodeError> {
    let target = pick(accepted)?;
    let obj = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| TranscodeError::Read {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
    encode(obj, target)
}

/// As [`transcode_file`], from the bytes of a DICOM file (with or without
/// the 128-byte preamble).
pub fn transcode_bytes<S: AsRef<str>>(
    bytes: &[u8],
    accepted: &[S],
) -> Result<Transcoded, TranscodeError> {
    let target = pick(accepted)?;
    let obj = OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|e| TranscodeError::Read {
            what: "the instance".into(),
            reason: e.to_string(),
        })?;
    encode(obj, target)
}

/// Converts a whole DICOM object to the native `target` syntax in memory,
/// its meta group's Transfer Syntax updated: for writing a file
/// (`write_to_file`). Returns whether pixel data was decoded.
pub fn to_native(obj: &mut DefaultDicomObject, target: &str) -> Result<bool, TranscodeError> {
    let target_ts = native_syntax(target)?;
    let decoded = convert_in_place(obj)?;
    obj.update_meta(|meta| meta.set_transfer_syntax(target_ts));
    Ok(decoded)
}

fn pick<S: AsRef<str>>(accepted: &[S]) -> Result<&'static str, TranscodeError> {
    target_syntax(accepted).ok_or_else(|| TranscodeError::NoNativeTarget {
        accepted: accepted
            .iter()
            .map(|a| trim_uid(a.as_ref()).to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn native_syntax(target: &str) -> Result<&'static TransferSyntax, TranscodeError> {
    let target = trim_uid(target);
    if target != EXPLICIT_VR_LE && target != IMPLICIT_VR_LE {
        return Err(TranscodeError::NoNativeTarget {
            accepted: target.to_string(),
        });
    }
    TransferSyntaxRegistry
        .get(target)
        .ok_or_else(|| TranscodeError::UnknownSyntax {
            uid: target.to_string(),
        })
}

/// Decodes the pixel data where it is encapsulated; returns whether it did.
fn convert_in_place(obj: &mut DefaultDicomObject) -> Result<bool, TranscodeError> {
    let uid = trim_uid(obj.meta().transfer_syntax()).to_string();
    let source = TransferSyntaxRegistry
        .get(&uid)
        .ok_or_else(|| TranscodeError::UnknownSyntax { uid: uid.clone() })?;
    if source.is_encapsulated_pixel_data() {
        pixel::decode_in_place(obj, source)
    } else if source.is_unsupported() {
        // Read above only if its dataset codec exists; say so all the same.
        Err(TranscodeError::NoDecoder {
            uid,
            name: source.name().to_string(),
        })
    } else {
        Ok(false)
    }
}

fn encode(mut obj: DefaultDicomObject, target: &'static str) -> Result<Transcoded, TranscodeError> {
    let target_ts = native_syntax(target)?;
    let source_syntax = trim_uid(obj.meta().transfer_syntax()).to_string();
    let pixels_decoded = convert_in_place(&mut obj)?;
    let mut dataset = Vec::new();
    obj.write_dataset_with_ts(&mut dataset, target_ts)
        .map_err(|e| TranscodeError::Encode {
            target: target_ts.name().to_string(),
            reason: e.to_string(),
        })?;
    Ok(Transcoded {
        transfer_syntax: target,
        source_syntax,
        pixels_decoded,
        dataset,
    })
}
