//! Presentation contexts: proposed from what the items hold, split so that no
//! association proposes more than 128 (dicom-ul numbers them `2i+1` without a
//! check, so more would wrap), and the choice of context for one item.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dicom_ul::pdu::PresentationContextNegotiated;

use super::Item;
use crate::dimse::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// The most presentation contexts one association can carry (ids 1..=255, odd).
pub(crate) const MAX_CONTEXTS: usize = 128;

/// One proposed presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proposal {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
}

/// Items that can share associations, with the contexts they need.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub proposals: Vec<Proposal>,
    pub items: Vec<Item>,
}

pub(crate) fn trim_uid(s: &str) -> &str {
    s.trim_end_matches(['\0', ' '])
}

/// Groups the items: per SOP class, one context per transfer syntax present
/// (proposing exactly that syntax) plus one proposing Explicit and Implicit
/// VR Little Endian; classes are packed into groups of at most
/// [`MAX_CONTEXTS`] contexts (a class with more than 127 syntaxes is split
/// too). Item order is kept within a group.
pub(crate) fn plan(items: Vec<Item>) -> Vec<Group> {
    let mut by_class: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for item in &items {
        by_class
            .entry(trim_uid(&item.sop_class_uid).to_string())
            .or_default()
            .insert(trim_uid(&item.transfer_syntax).to_string());
    }
    // Units: a class with a chunk of its syntaxes, costing chunk + 1 contexts.
    let mut groups: Vec<Vec<Proposal>> = Vec::new();
    let mut group_of: HashMap<(String, String), usize> = HashMap::new();
    for (class, syntaxes) in by_class {
        let syntaxes: Vec<String> = syntaxes.into_iter().collect();
        for chunk in syntaxes.chunks(MAX_CONTEXTS - 1) {
            let cost = chunk.len() + 1;
            let fits = groups
                .last()
                .is_some_and(|g| g.len() + cost <= MAX_CONTEXTS);
            if !fits {
                groups.push(Vec::new());
            }
            let index = groups.len() - 1;
            let group = &mut groups[index];
            for ts in chunk {
                group.push(Proposal {
                    abstract_syntax: class.clone(),
                    transfer_syntaxes: vec![ts.clone()],
                });
                group_of.insert((class.clone(), ts.clone()), index);
            }
            group.push(Proposal {
                abstract_syntax: class.clone(),
                transfer_syntaxes: vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()],
            });
        }
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|proposals| Group {
            proposals,
            items: Vec::new(),
        })
        .collect();
    for item in items {
        let key = (
            trim_uid(&item.sop_class_uid).to_string(),
            trim_uid(&item.transfer_syntax).to_string(),
        );
        // Every (class, syntax) pair was registered above.
        let index = group_of.get(&key).copied().unwrap_or(0);
        out[index].items.push(item);
    }
    out
}

/// Groups the items for a node that wants every instance in `ts` (the site's
/// `prefer_transfer_syntax`, a native syntax): one context per SOP class
/// proposing `ts` alone, at most [`MAX_CONTEXTS`] classes a group.
pub(crate) fn plan_preferred(items: Vec<Item>, ts: &str) -> Vec<Group> {
    let classes: BTreeSet<String> = items
        .iter()
        .map(|i| trim_uid(&i.sop_class_uid).to_string())
        .collect();
    let mut out: Vec<Group> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (i, chunk) in classes
        .into_iter()
        .collect::<Vec<_>>()
        .chunks(MAX_CONTEXTS)
        .enumerate()
    {
        out.push(Group {
            proposals: chunk
                .iter()
                .map(|class| {
                    group_of.insert(class.clone(), i);
                    Proposal {
                        abstract_syntax: class.clone(),
                        transfer_syntaxes: vec![ts.to_string()],
                    }
                })
                .collect(),
            items: Vec::new(),
        });
    }
    for item in items {
        let index = group_of
            .get(trim_uid(&item.sop_class_uid))
            .copied()
            .unwrap_or(0);
        out[index].items.push(item);
    }
    out
}

/// [`plan`], or [`plan_preferred`] when the node wants one syntax.
pub(crate) fn plan_for(items: Vec<Item>, prefer: Option<&str>) -> Vec<Group> {
    match prefer {
        Some(ts) => plan_preferred(items, ts),
        None => plan(items),
    }
}

/// The choice for a node that wants every instance in `ts`: the file's bytes
/// when it already is, else converted; refused when the node did not accept it.
pub(crate) fn choose_preferred(
    accepted: &[PresentationContextNegotiated],
    item: &Item,
    ts: &str,
) -> Choice {
    let class = trim_uid(&item.sop_class_uid);
    let Some(pc) = accepted
        .iter()
        .find(|pc| trim_uid(&pc.abstract_syntax) == class && trim_uid(&pc.transfer_syntax) == ts)
    else {
        return Choice::Refused;
    };
    if trim_uid(&item.transfer_syntax) == ts {
        Choice::Exact { pc_id: pc.id }
    } else {
        Choice::Convert {
            pc_id: pc.id,
            ts: ts.to_string(),
        }
    }
}

/// How an item goes over an established association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The node accepted the file's own syntax: stream the bytes as they are.
    Exact { pc_id: u8 },
    /// Only Explicit/Implicit VR LE was accepted: re-encode into `ts`.
    Convert { pc_id: u8, ts: String },
    /// The node accepted no context for the item's SOP class.
    Refused,
}

pub(crate) fn choose(accepted: &[PresentationContextNegotiated], item: &Item) -> Choice {
    let class = trim_uid(&item.sop_class_uid);
    let ts = trim_uid(&item.transfer_syntax);
    let for_class = || {
        accepted
            .iter()
            .filter(move |pc| trim_uid(&pc.abstract_syntax) == class)
    };
    // The try after repeated aborts goes as Explicit VR Little Endian where
    // the node accepted it (APPLIANCE.md), whatever the file's own syntax.
    let exact_allowed = !item.force_native
        || ts == EXPLICIT_VR_LE
        || (ts == IMPLICIT_VR_LE
            && !for_class().any(|pc| trim_uid(&pc.transfer_syntax) == EXPLICIT_VR_LE));
    if exact_allowed {
        if let Some(pc) = for_class().find(|pc| trim_uid(&pc.transfer_syntax) == ts) {
            return Choice::Exact { pc_id: pc.id };
        }
    }
    for native in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
        if let Some(pc) = for_class().find(|pc| trim_uid(&pc.transfer_syntax) == native) {
            return Choice::Convert {
                pc_id: pc.id,
                ts: native.to_string(),
            };
        }
    }
    Choice::Refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PresentationContextResultReason;
    use std::path::PathBuf;

    fn item(class: &str, ts: &str, n: usize) -> Item {
        Item {
            sop_instance_uid: format!("2.25.{n}"),
            sop_class_uid: class.into(),
            transfer_syntax: ts.into(),
            path: PathBuf::from(format!("/nowhere/{n}")),
            dataset_offset: 0,
            aborts: 0,
            force_native: false,
        }
    }

    #[test]
    fn a_preferred_syntax_is_the_only_one_proposed_and_everything_else_is_converted() {
        let jpeg = "1.2.840.10008.1.2.4.50";
        let items = vec![
            item("1.2.3", jpeg, 1),
            item("1.2.3", jpeg, 2),
            item("1.2.4", IMPLICIT_VR_LE, 3),
            item("1.2.3", IMPLICIT_VR_LE, 4),
        ];
        let groups = plan_for(items, Some(IMPLICIT_VR_LE));
        assert_eq!(groups.len(), 1);
        assert_eq!(
            groups[0].proposals,
            vec![
                Proposal {
                    abstract_syntax: "1.2.3".into(),
                    transfer_syntaxes: vec![IMPLICIT_VR_LE.into()]
                },
                Proposal {
                    abstract_syntax: "1.2.4".into(),
                    transfer_syntaxes: vec![IMPLICIT_VR_LE.into()]
                },
            ]
        );
        assert_eq!(groups[0].items.len(), 4);
        let accepted = [pc(1, "1.2.3", IMPLICIT_VR_LE)];
        let it = &groups[0].items;
        let jpeg_item = it.iter().find(|i| i.transfer_syntax == jpeg).unwrap();
        assert_eq!(
            choose_preferred(&accepted, jpeg_item, IMPLICIT_VR_LE),
            Choice::Convert {
                pc_id: 1,
                ts: IMPLICIT_VR_LE.into()
            }
        );
        let native = it
            .iter()
            .find(|i| i.transfer_syntax == IMPLICIT_VR_LE && i.sop_class_uid == "1.2.3")
            .unwrap();
        assert_eq!(
            choose_preferred(&accepted, native, IMPLICIT_VR_LE),
            Choice::Exact { pc_id: 1 }
        );
        let other = it.iter().find(|i| i.sop_class_uid == "1.2.4").unwrap();
        assert_eq!(
            choose_preferred(&accepted, other, IMPLICIT_VR_LE),
            Choice::Refused
        );
    }

    #[test]
    fn one_context_per_pair_plus_a_native_one_per_class() {
        let items = vec![
            item("1.2.3", EXPLICIT_VR_LE, 1),
            item("1.2.3", "1.2.840.10008.1.2.4.50", 2),
            item("1.2.3", EXPLICIT_VR_LE, 3),
            item("1.2.4", IMPLICIT_VR_LE, 4),
        ];
        let groups = plan(items);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.proposals.len(), 2 + 1 + 1 + 1);
        assert_eq!(g.items.len(), 4);
        assert_eq!(g.items[0].sop_instance_uid, "2.25.1");
        let natives = g
            .proposals
            .iter()
            .filter(|p| p.transfer_syntaxes.len() == 2)
            .count();
        assert_eq!(natives, 2);
        assert!(g.proposals.iter().any(|p| p.abstract_syntax == "1.2.3"
            && p.transfer_syntaxes == vec!["1.2.840.10008.1.2.4.50".to_string()]));
    }

    #[test]
    fn more_than_128_contexts_are_split_and_every_item_kept_once() {
        let mut items = Vec::new();
        for c in 0..70 {
            items.push(item(&format!("1.2.3.{c}"), EXPLICIT_VR_LE, 2 * c));
            items.push(item(&format!("1.2.3.{c}"), IMPLICIT_VR_LE, 2 * c + 1));
        }
        let groups = plan(items);
        assert_eq!(groups.len(), 2);
        let mut seen = BTreeSet::new();
        for g in &groups {
            assert!(g.proposals.len() <= MAX_CONTEXTS);
            for it in &g.items {
                assert!(seen.insert(it.sop_instance_uid.clone()));
                // Its contexts are in its group.
                assert!(g
                    .proposals
                    .iter()
                    .any(|p| p.abstract_syntax == it.sop_class_uid
                        && p.transfer_syntaxes == vec![it.transfer_syntax.clone()]));
            }
        }
        assert_eq!(seen.len(), 140);
    }

    #[test]
    fn a_class_with_too_many_syntaxes_is_split_too() {
        let items: Vec<Item> = (0..200)
            .map(|n| item("1.2.3", &format!("1.2.840.99.{n}"), n))
            .collect();
        let groups = plan(items);
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().all(|g| g.proposals.len() <= MAX_CONTEXTS));
        assert_eq!(groups.iter().map(|g| g.items.len()).sum::<usize>(), 200);
    }

    fn pc(id: u8, class: &str, ts: &str) -> PresentationContextNegotiated {
        PresentationContextNegotiated {
            id,
            reason: PresentationContextResultReason::Acceptance,
            abstract_syntax: class.into(),
            transfer_syntax: format!("{ts}\0"),
        }
    }

    #[test]
    fn exact_beats_conversion_and_explicit_beats_implicit() {
        let jpeg = "1.2.840.10008.1.2.4.50";
        let it = item("1.2.3", jpeg, 1);
        assert_eq!(
            choose(&[pc(1, "1.2.3", jpeg)], &it),
            Choice::Exact { pc_id: 1 }
        );
        assert_eq!(
            choose(
                &[
                    pc(3, "1.2.3", IMPLICIT_VR_LE),
                    pc(5, "1.2.3", EXPLICIT_VR_LE)
                ],
                &it
            ),
            Choice::Convert {
                pc_id: 5,
                ts: EXPLICIT_VR_LE.into()
            }
        );
        assert_eq!(choose(&[pc(3, "1.2.4", jpeg)], &it), Choice::Refused);
    }
}
