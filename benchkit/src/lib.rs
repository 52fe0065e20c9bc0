//! What the benchmark binaries (`gateway-bench`, `worker-bench`) share.
//!
//! Both play the two peers of the service under test in one process, so a latency is measured on
//! one clock: the sender stamps the moment of sending into the audio itself ([`stamp`]) and the
//! receiver reads it back ([`since_stamp`]). Audio passes through our services untouched
//! (mu-law passthrough), so the stamp survives every hop. Memory is the service's resident set
//! from `/proc` ([`rss_kib`]); CPU is its `utime + stime` per call-minute ([`cpu`]).
#![forbid(unsafe_code)]

pub mod cpu;

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// A latency histogram in microseconds, from 1 µs to 60 s at 3 significant figures.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Stamps nanoseconds since `epoch` into the first 8 bytes of `payload` (which must hold 8).
pub fn stamp(payload: &mut [u8], epoch: Instant) {
    let ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&ns.to_be_bytes());
    }
}

/// Microseconds since the stamp in `payload` was made (`None` without a stamp or for a stamp
/// from the future, i.e. not one of ours).
pub fn since_stamp(payload: &[u8], epoch: Instant) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let sent = Duration::from_nanos(u64::from_be_bytes(bytes));
    let now = epoch.elapsed();
    Some(u64::try_from(now.checked_sub(sent)?.as_micros()).unwrap_or(u64::MAX))
}

/// Resident memory of process `pid` in KiB (`VmRSS`), if it can be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Prints one histogram line: count, p50, p90, p99 and max in milliseconds.
pub fn print(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:>4}: n={} p50={:.3}ms p90={:.3}ms p99={:.3}ms max={:.3}ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
}

/// Prints the memory line: resident memory of `service` before the load and under it, and the
/// difference per `unit` (stream, call) for `n` of them; `hint` says how to get a reading when
/// there is none.
pub fn print_rss(
    service: &str,
    unit: &str,
    n: usize,
    idle_and_loaded: Option<(u64, u64)>,
    hint: &str,
) {
    match idle_and_loaded {
        Some((idle, loaded)) => println!(
            "{service} RSS: {idle} KiB idle, {loaded} KiB with {n} {unit}s, {:.1} KiB per {unit}",
            loaded.saturating_sub(idle) as f64 / n.max(1) as f64
        ),
        None => println!("{service} RSS: not measured ({hint})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stamp_reads_back_as_the_time_since_it_was_made() {
        let epoch = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let mut payload = [0xffu8; 160];
        stamp(&mut payload, epoch);
        tokio::time::advance(Duration::from_micros(1250)).await;
        assert_eq!(since_stamp(&payload, epoch), Some(1250));
        assert_eq!(
            since_stamp(&payload[..7], epoch),
            None,
            "too short for a stamp"
        );
        let mut future = [0u8; 8];
        future.copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(since_stamp(&future, epoch), None, "not one of ours");
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
