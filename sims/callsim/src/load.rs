//! Many calls at once: callsim as a load generator, with latency percentiles.
//!
//! A run is always bounded: a fixed number of calls, at most `concurrency` at a time, optionally
//! cut off after a duration (running calls then hang up). Every call is its own task placing an
//! ordinary [`place_call_until`] call against the one gateway in the configuration.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::call::place_call_until;
use crate::config::CallConfig;
use crate::report::{CallError, CallReport, EndedBy};
use crate::script::CallerScript;

/// Distinct failure messages kept in a load report.
const MAX_FAILURE_SAMPLES: usize = 20;

/// How much load to generate.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Calls to place in total.
    pub calls: usize,
    /// Calls in progress at once, at most.
    pub concurrency: usize,
    /// Stop starting calls after this long, and hang up the ones still running.
    pub duration: Option<Duration>,
}

/// Latency percentiles in milliseconds (all 0 when `count` is 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return write!(f, "no samples");
        }
        write!(
            f,
            "p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (n={})",
            self.p50, self.p90, self.p99, self.max, self.count
        )
    }
}

/// The outcome of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub calls_started: usize,
    /// Connected, ended by either side, no step or protocol errors.
    pub ok: usize,
    pub failed: usize,
    /// Answered with busy TwiML.
    pub rejected: usize,
    pub elapsed_ms: u64,
    /// Webhook POST -> first assistant audio.
    pub greeting_latency_ms: Percentiles,
    /// End of a caller `say` -> first assistant audio after it.
    pub response_latency_ms: Percentiles,
    /// How late callsim echoed marks after their audio finished: callsim's own health under
    /// load (high values mean the generator, not the gateway, is the bottleneck).
    pub mark_echo_lateness_ms: Percentiles,
    pub frames_sent: u64,
    pub protocol_errors: u64,
    pub step_errors: u64,
    /// Up to 20 distinct failure messages.
    pub failures: Vec<String>,
}

impl LoadReport {
    /// Every call went through (or was rejected as busy).
    pub fn all_ok(&self) -> bool {
        self.failed == 0
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "calls: {} started, {} ok, {} failed, {} rejected in {:.1} s",
            self.calls_started,
            self.ok,
            self.failed,
            self.rejected,
            self.elapsed_ms as f64 / 1000.0
        )?;
        writeln!(f, "greeting latency:   {}", self.greeting_latency_ms)?;
        writeln!(f, "response latency:   {}", self.response_latency_ms)?;
        writeln!(f, "mark-echo lateness: {}", self.mark_echo_lateness_ms)?;
        writeln!(
            f,
            "frames sent: {}; protocol errors: {}; step errors: {}",
            self.frames_sent, self.protocol_errors, self.step_errors
        )?;
        for failure in &self.failures {
            writeln!(f, "  failure: {failure}")?;
        }
        Ok(())
    }
}

/// Places `calls` calls, at most `concurrency` at once, and summarizes them.
pub async fn run_load(
    cfg: &CallConfig,
    script: &CallerScript,
    calls: usize,
    concurrency: usize,
) -> LoadReport {
    let opts = LoadOptions {
        calls,
        concurrency,
        duration: None,
    };
    run_load_with(cfg, script, &opts, &CancellationToken::new()).await
}

/// [`run_load`] with a time bound; `cancel` stops starting calls and hangs up running ones.
pub async fn run_load_with(
    cfg: &CallConfig,
    script: &CallerScript,
    opts: &LoadOptions,
    cancel: &CancellationToken,
) -> LoadReport {
    let started = Instant::now();
    let deadline = opts.duration.map(|d| started + d);
    let hang_up = cancel.child_token();
    let concurrency = opts.concurrency.max(1);
    let mut aggregate = LoadAggregate::new();
    let mut running = JoinSet::new();
    let mut launched = 0;
    loop {
        while launched < opts.calls && running.len() < concurrency && !hang_up.is_cancelled() {
            let mut cfg = cfg.clone();
            // Every call is a new call.
            cfg.call_sid = None;
            let script = script.clone();
            let hang_up = hang_up.clone();
            running.spawn(async move { place_call_until(&cfg, &script, &hang_up).await });
            launched += 1;
        }
        let joined = tokio::select! {
            joined = running.join_next() => joined,
            () = sleep_until(deadline), if !hang_up.is_cancelled() => {
                tracing::info!("load duration reached; hanging up running calls");
                hang_up.cancel();
                continue;
            }
        };
        match joined {
            Some(Ok(result)) => aggregate.add(&result),
            Some(Err(e)) => aggregate.add_failure(format!("call task failed: {e}")),
            None => break,
        }
    }
    aggregate.finish(launched, started.elapsed())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Collects call results into a [`LoadReport`].
#[derive(Debug)]
pub struct LoadAggregate {
    ok: usize,
    failed: usize,
    rejected: usize,
    greeting: Histogram<u64>,
    response: Histogram<u64>,
    mark_lateness: Histogram<u64>,
    frames_sent: u64,
    protocol_errors: u64,
    step_errors: u64,
    failures: Vec<String>,
}

impl Default for LoadAggregate {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadAggregate {
    /// An empty aggregate.
    pub fn new() -> Self {
        Self {
            ok: 0,
            failed: 0,
            rejected: 0,
            greeting: histogram(),
            response: histogram(),
            mark_lateness: histogram(),
            frames_sent: 0,
            protocol_errors: 0,
            step_errors: 0,
            failures: Vec::new(),
        }
    }

    /// Adds one call's result.
    pub fn add(&mut self, result: &Result<CallReport, CallError>) {
        let report = match result {
            Ok(report) => report,
            Err(e) => return self.add_failure(error_chain(e)),
        };
        if let Some(ms) = report.greeting_latency_ms {
            self.greeting.saturating_record(ms);
        }
        for &ms in &report.response_latencies_ms {
            self.response.saturating_record(ms);
        }
        for &ms in &report.mark_lateness_ms {
            self.mark_lateness.saturating_record(ms);
        }
        self.frames_sent += report.frames_sent;
        self.protocol_errors += report.protocol_errors.len() as u64;
        self.step_errors += report.step_errors.len() as u64;
        if report.ended_by == EndedBy::Rejected {
            self.rejected += 1;
        } else if report.is_clean() {
            self.ok += 1;
        } else {
            let reason = report
                .step_errors
                .first()
                .or(report.protocol_errors.first())
                .cloned()
                .unwrap_or_else(|| format!("ended by {:?}", report.ended_by));
            self.add_failure(reason);
        }
    }

    /// Counts a failed call.
    pub fn add_failure(&mut self, reason: String) {
        self.failed += 1;
        if self.failures.len() < MAX_FAILURE_SAMPLES && !self.failures.contains(&reason) {
            self.failures.push(reason);
        }
    }

    /// The report for `calls_started` calls over `elapsed`.
    pub fn finish(&self, calls_started: usize, elapsed: Duration) -> LoadReport {
        LoadReport {
            calls_started,
            ok: self.ok,
            failed: self.failed,
            rejected: self.rejected,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            greeting_latency_ms: percentiles(&self.greeting),
            response_latency_ms: percentiles(&self.response),
            mark_echo_lateness_ms: percentiles(&self.mark_lateness),
            frames_sent: self.frames_sent,
            protocol_errors: self.protocol_errors,
            step_errors: self.step_errors,
            failures: self.failures.clone(),
        }
    }
}

/// An error with its causes, on one line (a failure sample must say why, e.g. "connection
/// refused", which often sits a few sources down).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A histogram of milliseconds: exact below 2048 ms, within 0.1 % above, any size.
fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(greeting: u64, responses: &[u64], ended_by: EndedBy) -> CallReport {
        let mut r = CallReport::new("CA1".into());
        r.connected = ended_by != EndedBy::Rejected;
        r.ended_by = ended_by;
        r.greeting_latency_ms = (ended_by != EndedBy::Rejected).then_some(greeting);
        r.response_latencies_ms = responses.to_vec();
        r.mark_lateness_ms = vec![1, 2];
        r.frames_sent = 10;
        r
    }

    #[test]
    fn percentiles_and_outcomes_aggregate_over_calls() {
        let mut agg = LoadAggregate::new();
        // Greeting latencies 1..=100 ms over 100 clean calls; responses 10x that.
        for ms in 1..=100 {
            agg.add(&Ok(report(ms, &[ms * 10], EndedBy::Caller)));
        }
        agg.add(&Ok(report(0, &[], EndedBy::Rejected)));
        let mut broken = report(2000, &[], EndedBy::Error);
        broken.step_errors.push("listen: timed out".into());
        agg.add(&Ok(broken));
        let mut sloppy = report(2000, &[], EndedBy::Agent);
        sloppy.protocol_errors.push("31951: bad".into());
        agg.add(&Ok(sloppy));
        agg.add(&Err(CallError::WebhookStatus {
            status: 403,
            body: "forbidden".into(),
        }));
        agg.add(&Err(CallError::WebhookStatus {
            status: 403,
            body: "forbidden".into(),
        }));
        agg.add(&Err(CallError::Connect {
            url: "ws://gw/media".into(),
            source: Box::new(tokio_tungstenite::tungstenite::Error::Io(
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by test"),
            )),
        }));

        let r = agg.finish(106, Duration::from_secs(3));
        assert_eq!((r.ok, r.failed, r.rejected), (100, 5, 1));
        assert_eq!(r.calls_started, 106);
        assert_eq!(
            r.greeting_latency_ms,
            Percentiles {
                count: 102,
                p50: 51,
                p90: 92,
                p99: 2000,
                max: 2000
            }
        );
        let resp = r.response_latency_ms;
        assert_eq!((resp.count, resp.max), (100, 1000));
        assert!((500..=510).contains(&resp.p50), "{resp:?}");
        assert!((900..=910).contains(&resp.p90), "{resp:?}");
        assert!((990..=1000).contains(&resp.p99), "{resp:?}");
        assert_eq!(r.mark_echo_lateness_ms.max, 2);
        assert_eq!(r.frames_sent, 1030);
        assert_eq!((r.protocol_errors, r.step_errors), (1, 1));
        // Distinct messages only, with their causes.
        assert_eq!(r.failures.len(), 4, "{:?}", r.failures);
        assert!(
            r.failures[3].starts_with("media socket ws://gw/media could not be opened: ")
                && r.failures[3].ends_with("refused by test"),
            "{:?}",
            r.failures
        );
        assert!(!r.all_ok());
        assert!(r.to_string().contains("100 ok, 5 failed, 1 rejected"));
    }

    #[test]
    fn empty_runs_have_no_samples() {
        let r = LoadAggregate::new().finish(0, Duration::ZERO);
        assert_eq!(r.greeting_latency_ms, Percentiles::default());
        assert!(r.to_string().contains("no samples"));
        assert!(r.all_ok());
    }
}
