//! Ids in OpenAI's style: a kind prefix and a random suffix (`item_...`, `resp_...`).

use rand::Rng;
use rand::distr::Alphanumeric;

/// A fresh id with `prefix` (`event`, `item`, `resp`, `call`, `sess`, `conv`).
pub(crate) fn new(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("{prefix}_{suffix}")
}

/// A fresh server `event_id`.
pub(crate) fn event() -> String {
    new("event")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_unique() {
        let a = super::new("item");
        let b = super::new("item");
        assert!(a.starts_with("item_") && a.len() == 25);
        assert_ne!(a, b);
    }
}
