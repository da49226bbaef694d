//! The transcoder on real files: pydicom's and pydicom-data's (compared with
//! their uncompressed twins or with pydicom's own decode), and dcmtk-made
//! ones (compared with dcmtk's decode of the same file).

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::fixtures::{
    dcmtk, file_pixels, max_difference, mean_difference, parse_dataset, pydicom_decodes_j2k,
    pydicom_pixels, require_pydicom, Synthetic,
};
use super::*;

fn explicit() -> [&'static str; 1] {
    [EXPLICIT_VR_LE]
}

/// Transcodes `path` to Explicit VR LE and parses the result.
fn ours(path: &Path) -> (InMemDicomObject, Transcoded) {
    let t = transcode_file(path, &explicit())
        .unwrap_or_else(|e| panic!("{} does not transcode: {e}", path.display()));
    assert_eq!(t.transfer_syntax, EXPLICIT_VR_LE);
    (parse_dataset(&t.dataset, EXPLICIT_VR_LE), t)
}

fn pixels(obj: &InMemDicomObject) -> Vec<u8> {
    let e = obj.element(tags::PIXEL_DATA).expect("pixel data");
    assert!(
        e.value().primitive().is_some(),
        "pixel data is still encapsulated"
    );
    e.to_bytes().expect("native pixel data").to_vec()
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
}

/// The pixel module is what a native dataset of these pixels must say.
fn assert_consistent(obj: &InMemDicomObject, name: &str) {
    let rows = int(obj, tags::ROWS).expect("rows");
    let cols = int(obj, tags::COLUMNS).expect("columns");
    let spp = int(obj, tags::SAMPLES_PER_PIXEL).expect("samples per pixel");
    let ba = int(obj, tags::BITS_ALLOCATED).expect("bits allocated");
    let frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    let len = pixels(obj).len() as u32;
    let expected = rows * cols * spp * frames * ba / 8;
    assert!(
        len == expected || len == expected + 1,
        "{name}: {len} pixel bytes for {expected}"
    );
    if spp > 1 {
        assert_eq!(int(obj, tags::PLANAR_CONFIGURATION), Some(0), "{name}");
    }
    for t in [0x0001, 0x0002, 0x0003] {
        assert!(
            obj.element_opt(Tag(0x7FE0, t)).ok().flatten().is_none(),
            "{name}: (7FE0,{t:04X}) left over"
        );
    }
    let vr = obj.element(tags::PIXEL_DATA).expect("pixel data").vr();
    if ba > 8 {
        assert_eq!(vr, dicom_core::VR::OW, "{name}");
    }
}

fn same_uid(obj: &InMemDicomObject, path: &Path) {
    let original = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .expect("original");
    assert_eq!(
        text(obj, tags::SOP_INSTANCE_UID),
        original
            .element(tags::SOP_INSTANCE_UID)
            .ok()
            .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string())),
        "{}",
        path.display()
    );
}

/// Transcodes each compressed file and compares its pixels with its
/// uncompressed twin's, exactly.
fn decodes_to_twins(pairs: &[(&str, &str)], pd: &fixtures::Pydicom) {
    for (compressed, twin) in pairs {
        let path = pd.file(compressed);
        let (obj, t) = ours(&path);
        assert!(t.pixels_decoded, "{compressed}");
        assert_consistent(&obj, compressed);
        same_uid(&obj, &path);
        let reference = file_pixels(&pd.file(twin));
        let got = pixels(&obj);
        assert_eq!(
            got.len(),
            reference.len(),
            "{compressed} vs {twin}: sizes differ"
        );
        assert!(got == reference, "{compressed}: pixels differ from {twin}");
    }
}

#[test]
fn the_target_is_explicit_then_implicit_little_endian_and_nothing_else() {
    assert_eq!(
        target_syntax(&[IMPLICIT_VR_LE, EXPLICIT_VR_LE]),
        Some(EXPLICIT_VR_LE)
    );
    assert_eq!(
        target_syntax(&[format!("{IMPLICIT_VR_LE}\0")]),
        Some(IMPLICIT_VR_LE)
    );
    assert_eq!(
        target_syntax(&["1.2.840.10008.1.2.4.50", EXPLICIT_VR_BE]),
        None
    );
    let none: [&str; 0] = [];
    assert_eq!(target_syntax(&none), None);
    assert!(matches!(
        transcode_bytes(b"", &["1.2.840.10008.1.2.4.50"]),
        Err(TranscodeError::NoNativeTarget { .. })
    ));
    assert!(needs_pixel_decoding("1.2.840.10008.1.2.4.90\0"));
    assert!(!needs_pixel_decoding(DEFLATED_EXPLICIT_VR_LE));
    assert!(!needs_pixel_decoding(EXPLICIT_VR_BE));
}

#[test]
fn a_deflated_file_is_inflated_without_pixel_decoding() {
    let pd = require_pydicom!();
    let path = pd.file("image_dfl.dcm");
    let dir = tempfile::tempdir().expect("tmp");
    let reference = dir.path().join("ref.dcm");
    dcmtk("dcmconv", &[&path, &reference], &["+te"]);
    for target in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
        let t = transcode_file(&path, &[target]).expect("inflates");
        assert_eq!(t.source_syntax, DEFLATED_EXPLICIT_VR_LE);
        assert_eq!(t.transfer_syntax, target);
        assert!(!t.pixels_decoded);
        let obj = parse_dataset(&t.dataset, target);
        same_uid(&obj, &path);
        assert_eq!(pixels(&obj), file_pixels(&reference));
    }
}

#[test]
fn big_endian_files_are_swapped_to_little_endian_as_dcmtk_does() {
    let pd = require_pydicom!();
    let dir = tempfile::tempdir().expect("tmp");
    for name in [
        "MR_small_bigendian.dcm",
        "SC_rgb_expb_16bit.dcm",
        "SC_rgb_expb.dcm",
        "SC_rgb_expb_32bit_2frame.dcm",
        "OBXXXX1A_expb.dcm",
    ] {
        let path = pd.file(name);
        let reference = dir.path().join(name);
        dcmtk("dcmconv", &[&path, &reference], &["+te"]);
        let (obj, t) = ours(&path);
        assert_eq!(t.source_syntax, EXPLICIT_VR_BE, "{name}");
        assert!(!t.pixels_decoded);
        same_uid(&obj, &path);
        assert!(
            pixels(&obj) == file_pixels(&reference),
            "{name}: pixels differ from dcmconv's"
        );
    }
}

#[test]
fn rle_files_decode_to_their_uncompressed_twins() {
    let pd = require_pydicom!();
    decodes_to_twins(
        &[
            ("MR_small_RLE.dcm", "MR_small.dcm"),
            ("emri_small_RLE.dcm", "emri_small.dcm"),
            ("SC_rgb_rle.dcm", "SC_rgb.dcm"),
            ("SC_rgb_rle_16bit.dcm", "SC_rgb_16bit.dcm"),
            ("SC_rgb_rle_2frame.dcm", "SC_rgb_2frame.dcm"),
            ("OBXXXX1A_rle_2frame.dcm", "OBXXXX1A_2frame.dcm"),
        ],
        pd,
    );
}

#[test]
fn jpeg_ls_lossless_files_decode_to_their_uncompressed_twins() {
    let pd = require_pydicom!();
    decodes_to_twins(
        &[
            ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
            ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ],
        pd,
    );
}

#[test]
fn jpeg_2000_lossless_files_decode_to_their_uncompressed_twins() {
    let pd = require_pydicom!();
    decodes_to_twins(
        &[
            ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
            ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
            ("US1_J2KR.dcm", "US1_UNCR.dcm"),
            ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),
            ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
            ("RG3_J2KR.dcm", "RG3_UNCR.dcm"),
        ],
        pd,
    );
}

#[test]
fn jpeg_2000_lossy_files_decode_as_pydicom_does_and_say_they_are_lossy() {
    let pd = require_pydicom!();
    let with_pydicom = pydicom_decodes_j2k();
    if !with_pydicom {
        eprintln!("pylibjpeg-openjpeg is not installed: comparing with the decompressed twins");
    }
    let dir = tempfile::tempdir().expect("tmp");
    for (name, twin) in [
        ("MR2_J2KI.dcm", "MR2_UNCI.dcm"),
        ("RG1_J2KI.dcm", "RG1_UNCI.dcm"),
        ("US1_J2KI.dcm", "US1_UNCI.dcm"),
    ] {
        let path = pd.file(name);
        let (obj, _) = ours(&path);
        assert_consistent(&obj, name);
        assert_eq!(
            text(&obj, tags::LOSSY_IMAGE_COMPRESSION).as_deref(),
            Some("01")
        );
        let ba = int(&obj, tags::BITS_ALLOCATED).expect("bits allocated") as u16;
        let reference = if with_pydicom {
            pydicom_pixels(&path, &dir.path().join(name))
        } else {
            file_pixels(&pd.file(twin))
        };
        let d = max_difference(&pixels(&obj), &reference, ba);
        assert!(d <= 1, "{name}: differs by up to {d}");
    }
}

#[test]
fn real_jpeg_files_decode_as_dcmtk_does() {
    let pd = require_pydicom!();
    let dir = tempfile::tempdir().expect("tmp");
    // (file, tolerance): lossless exactly, lossy within the IDCT's rounding.
    for (name, tolerance) in [
        ("SC_rgb_jpeg_dcmtk.dcm", 2),
        // 4:2:2 chroma: the upsampling filters differ a little more.
        ("color3d_jpeg_baseline.dcm", 3),
        ("SC_rgb_small_odd_jpeg.dcm", 2),
        // dcmtk's colour options: RGB kept (+cr), YCbCr at each subsampling.
        ("SC_rgb_dcmtk_+eb+cr.dcm", 2),
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", 2),
        ("SC_rgb_dcmtk_+eb+cy+n2.dcm", 2),
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", 2),
        ("SC_rgb_dcmtk_+eb+cy+s2.dcm", 3),
        ("SC_rgb_dcmtk_+eb+cy+s4.dcm", 3),
        // RGB stored without a colour transform, which the stream does not say.
        ("SC_jpeg_no_color_transform.dcm", 2),
        ("SC_jpeg_no_color_transform_2.dcm", 2),
        ("JPEG-LL.dcm", 0),
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0),
    ] {
        let path = pd.file(name);
        let reference = dir.path().join(name);
        dcmtk("dcmdjpeg", &[&path, &reference], &["+px"]);
        let (obj, _) = ours(&path);
        assert_consistent(&obj, name);
        same_uid(&obj, &path);
        let ba = int(&obj, tags::BITS_ALLOCATED).expect("bits allocated") as u16;
        let (got, theirs) = (pixels(&obj), file_pixels(&reference));
        let d = max_difference(&got, &theirs, ba);
        assert!(d <= tolerance, "{name}: differs by up to {d}");
        let mean = mean_difference(&got, &theirs);
        assert!(mean < 0.5, "{name}: differs by {mean} on average");
        let reference_obj = OpenFileOptions::new()
            .open_file(&reference)
            .expect("dcmtk's output");
        for tag in [
            tags::PHOTOMETRIC_INTERPRETATION,
            tags::SAMPLES_PER_PIXEL,
            tags::BITS_ALLOCATED,
            tags::BITS_STORED,
            tags::ROWS,
            tags::COLUMNS,
        ] {
            let theirs = reference_obj
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()));
            assert_eq!(text(&obj, tag), theirs, "{name}: {tag}");
        }
    }
}

/// One synthetic image compressed by a dcmtk tool and decompressed by its twin.
struct Made {
    name: &'static str,
    image: Synthetic,
    compress: (&'static str, &'static [&'static str]),
    decompress: &'static str,
    syntax: &'static str,
    tolerance: u32,
}

fn synthetic(samples: u16, bits: u16, frames: u32, signed: bool) -> Synthetic {
    Synthetic {
        rows: 64,
        columns: 48,
        frames,
        samples,
        bits_allocated: bits,
        signed,
    }
}

#[test]
fn dcmtk_compressed_images_decode_as_dcmtk_decodes_them() {
    let cases = [
        Made {
            name: "jpeg-baseline-rgb",
            image: synthetic(3, 8, 2, false),
            compress: ("dcmcjpeg", &["+eb", "+un"]),
            decompress: "dcmdjpeg",
            syntax: "1.2.840.10008.1.2.4.50",
            // 4:2:2 chroma: the upsampling filters differ a little more.
            tolerance: 3,
        },
        Made {
            name: "jpeg-baseline-mono",
            image: synthetic(1, 8, 1, false),
            compress: ("dcmcjpeg", &["+eb", "+un"]),
            decompress: "dcmdjpeg",
            syntax: "1.2.840.10008.1.2.4.50",
            tolerance: 2,
        },
        Made {
            name: "jpeg-lossless-sv1-mono16",
            image: synthetic(1, 16, 3, false),
            compress: ("dcmcjpeg", &["+e1", "+un"]),
            decompress: "dcmdjpeg",
            syntax: "1.2.840.10008.1.2.4.70",
            tolerance: 0,
        },
        Made {
            name: "jpeg-lossless-rgb",
            image: synthetic(3, 8, 1, false),
            compress: ("dcmcjpeg", &["+el", "+un"]),
            decompress: "dcmdjpeg",
            syntax: "1.2.840.10008.1.2.4.57",
            tolerance: 0,
        },
        Made {
            name: "jpeg-ls-lossless-mono16-signed",
            image: synthetic(1, 16, 2, true),
            compress: ("dcmcjpls", &["+el", "+un"]),
            decompress: "dcmdjpls",
            syntax: "1.2.840.10008.1.2.4.80",
            tolerance: 0,
        },
        Made {
            name: "jpeg-ls-lossless-rgb",
            image: synthetic(3, 8, 1, false),
            compress: ("dcmcjpls", &["+el", "+un"]),
            decompress: "dcmdjpls",
            syntax: "1.2.840.10008.1.2.4.80",
            tolerance: 0,
        },
        Made {
            name: "jpeg-ls-near-lossless-mono16",
            image: synthetic(1, 16, 1, false),
            compress: ("dcmcjpls", &["+en", "+md", "2", "+un"]),
            decompress: "dcmdjpls",
            syntax: "1.2.840.10008.1.2.4.81",
            tolerance: 0,
        },
        Made {
            name: "rle-rgb",
            image: synthetic(3, 8, 2, false),
            compress: ("dcmcrle", &[]),
            decompress: "dcmdrle",
            syntax: "1.2.840.10008.1.2.5",
            tolerance: 0,
        },
        Made {
            name: "rle-mono16-signed",
            image: synthetic(1, 16, 2, true),
            compress: ("dcmcrle", &[]),
            decompress: "dcmdrle",
            syntax: "1.2.840.10008.1.2.5",
            tolerance: 0,
        },
    ];
    let dir = tempfile::tempdir().expect("tmp");
    for (n, case) in cases.iter().enumerate() {
        let original = dir.path().join(format!("{}.dcm", case.name));
        let compressed = dir.path().join(format!("{}.c.dcm", case.name));
        let decompressed = dir.path().join(format!("{}.d.dcm", case.name));
        let uid = format!("2.25.77{n}");
        case.image.write(&original, &uid);
        dcmtk(case.compress.0, &[&original, &compressed], case.compress.1);
        dcmtk(case.decompress, &[&compressed, &decompressed], &[]);
        let item = crate::send::Item::from_file(&compressed).expect("compressed item");
        assert_eq!(item.transfer_syntax, case.syntax, "{}", case.name);

        let (obj, t) = ours(&compressed);
        assert!(t.pixels_decoded, "{}", case.name);
        assert_consistent(&obj, case.name);
        assert_eq!(
            text(&obj, tags::SOP_INSTANCE_UID).as_deref(),
            Some(uid.as_str())
        );
        let got = pixels(&obj);
        let ba = case.image.bits_allocated;
        let theirs = file_pixels(&decompressed);
        let d = max_difference(&got, &theirs, ba);
        assert!(
            d <= case.tolerance,
            "{}: differs from dcmtk by {d}",
            case.name
        );
        let mean = mean_difference(&got, &theirs);
        assert!(mean < 0.5, "{}: differs by {mean} on average", case.name);
        let lossy = pixel::is_lossy(case.syntax);
        if !lossy {
            assert!(got == case.image.pixels(), "{}: not lossless", case.name);
        }
        assert_eq!(
            text(&obj, tags::LOSSY_IMAGE_COMPRESSION).as_deref() == Some("01"),
            lossy,
            "{}",
            case.name
        );
        assert_eq!(
            text(&obj, tags::PHOTOMETRIC_INTERPRETATION).as_deref(),
            Some(if case.image.samples == 3 {
                "RGB"
            } else {
                "MONOCHROME2"
            }),
            "{}",
            case.name
        );
    }
}

/// A copy of `src` whose meta group claims `syntax` (the dataset is
/// rewritten in it).
fn relabelled(src: &Path, syntax: &str, to: &Path) -> PathBuf {
    let mut obj = OpenFileOptions::new().open_file(src).expect("open");
    obj.meta_mut().transfer_syntax = syntax.to_string();
    obj.write_to_file(to).expect("write");
    to.to_path_buf()
}

#[test]
fn undecodable_instances_give_a_typed_error_naming_the_codec() {
    let pd = require_pydicom!();
    let dir = tempfile::tempdir().expect("tmp");
    // MPEG-2 video: registered, but nothing here decodes it.
    let mpeg = relabelled(
        &pd.file("SC_rgb_jpeg_dcmtk.dcm"),
        "1.2.840.10008.1.2.4.100",
        &dir.path().join("mpeg.dcm"),
    );
    match transcode_file(&mpeg, &explicit()) {
        Err(TranscodeError::NoDecoder { uid, name }) => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.100");
            assert!(name.contains("MPEG"), "{name}");
        }
        other => panic!("{other:?}"),
    }
    // A real file whose sample size the RLE decoder does not handle.
    match transcode_file(&pd.file("rtdose_rle.dcm"), &explicit()) {
        Err(e @ TranscodeError::Decode { .. }) => {
            assert!(e.to_string().contains("RLE Lossless"), "{e}");
            assert!(e.to_string().contains("BitsAllocated"), "{e}");
        }
        other => panic!("32-bit RLE is not decoded here: {other:?}"),
    }
    // JPEG-LS data that is not JPEG-LS.
    let not_jls = relabelled(
        &pd.file("emri_small_RLE.dcm"),
        "1.2.840.10008.1.2.4.80",
        &dir.path().join("not-jls.dcm"),
    );
    match transcode_file(&not_jls, &explicit()) {
        Err(e @ TranscodeError::Decode { .. }) => {
            assert!(e.to_string().contains("JPEG-LS"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // JPEG data that is not JPEG at all.
    let garbage = relabelled(
        &pd.file("emri_small_RLE.dcm"),
        "1.2.840.10008.1.2.4.50",
        &dir.path().join("garbage.dcm"),
    );
    match transcode_file(&garbage, &explicit()) {
        Err(TranscodeError::Decode { uid, reason, .. }) => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.50");
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Not DICOM.
    assert!(matches!(
        transcode_bytes(b"not a dicom file at all", &explicit()),
        Err(TranscodeError::Read { .. })
    ));
}

#[test]
fn bytes_and_path_agree_and_a_written_file_is_valid_for_dcmtk() {
    let pd = require_pydicom!();
    let path = pd.file("SC_rgb_jpeg_dcmtk.dcm");
    let from_path = transcode_file(&path, &explicit()).expect("path");
    let bytes = std::fs::read(&path).expect("read");
    let from_bytes = transcode_bytes(&bytes, &explicit()).expect("bytes");
    assert_eq!(from_path, from_bytes);
    // Without the preamble too.
    let from_bare = transcode_bytes(&bytes[128..], &explicit()).expect("no preamble");
    assert_eq!(from_path.dataset, from_bare.dataset);

    let mut obj = OpenFileOptions::new().open_file(&path).expect("open");
    assert!(to_native(&mut obj, EXPLICIT_VR_LE).expect("to native"));
    assert_eq!(obj.meta().transfer_syntax(), EXPLICIT_VR_LE);
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("native.dcm");
    obj.write_to_file(&out).expect("write");
    // dcmtk reads it and, asked to decompress, finds nothing to do.
    let again = dir.path().join("again.dcm");
    dcmtk("dcmdjpeg", &[&out, &again], &[]);
    assert_eq!(file_pixels(&again), from_path_pixels(&from_path));
    let item = crate::send::Item::from_file(&out).expect("item");
    assert_eq!(item.transfer_syntax, EXPLICIT_VR_LE);
}

fn from_path_pixels(t: &Transcoded) -> Vec<u8> {
    pixels(&parse_dataset(&t.dataset, t.transfer_syntax))
}

/// The transfer syntax in a file's meta group (None: no meta group).
fn meta_syntax(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 132];
    f.read_exact(&mut head).ok()?;
    f.seek(SeekFrom::Start(if &head[128..] == b"DICM" {
        128
    } else {
        0
    }))
    .ok()?;
    let meta = dicom_object::FileMetaTable::from_reader(std::io::BufReader::new(f)).ok()?;
    Some(
        meta.transfer_syntax()
            .trim_end_matches(['\0', ' '])
            .to_string(),
    )
}

#[test]
fn every_real_compressed_file_transcodes_or_fails_with_its_reason() {
    let pd = require_pydicom!();
    let mut failed = Vec::new();
    let mut done = 0;
    for dir in [&pd.test_files, &pd.data_store] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            // The big ones are covered above; this is about variety.
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() < 1_000_000))
            // dicom-rs cannot parse these two (implicit VR inside an
            // explicit syntax), and takes a minute to say so.
            .filter(|p| !p.ends_with("SC_rgb_jpeg.dcm") && !p.ends_with("UN_sequence.dcm"))
            .collect();
        names.sort();
        for path in names {
            let Some(syntax) = meta_syntax(&path) else {
                continue;
            };
            if syntax == EXPLICIT_VR_LE || syntax == IMPLICIT_VR_LE {
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            match transcode_file(&path, &explicit()) {
                Ok(t) => {
                    let obj = parse_dataset(&t.dataset, EXPLICIT_VR_LE);
                    if t.pixels_decoded {
                        assert_consistent(&obj, &name);
                    }
                    done += 1;
                }
                Err(e) => {
                    eprintln!("{name} ({syntax}): {e}");
                    failed.push(name);
                }
            }
        }
    }
    eprintln!("{done} transcoded, {} failed: {failed:?}", failed.len());
    // What dicom-rs's decoders do not handle (12-bit lossy JPEG, 32-bit
    // RLE, a J2K stream with a stray delimiter): each fails alone, typed.
    assert_eq!(
        failed,
        [
            "JPEG-lossy.dcm",
            "JPEG2000-embedded-sequence-delimiter.dcm",
            "JPGExtended.dcm",
            "SC_rgb_rle_32bit.dcm",
            "SC_rgb_rle_32bit_2frame.dcm",
            "rtdose_rle.dcm",
            "rtdose_rle_1frame.dcm",
        ]
    );
    assert!(done >= 60, "only {done} real files transcoded");
}
