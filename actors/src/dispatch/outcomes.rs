//! Per-instance outcomes of a dispatch for the local API (APPLIANCE.md
//! "Per-instance outcome"): per node, every instance that did not arrive as it
//! was (failed, or transcoded into another syntax), read from the node's
//! acknowledgements in the journal, the instance's archive entry and its
//! catalog record. Costs one dispatch's acknowledgements: for the detail view,
//! not for lists.

use std::collections::BTreeMap;

use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use laminate_store::{Catalog, Findings, Journal, Store, StoreError};
use serde::Serialize;

/// What became of one instance that did not arrive as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceOutcome {
    pub sop_instance_uid: String,
    /// Its entry in the archive (`None` for dispatches indexed before entries were kept).
    pub file: Option<String>,
    /// `failed` or `transcoded`.
    pub outcome: &'static str,
    /// Failed: the instance's own syntax. Transcoded: the syntax it was sent in.
    pub transfer_syntax: Option<String>,
    pub reason: String,
}

/// A transfer syntax for people: `JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)`.
pub fn syntax_name(uid: &str) -> String {
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{} ({uid})", ts.name()),
        None => uid.to_owned(),
    }
}

/// The outcomes of one node of dispatch `id`, by SOP Instance UID; `files` is
/// [`Findings::journal_instance_files`] of the dispatch.
pub fn node_outcomes(
    store: &Store,
    id: &str,
    node_id: &str,
    files: &BTreeMap<String, String>,
) -> Result<Vec<InstanceOutcome>, StoreError> {
    let mut out = Vec::new();
    for (sop, ack) in store.journal_acks(id, node_id)? {
        let own_syntax = || -> Result<Option<String>, StoreError> {
            Ok(store.get_instance(&sop)?.map(|r| r.transfer_syntax))
        };
        let (outcome, transfer_syntax, reason) = if !ack.stored {
            let why = ack.error.clone().unwrap_or_else(|| match ack.status {
                Some(s) => format!("refused with status 0x{s:04X}"),
                None => "refused".into(),
            });
            ("failed", own_syntax()?, why)
        } else if let Some(to) = &ack.converted_to {
            let from = own_syntax()?;
            let reason = match &from {
                Some(f) => format!(
                    "the node did not take {} as it was; sent as {}",
                    syntax_name(f),
                    syntax_name(to)
                ),
                None => format!("sent as {}", syntax_name(to)),
            };
            ("transcoded", Some(to.clone()), reason)
        } else {
            continue;
        };
        out.push(InstanceOutcome {
            file: files.get(&sop).cloned(),
            sop_instance_uid: sop,
            outcome,
            transfer_syntax,
            reason,
        });
    }
    Ok(out)
}

/// Every node's outcomes and the archive's skipped entries of dispatch `id`.
pub struct DispatchOutcomes {
    pub skipped: laminate_store::SkippedEntries,
    pub nodes: BTreeMap<String, Vec<InstanceOutcome>>,
}

/// [`node_outcomes`] for each of `node_ids`, and the skipped entries (blocking).
pub fn dispatch_outcomes(
    store: &Store,
    id: &str,
    node_ids: &[String],
) -> Result<DispatchOutcomes, StoreError> {
    let files = store.journal_instance_files(id)?;
    let mut nodes = BTreeMap::new();
    for n in node_ids {
        nodes.insert(n.clone(), node_outcomes(store, id, n, &files)?);
    }
    Ok(DispatchOutcomes {
        skipped: store.journal_skipped(id)?,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminate_store::Ack;

    fn ack(stored: bool, error: Option<&str>, converted_to: Option<&str>) -> Ack {
        Ack {
            stored,
            status: None,
            error: error.map(str::to_owned),
            converted_to: converted_to.map(str::to_owned),
        }
    }

    #[test]
    fn failed_and_transcoded_instances_are_listed_and_those_sent_as_they_were_are_not() {
        let store = Store::open_temporary().expect("store");
        let files: Vec<(String, String)> = ["1.1", "1.2", "1.3"]
            .iter()
            .map(|s| (s.to_string(), format!("dir/{s}.dcm")))
            .collect();
        store
            .journal_set_instance_files("d", &files)
            .expect("files");
        store
            .journal_ack("d", "n", "1.1", &ack(true, None, None))
            .expect("ack");
        store
            .journal_ack(
                "d",
                "n",
                "1.2",
                &ack(true, None, Some("1.2.840.10008.1.2.1")),
            )
            .expect("ack");
        store
            .journal_ack(
                "d",
                "n",
                "1.3",
                &ack(false, Some("cannot decode: boom"), None),
            )
            .expect("ack");
        let got = dispatch_outcomes(&store, "d", &["n".into()]).expect("outcomes");
        let n = &got.nodes["n"];
        assert_eq!(n.len(), 2, "{n:?}");
        assert_eq!(n[0].sop_instance_uid, "1.2");
        assert_eq!(n[0].outcome, "transcoded");
        assert_eq!(n[0].file.as_deref(), Some("dir/1.2.dcm"));
        assert_eq!(n[0].transfer_syntax.as_deref(), Some("1.2.840.10008.1.2.1"));
        assert!(
            n[0].reason.contains("Explicit VR Little Endian"),
            "{}",
            n[0].reason
        );
        assert_eq!(n[1].outcome, "failed");
        assert_eq!(n[1].reason, "cannot decode: boom");
        assert_eq!(got.skipped.total, 0);
    }
}
