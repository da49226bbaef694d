//! What a C-STORE-RSP status means (PS3.4 B.2.3, PS3.7 C).

/// The class of a C-STORE status, as the sender acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 0x0000.
    Success,
    /// Stored, with a warning: 0x0001, 0x0107, 0x0116, 0xB000–0xBFFF.
    Warning,
    /// Out of resources (0xA7xx) or cancelled by the node (0xFE00): try again later.
    Transient,
    /// Refused for good: 0xA9xx, 0xCxxx and every other failure.
    Failure,
}

/// Classifies a C-STORE status.
pub fn classify(status: u16) -> StatusClass {
    match status {
        0x0000 => StatusClass::Success,
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Warning,
        0xA700..=0xA7FF | 0xFE00 => StatusClass::Transient,
        _ => StatusClass::Failure,
    }
}

/// A short human description of a non-success status, for error messages.
pub(crate) fn describe(status: u16) -> &'static str {
    match status {
        0xA700..=0xA7FF => "refused: out of resources",
        0xA900..=0xA9FF => "error: data set does not match SOP class",
        0xC000..=0xCFFF => "error: cannot understand",
        0x0122 => "refused: SOP class not supported",
        0x0124 => "refused: not authorized",
        0x0210 => "duplicate invocation",
        0x0211 => "unrecognized operation",
        0x0212 => "mistyped argument",
        0xFE00 => "cancelled by the node",
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => "warning",
        _ => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_the_documented_classes() {
        assert_eq!(classify(0x0000), StatusClass::Success);
        for s in [0x0001, 0x0107, 0x0116, 0xB000, 0xB007, 0xBFFF] {
            assert_eq!(classify(s), StatusClass::Warning, "{s:04X}");
        }
        for s in [0xA700, 0xA7FF, 0xFE00] {
            assert_eq!(classify(s), StatusClass::Transient, "{s:04X}");
        }
        for s in [
            0xA900, 0xA9FF, 0xC000, 0xCFFF, 0x0122, 0x0124, 0x0211, 0xA800,
        ] {
            assert_eq!(classify(s), StatusClass::Failure, "{s:04X}");
        }
    }
}
