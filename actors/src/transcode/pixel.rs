//! Decoding encapsulated pixel data in place, and making the pixel module
//! describe what the decoder produced.
//!
//! The decoders (dicom-pixeldata's registry: jpeg-decoder, RLE, OpenJPEG's
//! Rust port, CharLS) all output every frame, interleaved (colour-by-pixel),
//! in little-endian samples of Bits Allocated. What differs is colour: the
//! lossy JPEG decoder turns YCbCr into RGB and OpenJPEG undoes the JPEG 2000
//! component transform (YBR_ICT/YBR_RCT); RLE, lossless JPEG and JPEG-LS
//! return the samples as they were stored. `photometric_after` encodes that.
//! Lossy JPEG declared RGB is decoded by `jpeg_rgb.rs` with no colour
//! transform, as the dataset says, instead of the decoder's guess.

use std::error::Error as StdError;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntax;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

use super::TranscodeError;

const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";
const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";

/// Encapsulated-only attributes, meaningless once the pixels are native.
const EXTENDED_OFFSET_TABLE: Tag = Tag(0x7FE0, 0x0001);
const EXTENDED_OFFSET_TABLE_LENGTHS: Tag = Tag(0x7FE0, 0x0002);
const ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH: Tag = Tag(0x7FE0, 0x0003);

/// Whether the source syntax may have lost information: the decoded
/// instance must then say so in Lossy Image Compression (0028,2110).
pub(crate) fn is_lossy(uid: &str) -> bool {
    matches!(
        uid,
        JPEG_BASELINE | JPEG_EXTENDED | JPEG_LS_NEAR_LOSSLESS | JPEG_2000
    )
}

/// Lossy Image Compression Method (0028,2114) for a lossy source.
fn lossy_method(uid: &str) -> Option<&'static str> {
    match uid {
        JPEG_BASELINE | JPEG_EXTENDED => Some("ISO_10918_1"),
        JPEG_LS_NEAR_LOSSLESS => Some("ISO_14495_1"),
        JPEG_2000 => Some("ISO_15444_1"),
        _ => None,
    }
}

/// The Photometric Interpretation of the decoded pixels, from the one stored
/// with the compressed ones.
pub(crate) fn photometric_after(uid: &str, stored: &str, samples_per_pixel: u16) -> String {
    let stored = stored.trim();
    if samples_per_pixel == 1 {
        return match stored {
            "MONOCHROME1" | "MONOCHROME2" | "PALETTE COLOR" => stored.to_string(),
            _ => "MONOCHROME2".to_string(),
        };
    }
    match uid {
        // jpeg-decoder converts YCbCr to RGB and leaves RGB as it is.
        JPEG_BASELINE | JPEG_EXTENDED => "RGB".to_string(),
        JPEG_2000_LOSSLESS | JPEG_2000 if matches!(stored, "YBR_ICT" | "YBR_RCT") => {
            "RGB".to_string()
        }
        // Subsampled YBR exists only inside the compressed stream: decoded,
        // every pixel has its three samples.
        _ if matches!(
            stored,
            "YBR_FULL_422" | "YBR_PARTIAL_422" | "YBR_PARTIAL_420"
        ) =>
        {
            "YBR_FULL".to_string()
        }
        _ if stored.is_empty() => "RGB".to_string(),
        _ => stored.to_string(),
    }
}

/// The error and its causes, for a message that says what the codec said.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

fn string_of(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
}

fn uint(obj: &DefaultDicomObject, tag: Tag) -> Option<u32> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
}

/// Decodes the Pixel Data of `obj` (in `source`, an encapsulated syntax)
/// into native form and rewrites the pixel module to match. Returns false
/// when there was no Pixel Data to decode.
pub(crate) fn decode_in_place(
    obj: &mut DefaultDicomObject,
    source: &TransferSyntax,
) -> Result<bool, TranscodeError> {
    let uid = source.uid().trim_end_matches(['\0', ' ']).to_string();
    let name = source.name().to_string();
    // An icon (0088,0200) carries its own encapsulated pixels, which no
    // native syntax can hold; it is optional, so it goes.
    obj.remove_element(tags::ICON_IMAGE_SEQUENCE);
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Ok(false);
    }
    if !source.can_decode_all() {
        return Err(TranscodeError::NoDecoder { uid, name });
    }
    let stored_pi = string_of(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let had_frames = obj
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .is_some();

    let stored_samples = uint(obj, tags::SAMPLES_PER_PIXEL);
    let (
        rows,
        columns,
        frames,
        samples,
        bits_allocated,
        bits_stored,
        high_bit,
        representation,
        mut data,
    ) = if matches!(uid.as_str(), JPEG_BASELINE | JPEG_EXTENDED)
        && stored_samples == Some(3)
        && stored_pi == "RGB"
    {
        let frames = uint(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
        let attr = |tag, name: &str| {
            uint(obj, tag).ok_or_else(|| TranscodeError::Decode {
                uid: uid.clone(),
                name: name.to_string(),
                reason: format!("no {tag} to decode with"),
            })
        };
        let rows = attr(tags::ROWS, &name)?;
        let columns = attr(tags::COLUMNS, &name)?;
        let bits_stored = attr(tags::BITS_STORED, &name)? as u16;
        let high_bit = uint(obj, tags::HIGH_BIT).map_or(bits_stored - 1, |v| v as u16);
        let data = super::jpeg_rgb::decode_rgb_frames(obj, frames).map_err(|reason| {
            TranscodeError::Decode {
                uid: uid.clone(),
                name: name.clone(),
                reason,
            }
        })?;
        (rows, columns, frames, 3, 8, bits_stored, high_bit, 0, data)
    } else {
        let decoded = obj
            .decode_pixel_data()
            .map_err(|e| TranscodeError::Decode {
                uid: uid.clone(),
                name: name.clone(),
                reason: chain(&e),
            })?;
        (
            decoded.rows(),
            decoded.columns(),
            decoded.number_of_frames(),
            decoded.samples_per_pixel(),
            decoded.bits_allocated(),
            decoded.bits_stored(),
            decoded.high_bit(),
            decoded.pixel_representation() as u16,
            decoded.into_data(),
        )
    };

    let expected = u64::from(rows)
        * u64::from(columns)
        * u64::from(samples)
        * u64::from(frames)
        * u64::from(bits_allocated / 8);
    if bits_allocated % 8 != 0 || data.len() as u64 != expected {
        return Err(TranscodeError::Inconsistent {
            uid,
            name,
            reason: format!(
                "{} bytes decoded, {expected} expected for {frames} frame(s) of \
                 {rows}x{columns}, {samples} sample(s) of {bits_allocated} bits",
                data.len()
            ),
        });
    }
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let len = data.len() as u32;
    let vr = if bits_allocated <= 8 { VR::OB } else { VR::OW };
    // The bytes are already little endian: no copy into u16 values.
    obj.put(DataElement::new_with_len(
        tags::PIXEL_DATA,
        vr,
        dicom_core::Length::defined(len),
        PrimitiveValue::from(data),
    ));
    for tag in [
        EXTENDED_OFFSET_TABLE,
        EXTENDED_OFFSET_TABLE_LENGTHS,
        ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH,
    ] {
        obj.remove_element(tag);
    }

    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    obj.put(us(tags::ROWS, rows as u16));
    obj.put(us(tags::COLUMNS, columns as u16));
    obj.put(us(tags::SAMPLES_PER_PIXEL, samples));
    obj.put(us(tags::BITS_ALLOCATED, bits_allocated));
    obj.put(us(tags::BITS_STORED, bits_stored));
    obj.put(us(tags::HIGH_BIT, high_bit));
    obj.put(us(tags::PIXEL_REPRESENTATION, representation));
    if samples > 1 {
        obj.put(us(tags::PLANAR_CONFIGURATION, 0));
    } else {
        obj.remove_element(tags::PLANAR_CONFIGURATION);
    }
    if had_frames || frames > 1 {
        obj.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from(frames.to_string()),
        ));
    }
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from(photometric_after(&uid, &stored_pi, samples)),
    ));
    if is_lossy(&uid) {
        obj.put(DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION,
            VR::CS,
            PrimitiveValue::from("01"),
        ));
        if string_of(obj, tags::LOSSY_IMAGE_COMPRESSION_METHOD).is_none() {
            if let Some(method) = lossy_method(&uid) {
                obj.put(DataElement::new(
                    tags::LOSSY_IMAGE_COMPRESSION_METHOD,
                    VR::CS,
                    PrimitiveValue::from(method),
                ));
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_sources_are_the_jpeg_lossy_the_j2k_irreversible_and_near_lossless_jpeg_ls() {
        for uid in [
            JPEG_BASELINE,
            JPEG_EXTENDED,
            JPEG_2000,
            JPEG_LS_NEAR_LOSSLESS,
        ] {
            assert!(is_lossy(uid), "{uid}");
        }
        for uid in [
            "1.2.840.10008.1.2.4.57",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80",
            JPEG_2000_LOSSLESS,
            "1.2.840.10008.1.2.5",
        ] {
            assert!(!is_lossy(uid), "{uid}");
        }
    }

    #[test]
    fn colour_after_decoding_follows_what_each_decoder_outputs() {
        assert_eq!(photometric_after(JPEG_BASELINE, "YBR_FULL_422", 3), "RGB");
        assert_eq!(photometric_after(JPEG_BASELINE, "RGB", 3), "RGB");
        assert_eq!(photometric_after(JPEG_2000, "YBR_ICT", 3), "RGB");
        assert_eq!(photometric_after(JPEG_2000_LOSSLESS, "YBR_RCT", 3), "RGB");
        assert_eq!(
            photometric_after("1.2.840.10008.1.2.5", "YBR_FULL", 3),
            "YBR_FULL"
        );
        assert_eq!(photometric_after("1.2.840.10008.1.2.5", "RGB", 3), "RGB");
        assert_eq!(
            photometric_after("1.2.840.10008.1.2.4.80", "YBR_FULL_422", 3),
            "YBR_FULL"
        );
        assert_eq!(
            photometric_after("1.2.840.10008.1.2.4.80", "MONOCHROME1", 1),
            "MONOCHROME1"
        );
        assert_eq!(
            photometric_after(JPEG_BASELINE, "PALETTE COLOR", 1),
            "PALETTE COLOR"
        );
        assert_eq!(photometric_after(JPEG_BASELINE, "", 1), "MONOCHROME2");
    }
}
