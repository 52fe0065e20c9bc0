//! Readiness of the persister: the database answers, the consumer is pulling, and the process
//! is not draining. Each part reports its own flag; `/readyz` shows the conjunction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use switchboard_service::Health;

/// A cloneable set of readiness flags feeding one [`Health`].
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    health: Health,
    database: Arc<AtomicBool>,
    consumer: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// All flags down; `health` turns ready once the database and consumer report in.
    pub fn new(health: Health) -> Self {
        Self {
            health,
            ..Self::default()
        }
    }

    /// The database answered (or failed).
    pub fn set_database(&self, ok: bool) {
        self.database.store(ok, Ordering::SeqCst);
        self.update();
    }

    /// The consumer is pulling messages (or stopped / failed).
    pub fn set_consumer(&self, running: bool) {
        self.consumer.store(running, Ordering::SeqCst);
        self.update();
    }

    /// Shutdown began: never ready again.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.update();
    }

    /// Whether the database is believed reachable.
    pub fn database_ok(&self) -> bool {
        self.database.load(Ordering::SeqCst)
    }

    fn update(&self) {
        let ready = self.database.load(Ordering::SeqCst)
            && self.consumer.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst);
        self.health.set_ready(ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_all_parts_are() {
        let health = Health::new();
        let r = Readiness::new(health.clone());
        r.set_database(true);
        assert!(!health.is_ready());
        r.set_consumer(true);
        assert!(health.is_ready());
        r.set_database(false);
        assert!(!health.is_ready());
        r.set_database(true);
        r.set_draining();
        assert!(!health.is_ready());
    }
}
