//! What each session received: an actor that owns the [`SessionRecord`]s of a server.
//!
//! Sessions report through an unbounded channel, so recording never makes a session wait;
//! because a session records a client event before it answers it, a test that has seen the
//! answer will find the event in the next snapshot.

use std::collections::BTreeMap;

use switchboard_realtime::ClientEvent;
use tokio::sync::{mpsc, oneshot};

/// One accepted WebSocket connection, as the simulator saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRecord {
    /// Every client event that parsed, in arrival order (invalid ones were answered with
    /// `error` and are not here).
    pub client_events: Vec<ClientEvent>,
    /// The upgrade request's headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The upgrade request's query string (e.g. `model=gpt-realtime`), without `?`.
    pub query: String,
    /// The connection has ended.
    pub closed: bool,
}

impl SessionRecord {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Msg {
    Opened {
        id: u64,
        headers: Vec<(String, String)>,
        query: String,
    },
    Event {
        id: u64,
        event: Box<ClientEvent>,
    },
    Closed {
        id: u64,
    },
    Snapshot {
        reply: oneshot::Sender<Vec<SessionRecord>>,
    },
}

/// Handle of the record-keeping actor. A disabled handle (the long-running binary) drops
/// everything, so memory does not grow with traffic.
#[derive(Clone)]
pub(crate) struct Registry {
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl Registry {
    /// Spawns the actor (when `enabled`). It stops when the last handle is dropped.
    pub(crate) fn spawn(enabled: bool) -> Registry {
        if !enabled {
            return Registry { tx: None };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Registry { tx: Some(tx) }
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    pub(crate) fn opened(&self, id: u64, headers: Vec<(String, String)>, query: String) {
        self.send(Msg::Opened { id, headers, query });
    }

    pub(crate) fn event(&self, id: u64, event: &ClientEvent) {
        if self.tx.is_some() {
            self.send(Msg::Event {
                id,
                event: Box::new(event.clone()),
            });
        }
    }

    pub(crate) fn closed(&self, id: u64) {
        self.send(Msg::Closed { id });
    }

    /// All records, in the order the connections were accepted.
    pub(crate) async fn snapshot(&self) -> Vec<SessionRecord> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Snapshot { reply });
        rx.await.unwrap_or_default()
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut records: BTreeMap<u64, SessionRecord> = BTreeMap::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Opened { id, headers, query } => {
                records.insert(
                    id,
                    SessionRecord {
                        headers,
                        query,
                        ..SessionRecord::default()
                    },
                );
            }
            Msg::Event { id, event } => {
                if let Some(r) = records.get_mut(&id) {
                    r.client_events.push(*event);
                }
            }
            Msg::Closed { id } => {
                if let Some(r) = records.get_mut(&id) {
                    r.closed = true;
                }
            }
            Msg::Snapshot { reply } => {
                let _ = reply.send(records.values().cloned().collect());
            }
        }
    }
}
