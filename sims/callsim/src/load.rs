//! Many calls at once: callsim as a load generator, with latency percentiles.
//!
//! A run is always bounded: a fixed number of calls, at most `concurrency` at a time, optionally
//! cut off after a duration (running calls then hang up). Every call is its own task placing an
//! ordinary [`place_call_until`] call against the one gateway in the configuration.
//!
//! Given the process ids of the services under load ([`LoadOptions::cpu_pids`]), the report also
//! gives each one's CPU-seconds per call-minute: its `utime + stime` over the run divided by the
//! minutes of the calls' streams (set-up included, so a run should be long against a call's
//! start).

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use switchboard_bench::cpu::CpuSample;
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
    /// Processes whose CPU time the report gives per call-minute, by name (e.g. `gateway`).
    pub cpu_pids: Vec<(String, u32)>,
    /// Spread the starts of the first `concurrency` calls evenly over this long (call `i`
    /// starts no earlier than `i / concurrency` of it), as real traffic does, instead of all at
    /// once.
    pub ramp: Option<Duration>,
}

/// What one process under load cost over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessCpu {
    pub name: String,
    /// `utime + stime` over the run.
    pub cpu_seconds: f64,
    /// `cpu_seconds` divided by the run's call-minutes.
    pub cpu_seconds_per_call_minute: f64,
    /// Context switches of its threads over the run (voluntary and involuntary).
    pub context_switches: u64,
}

impl fmt::Display for ProcessCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:.4} CPU-s per call-minute ({:.2} CPU-s, {} context switches)",
            self.name, self.cpu_seconds_per_call_minute, self.cpu_seconds, self.context_switches
        )
    }
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
    /// Minutes of the calls' streams (start to end), summed over the calls.
    pub call_minutes: f64,
    /// CPU per call-minute of each process of [`LoadOptions::cpu_pids`] (empty without).
    pub cpu: Vec<ProcessCpu>,
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
        if !self.cpu.is_empty() {
            writeln!(f, "call-minutes: {:.1}", self.call_minutes)?;
            for process in &self.cpu {
                writeln!(f, "cpu {process}")?;
            }
            let total: f64 = self.cpu.iter().map(|p| p.cpu_seconds_per_call_minute).sum();
            writeln!(f, "cpu of these together: {total:.4} CPU-s per call-minute")?;
        }
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
        cpu_pids: Vec::new(),
        ramp: None,
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
    let cpu_before: Vec<Option<CpuSample>> = opts
        .cpu_pids
        .iter()
        .map(|(_, pid)| CpuSample::read(*pid))
        .collect();
    let deadline = opts.duration.map(|d| started + d);
    let hang_up = cancel.child_token();
    let concurrency = opts.concurrency.max(1);
    let mut aggregate = LoadAggregate::new();
    let mut running = JoinSet::new();
    let mut launched = 0;
    // When the next call may start, while the ramp lasts.
    let start_at = |launched: usize| {
        opts.ramp
            .filter(|_| launched < concurrency)
            .map(|ramp| started + ramp.mul_f64(launched as f64 / concurrency as f64))
    };
    loop {
        while launched < opts.calls
            && running.len() < concurrency
            && !hang_up.is_cancelled()
            && start_at(launched).is_none_or(|at| at <= Instant::now())
        {
            let mut cfg = cfg.clone();
            // Every call is a new call.
            cfg.call_sid = None;
            let script = script.clone();
            let hang_up = hang_up.clone();
            running.spawn(async move { place_call_until(&cfg, &script, &hang_up).await });
            launched += 1;
        }
        let ramping =
            start_at(launched).filter(|_| launched < opts.calls && !hang_up.is_cancelled());
        let joined = tokio::select! {
            joined = running.join_next(), if !running.is_empty() || ramping.is_none() => joined,
            () = sleep_until(ramping), if ramping.is_some() => continue,
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
    let mut report = aggregate.finish(launched, started.elapsed());
    for ((name, pid), before) in opts.cpu_pids.iter().zip(cpu_before) {
        match (before, CpuSample::read(*pid)) {
            (Some(before), Some(after)) => {
                let used = after.since(&before);
                report.cpu.push(ProcessCpu {
                    name: name.clone(),
                    cpu_seconds: used.cpu_seconds,
                    cpu_seconds_per_call_minute: per_call_minute(
                        used.cpu_seconds,
                        report.call_minutes,
                    ),
                    context_switches: used.switches(),
                });
            }
            _ => tracing::warn!(name, pid, "the process's CPU time could not be read"),
        }
    }
    report
}

/// `cpu_seconds / call_minutes`, 0 without calls.
fn per_call_minute(cpu_seconds: f64, call_minutes: f64) -> f64 {
    if call_minutes > 0.0 {
        cpu_seconds / call_minutes
    } else {
        0.0
    }
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
    stream_ms: u64,
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
            stream_ms: 0,
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
        self.stream_ms += report.duration_ms;
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
            call_minutes: self.stream_ms as f64 / 60_000.0,
            cpu: Vec::new(),
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
        r.duration_ms = 6_000;
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
        // 103 calls with a stream of 6 s each.
        assert!((r.call_minutes - 10.3).abs() < 1e-9, "{}", r.call_minutes);
        assert!(r.cpu.is_empty());
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

    #[tokio::test]
    async fn the_processes_named_get_their_cpu_and_unreadable_ones_are_left_out() {
        let opts = LoadOptions {
            calls: 0,
            concurrency: 1,
            duration: None,
            cpu_pids: vec![
                ("callsim".into(), std::process::id()),
                ("gone".into(), u32::MAX),
            ],
            ramp: None,
        };
        let cfg = CallConfig::new("http://127.0.0.1:9", "token");
        let r = run_load_with(
            &cfg,
            &CallerScript::demo(),
            &opts,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(r.cpu.len(), 1, "{:?}", r.cpu);
        assert_eq!(r.cpu[0].name, "callsim");
        // No call ran: nothing to divide by.
        assert_eq!(r.cpu[0].cpu_seconds_per_call_minute, 0.0);
        assert!(
            r.to_string()
                .contains("cpu callsim: 0.0000 CPU-s per call-minute")
        );
        assert_eq!(per_call_minute(3.0, 50.0), 0.06);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ramp_spreads_the_first_calls_starts() {
        // Nothing listens: every call fails at once, so the run lasts as long as the ramp.
        let cfg = CallConfig::new("http://127.0.0.1:9", "token");
        let mut opts = LoadOptions {
            calls: 4,
            concurrency: 4,
            duration: None,
            cpu_pids: Vec::new(),
            ramp: Some(Duration::from_secs(8)),
        };
        let cancel = CancellationToken::new();
        let r = run_load_with(&cfg, &CallerScript::demo(), &opts, &cancel).await;
        assert_eq!((r.calls_started, r.failed), (4, 4), "{r}");
        // The fourth call starts 3/4 of the ramp in.
        assert!((6_000..8_000).contains(&r.elapsed_ms), "{}", r.elapsed_ms);

        opts.ramp = None;
        let r = run_load_with(&cfg, &CallerScript::demo(), &opts, &cancel).await;
        assert_eq!((r.calls_started, r.failed), (4, 4), "{r}");
        assert!(r.elapsed_ms < 6_000, "{}", r.elapsed_ms);
    }

    #[test]
    fn empty_runs_have_no_samples() {
        let r = LoadAggregate::new().finish(0, Duration::ZERO);
        assert_eq!(r.greeting_latency_ms, Percentiles::default());
        assert!(r.to_string().contains("no samples"));
        assert!(r.all_ok());
    }
}
