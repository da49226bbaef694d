//! The DICOM Application Entity title rule shared by node definitions
//! (`ae_title`, `calling_ae_title`) and the appliance's own `--ae-title`.

/// Longest AE title DICOM allows (PS3.5 §6.2, VR "AE").
pub const MAX_AE_TITLE_LEN: usize = 16;

/// Checks an AE title: 1–16 characters of printable ASCII (0x20–0x7E), no backslash
/// (the DICOM value separator), not all spaces (spaces are padding in DICOM, so an
/// all-space title is an empty one).
///
/// On failure returns the problem message, e.g. `must be 1-16 characters, got 17`.
pub fn check_ae_title(title: &str) -> Result<(), String> {
    if let Some(bad) = title
        .chars()
        .find(|c| !(' '..='~').contains(c) || *c == '\\')
    {
        return Err(if bad == '\\' {
            "must not contain a backslash".to_owned()
        } else {
            format!("must be printable ASCII, found {bad:?}")
        });
    }
    // Only ASCII remains, so bytes are characters.
    let len = title.len();
    if len == 0 || len > MAX_AE_TITLE_LEN {
        return Err(format!(
            "must be 1-{MAX_AE_TITLE_LEN} characters, got {len}"
        ));
    }
    if title.bytes().all(|b| b == b' ') {
        return Err("must not be all spaces".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_titles() {
        for t in [
            "A",
            "MAIN_PACS",
            "LAMINATE_PROXY",
            "0123456789ABCDEF",
            " X ",
            "a-b.c~!",
        ] {
            assert_eq!(check_ae_title(t), Ok(()), "{t:?}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(
            check_ae_title(""),
            Err("must be 1-16 characters, got 0".to_owned())
        );
        assert_eq!(
            check_ae_title("0123456789ABCDEFG"),
            Err("must be 1-16 characters, got 17".to_owned())
        );
        assert_eq!(
            check_ae_title("    "),
            Err("must not be all spaces".to_owned())
        );
        assert_eq!(
            check_ae_title("A\\B"),
            Err("must not contain a backslash".to_owned())
        );
        assert!(check_ae_title("A\tB").is_err());
        assert!(check_ae_title("A\u{7f}").is_err());
        assert!(check_ae_title("ÄBC").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_accepts_only_the_rule(s in ".{0,24}") {
            let ok = check_ae_title(&s).is_ok();
            let expected = (1..=16).contains(&s.len())
                && s.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'\\')
                && !s.bytes().all(|b| b == b' ');
            prop_assert_eq!(ok, expected);
        }
    }
}
