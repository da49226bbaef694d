//! Closing the ingest associations at shutdown (APPLIANCE.md "Container":
//! SIGTERM finishes the current C-STORE, closes associations and exits
//! within 10 s).
//!
//! An association in the middle of an instance finishes it (stored, indexed,
//! answered) and then closes with A-ABORT; one waiting for its next request
//! closes at once, even though its thread is blocked reading. To wake that
//! read, each association lends the drain a clone of its socket while it
//! waits between requests ([`Drain::idle`]); the drain shuts down the read
//! side of every socket it holds. A request that arrives just as the drain
//! starts is dropped unanswered, so the sender knows to send it again later:
//! nothing half-taken is ever left behind.
//!
//! Touches only the sockets the associations lend it.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::health::lock;

/// The associations of one ingest SCP, as the shutdown sees them.
#[derive(Debug, Default)]
pub struct Drain {
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    draining: bool,
    /// The sockets of the associations waiting between requests.
    idle: HashMap<u64, Arc<TcpStream>>,
}

/// One association's place in the [`Drain`]; leaving is dropping it.
#[derive(Debug)]
pub struct Member<'a> {
    drain: &'a Drain,
    id: u64,
    /// Shared, not cloned per wait: going idle happens once per instance.
    socket: Option<Arc<TcpStream>>,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// An association starts; `socket` is a clone of its connection (`None`
    /// if it could not be cloned: that association then closes at the drain
    /// only once its next request or its idle timeout comes).
    pub fn join(&self, socket: Option<TcpStream>) -> Member<'_> {
        Member {
            drain: self,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            socket: socket.map(Arc::new),
        }
    }

    /// Closes every waiting association now, and every busy one after its
    /// current instance. Returns how many were woken.
    pub fn start(&self) -> usize {
        let mut st = lock(&self.state);
        st.draining = true;
        let woken = st.idle.len();
        for (_, socket) in st.idle.drain() {
            // Ends the blocked read; writing (the A-ABORT) still works.
            let _ = socket.shutdown(Shutdown::Read);
        }
        woken
    }

    pub fn is_draining(&self) -> bool {
        lock(&self.state).draining
    }
}

impl Member<'_> {
    /// Nothing is in progress and the association is about to wait for its
    /// next request. `false`: the drain has started, close now.
    pub fn idle(&self) -> bool {
        let mut st = lock(&self.drain.state);
        if st.draining {
            return false;
        }
        if let Some(socket) = &self.socket {
            st.idle.insert(self.id, socket.clone());
        }
        true
    }

    /// Something arrived (or the read failed) after [`Member::idle`].
    /// `false`: the drain started meanwhile; whatever arrived is dropped
    /// unanswered and the association closes.
    pub fn busy(&self) -> bool {
        let mut st = lock(&self.drain.state);
        st.idle.remove(&self.id);
        !st.draining
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        lock(&self.drain.state).idle.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_waiting_association_is_woken_and_told_to_close() {
        let drain = Drain::new();
        let (_client, mut server) = pair();
        server
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        std::thread::scope(|s| {
            let member = drain.join(server.try_clone().ok());
            let reader = s.spawn(move || {
                assert!(member.idle());
                let mut buf = [0u8; 1];
                // Blocks until the drain shuts the read side: then end of stream.
                let n = server.read(&mut buf).unwrap();
                (n, member.busy())
            });
            while lock(&drain.state).idle.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(drain.start(), 1);
            assert_eq!(reader.join().unwrap(), (0, false));
        });
    }

    #[test]
    fn a_busy_association_finishes_and_closes_at_its_next_wait() {
        let drain = Drain::new();
        let (_client, server) = pair();
        let member = drain.join(Some(server));
        assert!(member.idle());
        assert!(member.busy(), "a request arrived before the drain");
        assert_eq!(drain.start(), 0, "nothing waiting to wake");
        assert!(!member.idle(), "closes before waiting again");
        assert!(drain.is_draining());
    }

    #[test]
    fn leaving_returns_the_socket() {
        let drain = Drain::new();
        let (_client, server) = pair();
        let member = drain.join(Some(server));
        assert!(member.idle());
        drop(member);
        assert!(lock(&drain.state).idle.is_empty());
    }
}
