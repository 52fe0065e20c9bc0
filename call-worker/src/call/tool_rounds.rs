//! Tool rounds: the function calls of one response, answered together.
//!
//! A response may call several functions. Their outputs go back to the model only when the
//! response is done and every call of it has finished, followed by exactly one
//! `response.create`, so the model answers the round once. A round still running when the
//! Realtime session is lost is finished in the new session: its calls are recreated there
//! (unless the replayed conversation already holds them), then its outputs follow. A slow
//! business tool makes the agent say a filler line once per round (see
//! [`ToolRounds::filler_due`]).

use std::collections::{HashMap, HashSet};

use switchboard_realtime::Item;
use tokio::time::{Duration, Instant};

/// A filler line that could not be said because the assistant was not silent is tried again
/// after this long.
pub const FILLER_RECHECK: Duration = Duration::from_millis(250);

/// The function calls of one response.
#[derive(Debug)]
struct Round {
    response_id: String,
    calls: Vec<String>,
    outputs: HashMap<String, String>,
    /// The response is done: no more calls join the round.
    closed: bool,
    /// Name and arguments of each call, to recreate the calls in a new session.
    made: HashMap<String, (String, String)>,
    /// The round started in an earlier Realtime session: its calls are not in the current one.
    resumed: bool,
    /// When to say the filler line if a business tool of the round is still running.
    filler_at: Option<Instant>,
}

impl Round {
    fn complete(&self) -> bool {
        self.closed && self.calls.iter().all(|c| self.outputs.contains_key(c))
    }

    fn waiting(&self) -> bool {
        self.calls.iter().any(|c| !self.outputs.contains_key(c))
    }
}

/// The tool rounds of one call.
#[derive(Debug, Default)]
pub struct ToolRounds {
    rounds: Vec<Round>,
    /// Every call id seen, so a call announced twice (by its `arguments.done` and again in its
    /// `response.done`) runs once.
    seen: HashSet<String>,
    /// Calls whose output is already in the replayed conversation of a new session.
    replayed: HashSet<String>,
}

impl ToolRounds {
    /// The model called `name` in response `response_id`. Returns false for a call without an
    /// id or one already seen (it must not run again).
    pub fn start(&mut self, response_id: &str, call_id: &str, name: &str, arguments: &str) -> bool {
        if call_id.is_empty() || !self.seen.insert(call_id.to_owned()) {
            return false;
        }
        let round = match self
            .rounds
            .iter()
            .position(|r| r.response_id == response_id)
        {
            Some(i) => &mut self.rounds[i],
            None => {
                self.rounds.push(Round {
                    response_id: response_id.to_owned(),
                    calls: Vec::new(),
                    outputs: HashMap::new(),
                    closed: false,
                    made: HashMap::new(),
                    resumed: false,
                    filler_at: None,
                });
                let last = self.rounds.len() - 1;
                &mut self.rounds[last]
            }
        };
        round.calls.push(call_id.to_owned());
        round
            .made
            .insert(call_id.to_owned(), (name.to_owned(), arguments.to_owned()));
        true
    }

    /// A business tool of `response_id`'s round runs: say the filler line at `at` if the round
    /// is still waiting then (the first such tool of the round sets the time).
    pub fn arm_filler(&mut self, response_id: &str, at: Instant) {
        if let Some(round) = self
            .rounds
            .iter_mut()
            .find(|r| r.response_id == response_id)
            && round.filler_at.is_none()
        {
            round.filler_at = Some(at);
        }
    }

    /// The output of a finished call, as the model will read it.
    pub fn finished(&mut self, call_id: &str, output: String) {
        if let Some(round) = self
            .rounds
            .iter_mut()
            .find(|r| r.calls.iter().any(|c| c == call_id))
        {
            round.outputs.insert(call_id.to_owned(), output);
        }
    }

    /// Response `response_id` is done: its round takes no more calls.
    pub fn response_done(&mut self, response_id: &str) {
        if let Some(round) = self
            .rounds
            .iter_mut()
            .find(|r| r.response_id == response_id)
        {
            round.closed = true;
        }
    }

    /// The Realtime session was lost: every round is finished in the next one.
    pub fn session_lost(&mut self) {
        for round in &mut self.rounds {
            round.closed = true;
            round.resumed = true;
        }
    }

    /// A new session starts from the replayed conversation, which holds every output published
    /// so far: those are not sent again.
    pub fn session_resumed(&mut self) {
        for round in self.rounds.iter().filter(|r| r.resumed) {
            self.replayed.extend(round.outputs.keys().cloned());
        }
    }

    /// The items that answer every complete round (calls recreated where the session lacks
    /// them, then outputs), or `None` when no round is complete. A complete round is followed
    /// by one `response.create` even when the replay already holds all its items.
    pub fn take_complete(&mut self) -> Option<Vec<Item>> {
        let (ready, waiting): (Vec<Round>, Vec<Round>) = std::mem::take(&mut self.rounds)
            .into_iter()
            .partition(Round::complete);
        self.rounds = waiting;
        if ready.is_empty() {
            return None;
        }
        let mut items = Vec::new();
        for mut round in ready {
            for call_id in &round.calls {
                if self.replayed.remove(call_id) {
                    continue;
                }
                if round.resumed
                    && let Some((name, arguments)) = round.made.get(call_id)
                {
                    items.push(crate::replay::function_call(call_id, name, arguments));
                }
                let output = round.outputs.remove(call_id).unwrap_or_default();
                items.push(Item::function_output(call_id, &output));
            }
        }
        Some(items)
    }

    /// The earliest filler time, if any.
    pub fn filler_deadline(&self) -> Option<Instant> {
        self.rounds.iter().filter_map(|r| r.filler_at).min()
    }

    /// Whether to say the filler line at `now`: a round's filler time has come and a business
    /// tool of it still runs, and the assistant is `silent`. At most once per round; while
    /// the assistant speaks, asked again after [`FILLER_RECHECK`].
    pub fn filler_due(&mut self, now: Instant, silent: bool) -> bool {
        let mut say = false;
        for round in &mut self.rounds {
            if round.filler_at.is_none_or(|d| d > now) {
                continue;
            }
            round.filler_at = match (round.waiting(), silent) {
                (false, _) => None,
                (true, false) => Some(now + FILLER_RECHECK),
                (true, true) => {
                    say = true;
                    None
                }
            };
        }
        say
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_answered_once_the_response_is_done_and_every_call_finished() {
        let mut t = ToolRounds::default();
        assert!(t.start("r1", "c1", "book", "{}"));
        assert!(t.start("r1", "c2", "lookup", "{}"));
        assert!(!t.start("r1", "c1", "book", "{}"), "a call runs once");
        assert!(!t.start("r1", "", "book", "{}"), "a call needs an id");
        t.finished("c1", "one".into());
        t.finished("c2", "two".into());
        assert_eq!(t.take_complete(), None, "the response may still add calls");
        t.response_done("r1");
        assert_eq!(
            t.take_complete(),
            Some(vec![
                Item::function_output("c1", "one"),
                Item::function_output("c2", "two")
            ])
        );
        assert_eq!(t.take_complete(), None, "answered once");
    }

    #[test]
    fn a_round_across_a_lost_session_recreates_its_calls_unless_replayed() {
        let mut t = ToolRounds::default();
        t.start("r1", "c1", "book", r#"{"day":"mon"}"#);
        t.start("r1", "c2", "lookup", "{}");
        t.finished("c1", "booked".into());
        t.session_lost();
        // c1's output was published before the new session, so the replay holds it.
        t.session_resumed();
        assert_eq!(t.take_complete(), None, "c2 still runs");
        t.finished("c2", "found".into());
        assert_eq!(
            t.take_complete(),
            Some(vec![
                crate::replay::function_call("c2", "lookup", "{}"),
                Item::function_output("c2", "found"),
            ])
        );
    }

    #[test]
    fn the_filler_line_is_said_once_per_round_and_only_in_silence() {
        let t0 = Instant::now();
        let mut t = ToolRounds::default();
        t.start("r1", "c1", "slow", "{}");
        t.arm_filler("r1", t0 + Duration::from_secs(2));
        t.arm_filler("r1", t0 + Duration::from_secs(9));
        assert_eq!(t.filler_deadline(), Some(t0 + Duration::from_secs(2)));
        assert!(!t.filler_due(t0 + Duration::from_secs(1), true), "not yet");
        let at = t0 + Duration::from_secs(2);
        assert!(!t.filler_due(at, false), "the assistant speaks");
        assert_eq!(t.filler_deadline(), Some(at + FILLER_RECHECK));
        assert!(t.filler_due(at + FILLER_RECHECK, true));
        assert_eq!(t.filler_deadline(), None, "once per round");

        t.start("r2", "c2", "slow", "{}");
        t.arm_filler("r2", at);
        t.finished("c2", "done".into());
        assert!(!t.filler_due(at, true), "nothing left to wait for");
        assert_eq!(t.filler_deadline(), None);
    }
}
