//! One association's catalog writer: a thread that records each instance
//! (one transaction and a flush) while the association's own thread makes
//! the file durable, so the two waits overlap and the answer waits only for
//! the longer one.
//!
//! The thread lives as long as the association: starting one per instance
//! cost ~6 % of the SCP's CPU under four associations (`perf`, thread
//! creation and teardown), on a machine whose two cores the senders already
//! share. Touches the store's catalog only.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use laminate_store::{Catalog, InstanceRecord, Store, StoreError};

use super::writer::IngestFailure;

/// What [`Catalog::put_instance`] answered: the record it replaced, if any.
pub type Indexed = Result<Option<InstanceRecord>, IngestFailure>;

/// The association's side of its catalog thread.
#[derive(Debug)]
pub struct Indexer {
    store: Store,
    /// `None` once dropped (ends the thread) or when no thread could start.
    requests: Option<Sender<InstanceRecord>>,
    results: Option<Receiver<Result<Option<InstanceRecord>, StoreError>>>,
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    /// Starts the thread; without one, [`Indexer::begin`] records inline.
    pub fn start(store: Store) -> Self {
        let (requests, inbox) = mpsc::channel::<InstanceRecord>();
        let (outbox, results) = mpsc::channel();
        let worker = store.clone();
        let spawned = std::thread::Builder::new()
            .name("ingest-index".into())
            .spawn(move || {
                for rec in inbox {
                    if outbox.send(worker.put_instance(&rec)).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(thread) => Self {
                store,
                requests: Some(requests),
                results: Some(results),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no catalog thread; indexing inline");
                Self {
                    store,
                    requests: None,
                    results: None,
                    thread: None,
                }
            }
        }
    }

    /// Starts recording `rec`; [`Pending::finish`] waits for the result.
    pub fn begin(&self, rec: &InstanceRecord) -> Pending<'_> {
        match &self.requests {
            Some(requests) if requests.send(rec.clone()).is_ok() => Pending::Sent(self),
            // No thread, or it is gone (it panicked): record inline.
            _ => Pending::Inline(self, rec.clone()),
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        // Closing the requests ends the thread's loop.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A record handed to the catalog, not yet confirmed.
#[must_use = "the catalog's answer must be awaited before the C-STORE is answered"]
pub enum Pending<'a> {
    Sent(&'a Indexer),
    Inline(&'a Indexer, InstanceRecord),
}

impl Pending<'_> {
    /// Waits for the record's transaction and flush.
    pub fn finish(self) -> Indexed {
        match self {
            Pending::Sent(indexer) => match indexer.results.as_ref().map(Receiver::recv) {
                Some(Ok(result)) => result.map_err(IngestFailure::Store),
                // The thread died with the record (a panic in the store).
                _ => Err(IngestFailure::IndexerGone),
            },
            Pending::Inline(indexer, rec) => indexer
                .store
                .put_instance(&rec)
                .map_err(IngestFailure::Store),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminate_store::{instance_rel_path, InstanceSource};

    fn record(sop: &str) -> InstanceRecord {
        let (study, series) = ("1.2.3", "1.2.3.4");
        InstanceRecord {
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            study_instance_uid: study.into(),
            series_instance_uid: series.into(),
            series_number: Some(1),
            patient_id: Some("P".into()),
            path: instance_rel_path(study, series, sop).unwrap(),
            size: 10,
            source: InstanceSource::Ingest,
            stored_at_ms: 0,
        }
    }

    #[test]
    fn records_one_after_another_on_one_thread_and_reports_what_was_replaced() {
        let store = Store::open_temporary().unwrap();
        let indexer = Indexer::start(store.clone());
        assert!(indexer.thread.is_some());
        assert_eq!(indexer.begin(&record("1.2.3.4.1")).finish().unwrap(), None);
        assert_eq!(indexer.begin(&record("1.2.3.4.2")).finish().unwrap(), None);
        let again = indexer.begin(&record("1.2.3.4.1")).finish().unwrap();
        assert_eq!(
            again.map(|r| r.sop_instance_uid).as_deref(),
            Some("1.2.3.4.1")
        );
        assert_eq!(store.figures().unwrap().instances, 2);
    }

    #[test]
    fn a_refused_record_is_a_store_failure_and_the_thread_goes_on() {
        let store = Store::open_temporary().unwrap();
        let indexer = Indexer::start(store.clone());
        let mut bad = record("1.2.3.4.5");
        bad.path = "elsewhere.dcm".into();
        assert!(matches!(
            indexer.begin(&bad).finish(),
            Err(IngestFailure::Store(_))
        ));
        assert!(indexer.begin(&record("1.2.3.4.6")).finish().is_ok());
    }
}
