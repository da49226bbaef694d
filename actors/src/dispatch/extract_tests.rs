//! Tests of [`super::extract`]: good archives, every hostile kind of PROTOCOL.md §5,
//! and property tests that arbitrary bytes never panic or write outside `dest`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use tempfile::TempDir;

use super::extract::{
    extract_archive, normalise_name, ExtractError, ExtractLimits, Limit, UnsafeReason,
};
use super::fixtures::{self, Method, RawEntry, RawZip, WriterMode};
use super::index::index_dir;

/// A spool directory holding `archive.zip`, with `dest` = `spool/out` (not created).
struct Spool {
    _tmp: TempDir,
    spool: PathBuf,
    zip: PathBuf,
    dest: PathBuf,
}

fn spool(bytes: &[u8]) -> Spool {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let zip = spool.join("archive.zip");
    std::fs::write(&zip, bytes).unwrap();
    let dest = spool.join("out");
    Spool {
        _tmp: tmp,
        spool,
        zip,
        dest,
    }
}

/// Every path under `root`, relative, sorted (directories end in `/`).
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

impl Spool {
    async fn extract(
        &self,
        limits: &ExtractLimits,
    ) -> Result<super::extract::Extracted, ExtractError> {
        extract_archive(&self.zip, &self.dest, limits).await
    }

    /// Nothing but the archive is left in the spool: `dest` was removed with its contents.
    fn assert_nothing_written(&self) {
        assert_eq!(listing(&self.spool), vec!["archive.zip".to_owned()]);
    }
}

async fn expect_unsafe(zip: RawZip, name: &[u8], reason: UnsafeReason) {
    let s = spool(&zip.build().await);
    match s.extract(&ExtractLimits::default()).await {
        Err(ExtractError::UnsafeEntry {
            name: got,
            reason: why,
        }) => {
            assert_eq!(got, String::from_utf8_lossy(name), "entry named");
            assert_eq!(why, reason, "reason for {got:?}");
        }
        other => panic!(
            "{:?}: expected UnsafeEntry {reason:?}, got {other:?}",
            String::from_utf8_lossy(name)
        ),
    }
    s.assert_nothing_written();

    // Same with an existing, empty `dest`: it stays, empty.
    std::fs::create_dir(&s.dest).unwrap();
    assert!(matches!(
        s.extract(&ExtractLimits::default()).await,
        Err(ExtractError::UnsafeEntry { .. })
    ));
    assert_eq!(
        listing(&s.spool),
        vec!["archive.zip".to_owned(), "out/".to_owned()]
    );
}

/// A good file first, so a one-pass extractor would have written something.
fn after_good(name: &[u8]) -> RawZip {
    RawZip::new()
        .file("good/first.dcm", vec![7_u8; 100], Method::Deflate)
        .file(name, b"evil".to_vec(), Method::Stored)
}

#[tokio::test]
async fn good_archive_is_extracted_and_indexed() {
    let (bytes, instances) = fixtures::study_archive().await;
    let s = spool(&bytes);
    let done = s.extract(&ExtractLimits::default()).await.unwrap();

    let mut rel: Vec<_> = done.files.iter().map(|f| f.rel_path.as_str()).collect();
    rel.sort();
    assert_eq!(
        rel,
        [
            "README.txt",
            "manifest.json",
            "study/series-1/IM0001.dcm",
            "study/series-1/IM0002",
            "study/series-2/deeper/IM0003.dcm"
        ]
    );
    for (name, inst) in &instances {
        let file = done.files.iter().find(|f| &f.rel_path == name).unwrap();
        assert_eq!(file.path, s.dest.join(name));
        let on_disk = std::fs::read(&file.path).unwrap();
        assert_eq!(on_disk, inst.to_bytes(), "{name} extracted byte for byte");
        assert_eq!(file.size, on_disk.len() as u64);
    }
    assert_eq!(
        done.total_bytes,
        done.files.iter().map(|f| f.size).sum::<u64>()
    );

    let (found, failed) = index_dir(&s.dest);
    assert!(failed.is_empty(), "{failed:?}");
    let mut sops: Vec<_> = found
        .iter()
        .map(|(_, h)| h.sop_instance_uid.clone())
        .collect();
    sops.sort();
    let mut expected: Vec<_> = instances.iter().map(|(_, i)| i.sop_uid.clone()).collect();
    expected.sort();
    assert_eq!(
        sops, expected,
        "README and manifest skipped, the file without .dcm found"
    );
}

#[tokio::test]
async fn archives_from_async_zips_writer_whole_streamed_and_zip64() {
    let big: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
    let entries: [(&str, &[u8], bool); 3] = [
        ("a/stored.bin", &big, false),
        ("a/b/deflated.bin", &big, true),
        ("top.txt", b"hello", true),
    ];
    for mode in [
        WriterMode::Whole,
        WriterMode::Streamed,
        WriterMode::WholeZip64End,
    ] {
        let s = spool(&fixtures::write_with_async_zip(&entries, mode).await);
        let done = s.extract(&ExtractLimits::default()).await.unwrap();
        assert_eq!(done.files.len(), 3);
        for (name, data, _) in entries {
            assert_eq!(
                std::fs::read(s.dest.join(name)).unwrap(),
                data,
                "{name}, {mode:?}"
            );
        }
        assert_eq!(done.total_bytes, 2 * big.len() as u64 + 5);
    }
}

#[tokio::test]
async fn hostile_names_are_refused_before_anything_is_written() {
    let cases: [(&[u8], UnsafeReason); 10] = [
        (b"../evil.dcm", UnsafeReason::ParentComponent),
        (b"a/../../evil", UnsafeReason::ParentComponent),
        (b"a/..", UnsafeReason::ParentComponent),
        (b"/abs", UnsafeReason::Absolute),
        (b"//server/share/x", UnsafeReason::Absolute),
        (b"C:/x", UnsafeReason::DriveLetter),
        (b"c:x", UnsafeReason::DriveLetter),
        (b"a\\b", UnsafeReason::Backslash),
        (b"a\0b.dcm", UnsafeReason::Nul),
        (b"caf\xe9.dcm", UnsafeReason::NotUtf8),
    ];
    for (name, reason) in cases {
        expect_unsafe(after_good(name), name, reason).await;
    }
}

#[tokio::test]
async fn non_utf8_name_is_refused_even_when_flagged_utf8() {
    let mut e = RawEntry::new(b"bad\xff\xfe", b"x".to_vec(), Method::Stored);
    e.utf8_flag = true;
    expect_unsafe(
        RawZip::new().entry(e),
        b"bad\xff\xfe",
        UnsafeReason::NotUtf8,
    )
    .await;
}

#[tokio::test]
async fn duplicates_are_refused_also_after_normalising() {
    for (first, second) in [
        ("a/x.dcm", "a/x.dcm"),
        ("a/x.dcm", "./a/x.dcm"),
        ("a/x.dcm", "a//x.dcm"),
        ("a/x.dcm", "a/./x.dcm"),
        ("a", "a/"),
    ] {
        let zip = RawZip::new()
            .file(first, b"one".to_vec(), Method::Stored)
            .file(second, b"two".to_vec(), Method::Stored);
        expect_unsafe(zip, second.as_bytes(), UnsafeReason::Duplicate).await;
    }
}

#[tokio::test]
async fn a_file_under_another_file_is_refused() {
    let zip = RawZip::new()
        .file("a", b"file".to_vec(), Method::Stored)
        .file("a/b", b"x".to_vec(), Method::Stored);
    expect_unsafe(zip, b"a/b", UnsafeReason::PathConflict).await;
}

#[tokio::test]
async fn symlinks_and_special_files_are_refused() {
    expect_unsafe(
        after_good(b"ok").symlink("link.dcm", "/etc/passwd"),
        b"link.dcm",
        UnsafeReason::Symlink,
    )
    .await;
    let mut fifo = RawEntry::new("fifo", Vec::new(), Method::Stored);
    fifo.unix_mode = Some(0o010_644);
    expect_unsafe(
        RawZip::new().entry(fifo),
        b"fifo",
        UnsafeReason::SpecialFile,
    )
    .await;
}

#[tokio::test]
async fn empty_file_name_is_refused_but_dot_directory_is_skipped() {
    expect_unsafe(after_good(b"."), b".", UnsafeReason::Empty).await;
    let s = spool(
        &RawZip::new()
            .dir("./")
            .dir("d/")
            .file("d/f", b"f".to_vec(), Method::Stored)
            .build()
            .await,
    );
    let done = s.extract(&ExtractLimits::default()).await.unwrap();
    assert_eq!(done.files.len(), 1);
    assert_eq!(listing(&s.dest), ["d/", "d/f"]);
}

#[tokio::test]
async fn a_compression_bomb_is_refused_from_its_declared_ratio() {
    let zeros = vec![0_u8; 10 * 1024 * 1024];
    let s = spool(
        &RawZip::new()
            .file("bomb.dcm", zeros, Method::Deflate)
            .build()
            .await,
    );
    match s.extract(&ExtractLimits::default()).await {
        Err(ExtractError::LimitExceeded {
            limit: Limit::Ratio { max: 200 },
            entry: Some(e),
        }) => assert_eq!(e, "bomb.dcm"),
        other => panic!("expected the ratio limit, got {other:?}"),
    }
    s.assert_nothing_written();
}

#[tokio::test]
async fn a_bomb_lying_about_its_size_is_stopped_while_inflating_and_everything_removed() {
    let mut bomb = RawEntry::new("z/bomb.dcm", vec![0_u8; 10 * 1024 * 1024], Method::Deflate);
    bomb.declared_size = Some(1000);
    let zip = RawZip::new()
        .file("a/first.dcm", vec![1_u8; 5000], Method::Deflate)
        .entry(bomb);
    let s = spool(&zip.build().await);
    match s.extract(&ExtractLimits::default()).await {
        Err(ExtractError::LimitExceeded {
            limit: Limit::DeclaredSize { declared: 1000 },
            entry: Some(e),
        }) => {
            assert_eq!(e, "z/bomb.dcm")
        }
        other => panic!("expected the declared size limit, got {other:?}"),
    }
    s.assert_nothing_written();

    // With a `dest` that existed: its contents go, `dest` stays.
    std::fs::create_dir(&s.dest).unwrap();
    assert!(matches!(
        s.extract(&ExtractLimits::default()).await,
        Err(ExtractError::LimitExceeded { .. })
    ));
    assert_eq!(
        listing(&s.spool),
        vec!["archive.zip".to_owned(), "out/".to_owned()]
    );
}

/// Offsets of the uncompressed size in the only local header and central record.
fn patch_sizes(bytes: &mut [u8], crc: Option<u32>, size: Option<u32>) {
    let cd = bytes
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 0x01, 0x02])
        .unwrap();
    for (crc_at, size_at) in [(14, 22), (cd + 16, cd + 24)] {
        if let Some(crc) = crc {
            bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        }
        if let Some(size) = size {
            bytes[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
        }
    }
}

#[tokio::test]
async fn lying_sizes_and_crcs_in_a_real_archive_are_caught() {
    let data: Vec<u8> = (0..50_000_u32).map(|i| (i * 7 % 256) as u8).collect();
    let good = fixtures::write_with_async_zip(&[("x.dcm", &data, true)], WriterMode::Whole).await;

    let mut smaller = good.clone();
    patch_sizes(&mut smaller, None, Some(10_000));
    let s = spool(&smaller);
    assert!(
        matches!(
            s.extract(&ExtractLimits::default()).await,
            Err(ExtractError::LimitExceeded {
                limit: Limit::DeclaredSize { declared: 10_000 },
                ..
            })
        ),
        "inflates past a smaller declared size"
    );
    s.assert_nothing_written();

    let mut larger = good.clone();
    patch_sizes(&mut larger, None, Some(60_000));
    let s = spool(&larger);
    assert!(matches!(
        s.extract(&ExtractLimits::default()).await,
        Err(ExtractError::CorruptEntry { .. })
    ));
    s.assert_nothing_written();

    let mut bad_crc = good;
    patch_sizes(&mut bad_crc, Some(0xdead_beef), None);
    let s = spool(&bad_crc);
    match s.extract(&ExtractLimits::default()).await {
        Err(ExtractError::CorruptEntry { name, reason }) => {
            assert_eq!(name, "x.dcm");
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected a CRC error, got {other:?}"),
    }
    s.assert_nothing_written();
}

#[tokio::test]
async fn bad_crc_after_a_good_file_removes_the_good_file() {
    let mut bad = RawEntry::new("b/second.dcm", vec![3_u8; 4000], Method::Stored);
    bad.declared_crc = Some(1);
    let s = spool(
        &RawZip::new()
            .file("a/first.dcm", vec![1_u8; 4000], Method::Stored)
            .entry(bad)
            .build()
            .await,
    );
    assert!(matches!(
        s.extract(&ExtractLimits::default()).await,
        Err(ExtractError::CorruptEntry { .. })
    ));
    s.assert_nothing_written();
}

#[tokio::test]
async fn entry_count_and_total_limits() {
    let four = RawZip::new()
        .file("1", b"a".to_vec(), Method::Stored)
        .file("2", b"b".to_vec(), Method::Stored)
        .file("3", b"c".to_vec(), Method::Stored)
        .dir("d/");
    let s = spool(&four.build().await);
    let limits = ExtractLimits {
        max_entries: 3,
        ..ExtractLimits::default()
    };
    assert!(matches!(
        s.extract(&limits).await,
        Err(ExtractError::LimitExceeded {
            limit: Limit::Entries { max: 3 },
            entry: None
        })
    ));
    s.assert_nothing_written();
    let limits = ExtractLimits {
        max_entries: 4,
        ..ExtractLimits::default()
    };
    assert_eq!(s.extract(&limits).await.unwrap().files.len(), 3);

    let two = RawZip::new()
        .file("a", vec![1_u8; 600], Method::Stored)
        .file("b", vec![2_u8; 600], Method::Deflate);
    let s = spool(&two.build().await);
    let limits = ExtractLimits {
        max_total_uncompressed: 1000,
        ..ExtractLimits::default()
    };
    match s.extract(&limits).await {
        Err(ExtractError::LimitExceeded {
            limit: Limit::TotalUncompressed { max: 1000 },
            entry: Some(e),
        }) => {
            assert_eq!(e, "b")
        }
        other => panic!("expected the total limit, got {other:?}"),
    }
    s.assert_nothing_written();
}

#[tokio::test]
async fn small_entries_may_compress_beyond_the_ratio() {
    // 1 MiB of zeros is exactly at the threshold: exempt.
    let s = spool(
        &RawZip::new()
            .file("pad", vec![0_u8; 1024 * 1024], Method::Deflate)
            .build()
            .await,
    );
    assert_eq!(
        s.extract(&ExtractLimits::default())
            .await
            .unwrap()
            .total_bytes,
        1024 * 1024
    );
}

#[tokio::test]
async fn zip64_archives_are_read() {
    let data: Vec<u8> = (0..70_000_u32).map(|i| (i % 13) as u8).collect();
    let mut stored = RawEntry::new("z/stored.dcm", data.clone(), Method::Stored);
    stored.zip64 = true;
    let mut deflated = RawEntry::new("z/deflated.dcm", data.clone(), Method::Deflate);
    deflated.zip64 = true;
    let zip = RawZip::new()
        .entry(stored)
        .entry(deflated)
        .file("plain.txt", b"p".to_vec(), Method::Stored)
        .zip64_end();
    let s = spool(&zip.build().await);
    let done = s.extract(&ExtractLimits::default()).await.unwrap();
    assert_eq!(done.files.len(), 3);
    assert_eq!(std::fs::read(s.dest.join("z/stored.dcm")).unwrap(), data);
    assert_eq!(std::fs::read(s.dest.join("z/deflated.dcm")).unwrap(), data);
}

#[tokio::test]
async fn zip64_record_without_its_offset_is_malformed_not_a_panic() {
    let mut e = RawEntry::new("x.dcm", b"data".to_vec(), Method::Stored);
    e.zip64 = true;
    e.zip64_without_offset = true;
    let s = spool(&RawZip::new().entry(e).zip64_end().build().await);
    assert!(matches!(
        s.extract(&ExtractLimits::default()).await,
        Err(ExtractError::Malformed(_))
    ));
    s.assert_nothing_written();
}

#[tokio::test]
async fn unsupported_compression_is_refused_up_front() {
    let mut e = RawEntry::new("x.dcm", b"data".to_vec(), Method::Stored);
    e.declared_method = Some(12); // bzip2: not enabled
    let s = spool(&after_good(b"ok").entry(e).build().await);
    assert!(matches!(
        s.extract(&ExtractLimits::default()).await,
        Err(ExtractError::UnsupportedMethod { method: 12, .. })
    ));
    s.assert_nothing_written();
}

#[tokio::test]
async fn a_non_empty_dest_is_refused_and_left_alone() {
    let s = spool(&after_good(b"ok").build().await);
    std::fs::create_dir(&s.dest).unwrap();
    std::fs::write(s.dest.join("keep"), b"mine").unwrap();
    assert!(matches!(
        s.extract(&ExtractLimits::default()).await,
        Err(ExtractError::DestNotEmpty { .. })
    ));
    assert_eq!(std::fs::read(s.dest.join("keep")).unwrap(), b"mine");
}

#[tokio::test]
async fn garbage_is_malformed() {
    for bytes in [&b""[..], b"PK\x05\x06", b"not a zip at all, just text"] {
        let s = spool(bytes);
        assert!(matches!(
            s.extract(&ExtractLimits::default()).await,
            Err(ExtractError::Malformed(_))
        ));
        s.assert_nothing_written();
    }
}

/// The outcome of one property case: panics propagate, writes outside `dest` fail it.
fn extract_bytes_blocking(bytes: &[u8]) -> Result<(), TestCaseError> {
    let s = spool(bytes);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = rt.block_on(s.extract(&ExtractLimits::default()));
    let outside: Vec<_> = listing(&s.spool)
        .into_iter()
        .filter(|p| p != "archive.zip" && !p.starts_with("out/"))
        .collect();
    prop_assert!(
        outside == ["out/"] || outside.is_empty(),
        "written outside dest: {outside:?}"
    );
    match result {
        Ok(done) => {
            let files: Vec<_> = listing(&s.dest)
                .into_iter()
                .filter(|p| !p.ends_with('/'))
                .collect();
            prop_assert_eq!(files.len(), done.files.len());
        }
        Err(_) => prop_assert!(!s.dest.exists(), "dest left after an error"),
    }
    Ok(())
}

fn base_archive() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut z64 = RawEntry::new("d/z64.bin", vec![5_u8; 300], Method::Deflate);
        z64.zip64 = true;
        RawZip::new()
            .dir("d/")
            .file(
                "d/a.dcm",
                (0..400_u32).map(|i| i as u8).collect::<Vec<_>>(),
                Method::Deflate,
            )
            .file("b.txt", b"plain text".to_vec(), Method::Stored)
            .entry(z64)
            .zip64_end()
            .build_blocking()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_escape(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        extract_bytes_blocking(&bytes)?;
    }

    #[test]
    fn mutated_archives_never_panic_or_escape(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = base_archive().to_vec();
        for (at, byte) in edits {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        extract_bytes_blocking(&bytes)?;
    }

    #[test]
    fn normalised_names_are_always_relative_and_clean(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok((path, _)) = normalise_name(&raw) {
            prop_assert!(!path.starts_with('/'));
            prop_assert!(!path.contains('\\') && !path.contains('\0'));
            prop_assert!(path.is_empty() || path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        }
    }
}

#[tokio::test]
async fn a_cancelled_extraction_leaves_nothing() {
    let mut zip = RawZip::new();
    for i in 0..200 {
        zip = zip.file(
            format!("d/{i}.bin"),
            vec![i as u8; 256 * 1024],
            Method::Stored,
        );
    }
    let s = spool(&zip.build().await);
    let limits = ExtractLimits::default();
    // Boxed, so that `drop` below drops the future itself (not a pinned reference).
    let mut extraction = Box::pin(s.extract(&limits));
    loop {
        let step = tokio::time::timeout(std::time::Duration::from_millis(5), &mut extraction).await;
        assert!(step.is_err(), "finished before it could be cancelled");
        if listing(&s.spool).iter().any(|p| p.ends_with(".bin")) {
            break;
        }
    }
    drop(extraction); // as when a dispatch is cancelled
    s.assert_nothing_written();
}
