//! Dispatch: download → extract → index → send → report.
pub mod download;
