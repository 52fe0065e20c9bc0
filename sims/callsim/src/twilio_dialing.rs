//! What the fake Twilio does with calls a dialer places in bulk, as Twilio documents it:
//!
//! - **Outcomes per number**: a callee can be busy (`initiated`, `ringing`, then the final
//!   callback with `CallStatus=busy`), not answer (`no-answer` after ringing), fail (`failed`),
//!   or answer as a person or a machine. A number can be given a sequence of outcomes, one per
//!   call placed to it (the last repeats), so retries can find a different result.
//! - **Answering-machine detection**: a call created with `MachineDetection` and `AsyncAmd=true`
//!   is connected at once (its media stream starts at answer) and its verdict is posted (signed)
//!   to `AsyncAmdStatusCallback` later, with `AnsweredBy` and `MachineDetectionDuration`:
//!   `human` for a person; for a machine `machine_start` as soon as it is identified with
//!   `MachineDetection=Enable`, or `machine_end_beep` after its greeting with
//!   `DetectMessageEnd`. Without `MachineDetection` no verdict is sent; `AsyncAmd=true` alone
//!   is refused (21626), as Twilio does.
//! - **The account's calls per second**: calls created faster than the account's CPS are not
//!   refused; they wait in a queue (status `queued`) and leave it one interval apart, as Twilio
//!   queues them silently.
//! - **Concurrent REST requests**: beyond the account's limit of requests in flight Twilio
//!   answers 429 with error 20429 and creates nothing. `request_latency` holds each request
//!   open, so a test can reach the limit.
//!
//! The fake records, per call, when it was created, when it left the queue and when it ended,
//! and the most calls it had in progress at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_proto::event::AnsweredBy;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// What the callee does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A person answers; the caller script runs.
    Human,
    /// A voicemail box answers; the caller script runs (the box's greeting and beep).
    Machine,
    /// `busy`.
    Busy,
    /// Rings unanswered: `no-answer`.
    NoAnswer,
    /// `failed` (e.g. an unreachable number).
    Failed,
}

impl Outcome {
    /// The final `CallStatus` of a call that never connects.
    pub fn unanswered_status(self) -> Option<&'static str> {
        match self {
            Self::Busy => Some("busy"),
            Self::NoAnswer => Some("no-answer"),
            Self::Failed => Some("failed"),
            Self::Human | Self::Machine => None,
        }
    }

    /// The `AnsweredBy` of the verdict under `detection`.
    pub fn answered_by(self, detection: Detection) -> AnsweredBy {
        match (self, detection) {
            (Self::Machine, Detection::Enable) => AnsweredBy::MachineStart,
            (Self::Machine, Detection::DetectMessageEnd) => AnsweredBy::MachineEndBeep,
            _ => AnsweredBy::Human,
        }
    }
}

/// Twilio's `MachineDetection` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The verdict as soon as the callee is identified (`machine_start` for a machine).
    Enable,
    /// A machine's verdict once its greeting ended (`machine_end_*`), so a message left then is
    /// recorded.
    DetectMessageEnd,
}

/// The account's limits and the fake's timings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The account's calls per second (Twilio's default is 1); `None`: no queue.
    pub calls_per_second: Option<f64>,
    /// REST requests in flight at once before 20429s; `None`: no limit.
    pub max_concurrent_requests: Option<usize>,
    /// How long each create request takes.
    pub request_latency: Duration,
    /// Ringing before `no-answer`.
    pub ring: Duration,
    /// From answer to the AMD verdict on a person, or on a machine with `Enable` (as soon as
    /// it is identified).
    pub human_verdict_after: Duration,
    /// From answer to the verdict on a machine with `DetectMessageEnd`: after its greeting's
    /// beep.
    pub machine_verdict_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            calls_per_second: None,
            max_concurrent_requests: None,
            request_latency: Duration::ZERO,
            ring: Duration::from_millis(300),
            human_verdict_after: Duration::from_millis(200),
            machine_verdict_after: Duration::from_millis(600),
        }
    }
}

/// One call as the dialing side of the fake saw it.
#[derive(Debug, Clone)]
pub struct Placed {
    pub call_sid: String,
    pub to: String,
    pub outcome: Outcome,
    /// When the create request was answered.
    pub created_at: Instant,
    /// When the call left the account's queue and started ringing.
    pub dequeued_at: Option<Instant>,
    pub ended_at: Option<Instant>,
    /// The AMD verdict posted, if AMD was asked for.
    pub answered_by: Option<&'static str>,
}

#[derive(Default)]
struct State {
    limits: Limits,
    outcomes: HashMap<String, Vec<Outcome>>,
    /// Calls placed to each number so far.
    dialed: HashMap<String, usize>,
    /// When the account's queue lets the next call go.
    next_dequeue: Option<Instant>,
    active: usize,
    max_active: usize,
    placed: Vec<Placed>,
    /// Each CallSid's place in `placed`.
    index: HashMap<String, usize>,
}

/// The dialing side of the fake (shared by its request handlers).
#[derive(Default)]
pub struct Dialing {
    state: Mutex<State>,
    /// Create requests in flight, and those refused with 20429 (counted outside the lock, so a
    /// request's place is given back when it is dropped).
    in_flight: AtomicUsize,
    refused_20429: AtomicUsize,
}

/// A create request in flight; dropping it frees its place.
pub struct RequestSlot<'a>(&'a Dialing);

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one created call will do.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub outcome: Outcome,
    /// When it leaves the account's queue.
    pub dequeue_at: Instant,
    pub ring: Duration,
    /// When to post the AMD verdict after answering, and which, if AMD was asked for.
    pub verdict: Option<(Duration, AnsweredBy)>,
}

/// Why a create request's AMD parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AmdParamsError(pub String);

/// The detection mode when the create request asks for asynchronous AMD, checked as Twilio
/// checks it.
pub fn wants_async_amd(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Detection>, AmdParamsError> {
    let detection = get("MachineDetection");
    let is_async = get("AsyncAmd").is_some_and(|v| v == "true");
    let mode = match detection.as_deref() {
        None if is_async => {
            return Err(AmdParamsError(
                "AsyncAmd requires MachineDetection".to_owned(),
            ));
        }
        None => return Ok(None),
        Some("Enable") => Detection::Enable,
        Some("DetectMessageEnd") => Detection::DetectMessageEnd,
        Some(other) => {
            return Err(AmdParamsError(format!(
                "MachineDetection must be Enable or DetectMessageEnd, got {other}"
            )));
        }
    };
    // Without a callback Twilio accepts it but has nowhere to post the verdict.
    Ok((is_async && get("AsyncAmdStatusCallback").is_some()).then_some(mode))
}

impl Dialing {
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, State> {
        self.state.lock().await
    }

    pub async fn set_limits(&self, limits: Limits) {
        self.lock().await.limits = limits;
    }

    pub async fn set_outcomes(&self, to: &str, outcomes: Vec<Outcome>) {
        self.lock().await.outcomes.insert(to.to_owned(), outcomes);
    }

    /// A place for one create request, or `None` beyond the concurrent-request limit.
    pub async fn enter(&self) -> Option<RequestSlot<'_>> {
        let max = self.lock().await.limits.max_concurrent_requests;
        let entered = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (max.is_none_or(|max| n < max)).then_some(n + 1)
            });
        if entered.is_err() {
            self.refused_20429.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        Some(RequestSlot(self))
    }

    pub async fn request_latency(&self) -> Duration {
        self.lock().await.limits.request_latency
    }

    /// Plans a created call to `to`: its outcome and its place in the account's queue.
    pub async fn plan(&self, call_sid: &str, to: &str, amd: Option<Detection>) -> Plan {
        let mut s = self.lock().await;
        let n = {
            let n = s.dialed.entry(to.to_owned()).or_default();
            *n += 1;
            *n
        };
        let outcome = s
            .outcomes
            .get(to)
            .and_then(|list| list.get(n - 1).or(list.last()))
            .copied()
            .unwrap_or(Outcome::Human);
        let now = Instant::now();
        let dequeue_at = match s.limits.calls_per_second {
            Some(cps) if cps > 0.0 => {
                let at = s.next_dequeue.map_or(now, |next| next.max(now));
                s.next_dequeue = Some(at + Duration::from_secs_f64(1.0 / cps));
                at
            }
            _ => now,
        };
        let verdict = amd.map(|detection| {
            let after = match (outcome, detection) {
                (Outcome::Machine, Detection::DetectMessageEnd) => s.limits.machine_verdict_after,
                _ => s.limits.human_verdict_after,
            };
            (after, outcome.answered_by(detection))
        });
        let at = s.placed.len();
        s.index.insert(call_sid.to_owned(), at);
        s.placed.push(Placed {
            call_sid: call_sid.to_owned(),
            to: to.to_owned(),
            outcome,
            created_at: now,
            dequeued_at: None,
            ended_at: None,
            answered_by: None,
        });
        Plan {
            outcome,
            dequeue_at,
            ring: s.limits.ring,
            verdict,
        }
    }

    async fn with_call(&self, call_sid: &str, f: impl FnOnce(&mut Placed)) {
        let mut s = self.lock().await;
        if let Some(&at) = s.index.get(call_sid) {
            f(&mut s.placed[at]);
        }
    }

    /// The call left the queue and rings.
    pub async fn dequeued(&self, call_sid: &str) {
        let now = Instant::now();
        {
            let mut s = self.lock().await;
            s.active += 1;
            s.max_active = s.max_active.max(s.active);
        }
        self.with_call(call_sid, |p| p.dequeued_at = Some(now))
            .await;
    }

    pub async fn verdict(&self, call_sid: &str, answered_by: AnsweredBy) {
        self.with_call(call_sid, |p| p.answered_by = Some(answered_by.as_str()))
            .await;
    }

    /// The call is over (after it left the queue).
    pub async fn ended(&self, call_sid: &str) {
        let now = Instant::now();
        self.lock().await.active -= 1;
        self.with_call(call_sid, |p| p.ended_at = Some(now)).await;
    }

    pub async fn placed(&self) -> Vec<Placed> {
        self.lock().await.placed.clone()
    }

    /// The most calls in progress (out of the queue, not yet over) at once.
    pub async fn max_active(&self) -> usize {
        self.lock().await.max_active
    }

    /// Create requests refused with 20429.
    pub fn refused_20429(&self) -> usize {
        self.refused_20429.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amd_parameters_are_checked_like_twilio() {
        let params = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(wants_async_amd(params(&[])), Ok(None));
        assert!(wants_async_amd(params(&[("AsyncAmd", "true")])).is_err());
        assert!(wants_async_amd(params(&[("MachineDetection", "Sometimes")])).is_err());
        assert_eq!(
            wants_async_amd(params(&[
                ("MachineDetection", "DetectMessageEnd"),
                ("AsyncAmd", "true"),
                ("AsyncAmdStatusCallback", "https://gw/twilio-amd"),
            ])),
            Ok(Some(Detection::DetectMessageEnd))
        );
        assert_eq!(
            wants_async_amd(params(&[("MachineDetection", "Enable")])),
            Ok(None)
        );
        assert_eq!(
            wants_async_amd(params(&[
                ("MachineDetection", "DetectMessageEnd"),
                ("AsyncAmd", "true"),
            ])),
            Ok(None),
            "nowhere to post the verdict"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_accounts_cps_wait_in_the_queue() {
        let dialing = Dialing::default();
        dialing
            .set_limits(Limits {
                calls_per_second: Some(2.0),
                ..Default::default()
            })
            .await;
        dialing
            .set_outcomes("+15550000001", vec![Outcome::Busy, Outcome::Human])
            .await;
        let t0 = Instant::now();
        let mut plans = Vec::new();
        for i in 0..4 {
            plans.push(
                dialing
                    .plan(
                        &format!("CA{i}"),
                        "+15550000001",
                        Some(Detection::DetectMessageEnd),
                    )
                    .await,
            );
        }
        let offsets: Vec<Duration> = plans.iter().map(|p| p.dequeue_at - t0).collect();
        assert_eq!(
            offsets,
            [0, 500, 1000, 1500].map(Duration::from_millis).to_vec()
        );
        assert_eq!(plans[0].outcome, Outcome::Busy);
        assert_eq!(plans[1].outcome, Outcome::Human);
        assert_eq!(plans[3].outcome, Outcome::Human);
        assert!(plans[0].verdict.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_machine_verdict_follows_the_detection_mode() {
        let dialing = Dialing::default();
        let limits = Limits::default();
        dialing.set_outcomes("+1555", vec![Outcome::Machine]).await;
        let at_end = dialing
            .plan("CA1", "+1555", Some(Detection::DetectMessageEnd))
            .await;
        assert_eq!(
            at_end.verdict,
            Some((limits.machine_verdict_after, AnsweredBy::MachineEndBeep))
        );
        let at_once = dialing.plan("CA2", "+1555", Some(Detection::Enable)).await;
        assert_eq!(
            at_once.verdict,
            Some((limits.human_verdict_after, AnsweredBy::MachineStart))
        );
        let person = dialing
            .plan("CA3", "+1999", Some(Detection::DetectMessageEnd))
            .await;
        assert_eq!(
            person.verdict,
            Some((limits.human_verdict_after, AnsweredBy::Human))
        );
        assert_eq!(dialing.plan("CA4", "+1555", None).await.verdict, None);
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_are_refused() {
        let dialing = Dialing::default();
        dialing
            .set_limits(Limits {
                max_concurrent_requests: Some(1),
                ..Default::default()
            })
            .await;
        let first = dialing.enter().await;
        assert!(first.is_some());
        assert!(dialing.enter().await.is_none());
        drop(first);
        assert!(dialing.enter().await.is_some());
        assert_eq!(dialing.refused_20429(), 1);
    }
}
