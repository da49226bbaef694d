//! Model test: random sequences of pushes, acknowledgements and reopens, applied both to
//! an on-disk [`Store`] and to a plain `Vec`; after every step the pending entries must
//! match the model exactly (order, sequence numbers, content).

use proptest::prelude::*;

use super::*;

const KEYS: [&str; 3] = ["d1/n1", "d1/n2", "d2/n1"];

#[derive(Debug, Clone)]
enum Op {
    Push {
        key: Option<usize>,
        progress: bool,
    },
    /// Acknowledge up to the sequence number of the pending entry at this index (taken
    /// modulo the length), or everything when `beyond` is set.
    Ack {
        at: prop::sample::Index,
        beyond: bool,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::option::weighted(0.9, 0..KEYS.len()), any::<bool>())
            .prop_map(|(key, progress)| Op::Push { key, progress }),
        2 => (any::<prop::sample::Index>(), prop::bool::weighted(0.2))
            .prop_map(|(at, beyond)| Op::Ack { at, beyond }),
        1 => Just(Op::Reopen),
    ]
}

/// The specification of the outbox, as simply as it can be said.
#[derive(Default)]
struct Model {
    pending: Vec<OutboxEntry>,
}

impl Model {
    fn push(&mut self, seq: u64, key: Option<&str>, progress: bool, event: Vec<u8>) {
        if let (Some(k), true) = (key, progress) {
            let newest = self
                .pending
                .iter()
                .rposition(|e| e.coalesce_key.as_deref() == Some(k));
            if let Some(i) = newest.filter(|i| self.pending[*i].progress) {
                self.pending.remove(i);
            }
        }
        self.pending.push(OutboxEntry {
            seq,
            coalesce_key: key.map(str::to_owned),
            progress,
            event,
        });
    }

    fn ack(&mut self, upto: u64) -> usize {
        let before = self.pending.len();
        self.pending.retain(|e| e.seq > upto);
        before - self.pending.len()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn outbox_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(Store::open(dir.path()).unwrap());
        let mut model = Model::default();
        let mut last_seq = 0;
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push { key, progress } => {
                    let key = key.map(|i| KEYS[i]);
                    let event = format!("{{\"n\":{n}}}").into_bytes();
                    let s = store.as_ref().unwrap();
                    let seq = s.outbox_push(&event, key, progress).unwrap();
                    prop_assert!(seq > last_seq, "seq {} after {}", seq, last_seq);
                    last_seq = seq;
                    model.push(seq, key, progress, event);
                }
                Op::Ack { at, beyond } => {
                    let upto = if beyond || model.pending.is_empty() {
                        last_seq + 1
                    } else {
                        model.pending[at.index(model.pending.len())].seq
                    };
                    let removed = store.as_ref().unwrap().outbox_ack(upto).unwrap();
                    prop_assert_eq!(removed, model.ack(upto));
                }
                Op::Reopen => {
                    drop(store.take());
                    store = Some(Store::open(dir.path()).unwrap());
                }
            }
            let s = store.as_ref().unwrap();
            prop_assert_eq!(&s.outbox_pending(0, usize::MAX).unwrap(), &model.pending);
            prop_assert_eq!(s.outbox_len().unwrap(), model.pending.len());
            // Paging from the middle agrees with the model too.
            if let Some(first) = model.pending.first() {
                let page = s.outbox_pending(first.seq, 2).unwrap();
                let want: Vec<OutboxEntry> = model.pending.iter().skip(1).take(2).cloned().collect();
                prop_assert_eq!(page, want);
            }
        }
    }
}
