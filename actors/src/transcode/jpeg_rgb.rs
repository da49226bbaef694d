//! Lossy JPEG whose DICOM Photometric Interpretation is RGB: the samples
//! were compressed without a colour transform, but a stream with component
//! ids 1, 2, 3 and no Adobe marker makes jpeg-decoder assume YCbCr and
//! convert (wrongly: pydicom's `SC_jpeg_no_color_transform.dcm` comes out
//! up to 137 off). Here the same decoder is told the colour space the
//! dataset declares; the frame walk follows dicom-rs's JPEG adapter.

use std::io::Cursor;

use dicom_core::value::Value as DicomValue;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use jpeg_decoder::{ColorTransform, Decoder};

/// Every frame decoded to interleaved 8-bit RGB, concatenated; the error is
/// the decoder's message.
pub(crate) fn decode_rgb_frames(obj: &DefaultDicomObject, frames: u32) -> Result<Vec<u8>, String> {
    let element = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| format!("no pixel data: {e}"))?;
    let DicomValue::PixelSequence(seq) = element.value() else {
        return Err("pixel data is not encapsulated".into());
    };
    let fragments = seq.fragments();
    let mut out = Vec::new();
    if fragments.len() == frames as usize {
        for (i, f) in fragments.iter().enumerate() {
            out.extend(decode_one(&mut Cursor::new(&f[..]), i)?);
        }
        return Ok(out);
    }
    // Frames spanning fragments: one stream, each frame from the next SOI.
    let all: Vec<u8> = fragments.iter().flatten().copied().collect();
    let mut cursor = Cursor::new(&all[..]);
    for i in 0..frames as usize {
        let pos = cursor.position() as usize;
        let Some(soi) = all[pos.min(all.len())..]
            .windows(2)
            .position(|w| w == [0xFF, 0xD8])
        else {
            return Err(format!("frame {i}: no JPEG stream"));
        };
        cursor.set_position((pos + soi) as u64);
        out.extend(decode_one(&mut cursor, i)?);
    }
    Ok(out)
}

fn decode_one(cursor: &mut Cursor<&[u8]>, frame: usize) -> Result<Vec<u8>, String> {
    let mut decoder = Decoder::new(cursor);
    decoder.set_color_transform(ColorTransform::RGB);
    decoder
        .decode()
        .map_err(|e| format!("JPEG decoding failure on frame {frame}: {e}"))
}
