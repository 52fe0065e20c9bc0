//! What recording costs a gateway per call: CPU time and bytes per call-minute, with `--calls`
//! calls recorded at once.
//!
//! Each call is a recorder as the gateway runs it, off the media path: a task that takes one
//! minute (`--seconds`) of a call's events from a bounded queue (caller frames every 20 ms, agent
//! audio in 100 ms deltas with a mark after each and its echo when it has played, a barge-in
//! `clear` every 10 s), then encodes the WAV on a blocking thread and writes it to a directory
//! recording store. The events carry stream times, so a minute of call is recorded as fast as
//! the CPU allows; the process's CPU time (`utime + stime`) over the run, divided by the
//! call-minutes recorded, is the cost.
//!
//! ```sh
//! cargo run --release -p gateway --example recording-cost -- --calls 200 --seconds 60
//! ```
//!
//! `--in-memory` records as the gateway did before recordings were written out as they
//! settle (the whole tape in memory), for comparison; the peak resident memory is printed.

use std::time::Duration;

use bytes::Bytes;
use gateway::recorder::{Tap, Tape};
use switchboard_service::recordings::{RecordingStore, wav};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Process CPU time (user + system) so far, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One call's events, in the order the stream actor would hand them over.
async fn play_call(tx: mpsc::Sender<Tap>, t0: Instant, seconds: u64) {
    let caller = Bytes::from(vec![0x55u8; 160]);
    let agent = Bytes::from(vec![0x2au8; 800]);
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut mark = 0u64;
    for frame in 0..seconds * 50 {
        let now = frame * 20;
        let _ = tx
            .send(Tap::Caller {
                at: ms(now + 20),
                timestamp_ms: now as u32,
                audio: caller.clone(),
            })
            .await;
        if frame % 5 == 0 {
            let _ = tx
                .send(Tap::Agent {
                    at: ms(now),
                    audio: agent.clone(),
                })
                .await;
            mark += 1;
            let _ = tx
                .send(Tap::Mark {
                    at: ms(now),
                    name: format!("m{mark}"),
                })
                .await;
            let _ = tx
                .send(Tap::Echo {
                    at: ms(now + 110),
                    name: format!("m{mark}"),
                })
                .await;
        }
        if now % 10_000 == 9_000 {
            let _ = tx.send(Tap::Clear { at: ms(now) }).await;
        }
    }
    let _ = tx
        .send(Tap::End {
            at: ms(seconds * 1000),
        })
        .await;
}

/// The recorder side, as the gateway runs it ([`gateway::recorder::record`]: what settles goes
/// to a temporary file, which is uploaded when the stream ends), or with `--in-memory` as it ran
/// before: the whole tape in memory, encoded into a WAV in memory when the stream ends.
async fn record(
    mut rx: mpsc::Receiver<Tap>,
    t0: Instant,
    store: RecordingStore,
    sid: String,
    in_memory: bool,
) -> u64 {
    let location = RecordingStore::location(&sid, 1);
    if !in_memory {
        let (_, bytes) = gateway::recorder::record(&mut rx, Tape::new(t0), &store, &location)
            .await
            .expect("recording");
        return bytes;
    }
    let mut tape = Tape::new(t0);
    while let Some(tap) = rx.recv().await {
        let end = matches!(tap, Tap::End { .. });
        tape.apply(tap);
        if end {
            break;
        }
    }
    let (caller, agent) = tape.finish();
    let bytes = tokio::task::spawn_blocking(move || wav::encode(&caller, &agent))
        .await
        .expect("encoding");
    let size = bytes.len() as u64;
    store
        .put(&location, bytes.into())
        .await
        .expect("writing the recording");
    size
}

/// The process's peak resident memory (`VmHWM` of `/proc/self/status`), in kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let calls = arg("--calls", 200);
    let seconds = arg("--seconds", 60);
    let in_memory = std::env::args().any(|a| a == "--in-memory");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RecordingStore::open(dir.path().to_str().expect("utf-8")).expect("store");
    let before = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for call in 0..calls {
        let (tx, rx) = mpsc::channel(gateway::recorder::TAP_CAPACITY);
        let t0 = Instant::now();
        tokio::spawn(play_call(tx, t0, seconds));
        tasks.push(tokio::spawn(record(
            rx,
            t0,
            store.clone(),
            format!("CA{call:032x}"),
            in_memory,
        )));
    }
    let mut bytes = 0u64;
    for task in tasks {
        bytes += task.await.expect("recorder");
    }
    let cpu = cpu_time().saturating_sub(before);
    let call_minutes = (calls * seconds) as f64 / 60.0;
    println!(
        "{calls} calls x {seconds} s recorded at once{} in {:.2} s wall; CPU {:.2} s = {:.1} ms per call-minute; {:.0} bytes per call-minute; peak RSS {} kB",
        if in_memory { " (in memory)" } else { "" },
        started.elapsed().as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / call_minutes,
        bytes as f64 / call_minutes,
        peak_rss_kb(),
    );
}
