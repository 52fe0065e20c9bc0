//! CPU time of a process, from `/proc/<pid>/stat`, and what it costs per call-minute.
//!
//! The media path's efficiency figure is CPU-seconds per call-minute: the `utime + stime` a
//! process used over a window, divided by the calls in progress times the window's minutes.
//! Unlike a share of a core it does not move with the number of calls, so runs at different
//! loads and of different builds compare directly, and unlike latency it hardly moves with what
//! else runs on the machine (other processes take CPU *time* away, they do not add to ours).

use std::fmt;
use std::time::Duration;

/// `/proc/<pid>/stat` counts in clock ticks of `USER_HZ`, which Linux fixes at 100 for user
/// space on every architecture it exports to (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SECOND: f64 = 100.0;

/// A reading of a process's CPU time and context switches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    /// `utime + stime`, in seconds.
    pub cpu_seconds: f64,
    /// `stime` alone: time in the kernel on the process's behalf (syscalls, and the network
    /// stack's work for its sends), the part a relay cannot shed without fewer syscalls.
    pub kernel_seconds: f64,
    /// Voluntary context switches of all its threads (a thread waiting: a wake-up later).
    pub voluntary_switches: u64,
    /// Involuntary context switches of all its threads (preempted).
    pub involuntary_switches: u64,
}

impl CpuSample {
    /// Reads process `pid` now; `None` if it is gone or `/proc` is unreadable.
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (user, kernel) = cpu_seconds_of_stat(&stat)?;
        let mut sample = Self {
            cpu_seconds: user + kernel,
            kernel_seconds: kernel,
            ..Self::default()
        };
        // Threads that have exited are no longer listed; a service's threads live as long as
        // it does (the runtime's workers), so the sum is the process's within a window.
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            let (voluntary, involuntary) = switches_of_status(&status);
            sample.voluntary_switches += voluntary;
            sample.involuntary_switches += involuntary;
        }
        Some(sample)
    }

    /// What was used from `earlier` to this sample.
    pub fn since(&self, earlier: &Self) -> CpuSample {
        CpuSample {
            cpu_seconds: (self.cpu_seconds - earlier.cpu_seconds).max(0.0),
            kernel_seconds: (self.kernel_seconds - earlier.kernel_seconds).max(0.0),
            voluntary_switches: self
                .voluntary_switches
                .saturating_sub(earlier.voluntary_switches),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(earlier.involuntary_switches),
        }
    }

    /// Context switches of both kinds.
    pub fn switches(&self) -> u64 {
        self.voluntary_switches + self.involuntary_switches
    }
}

/// `(utime, stime)` in seconds from the text of `/proc/<pid>/stat`.
fn cpu_seconds_of_stat(stat: &str) -> Option<(f64, f64)> {
    // The command name is in parentheses and may hold spaces and parentheses: fields are
    // counted from its last `)`. utime and stime are fields 14 and 15, 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((
        utime as f64 / TICKS_PER_SECOND,
        stime as f64 / TICKS_PER_SECOND,
    ))
}

/// (voluntary, involuntary) context switches from the text of `/proc/<pid>/task/<tid>/status`.
fn switches_of_status(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// CPU used by one process over a window in which `calls` calls were in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuPerCall {
    /// The process, as the report names it.
    pub name: String,
    /// What it used over the window.
    pub used: CpuSample,
    /// Call-minutes in the window: calls in progress times the window's minutes.
    pub call_minutes: f64,
    /// The window.
    pub window: Duration,
}

impl CpuPerCall {
    /// CPU-seconds per call-minute (0 when no call was in progress).
    pub fn per_call_minute(&self) -> f64 {
        if self.call_minutes > 0.0 {
            self.used.cpu_seconds / self.call_minutes
        } else {
            0.0
        }
    }

    /// The share of one core used over the window, in percent.
    pub fn core_percent(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.used.cpu_seconds / secs * 100.0
        } else {
            0.0
        }
    }
}

impl fmt::Display for CpuPerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:.4} CPU-s per call-minute ({:.2} CPU-s over {:.1} s = {:.1} % of a core, \
             {:.1} call-minutes; {} context switches)",
            self.name,
            self.per_call_minute(),
            self.used.cpu_seconds,
            self.window.as_secs_f64(),
            self.core_percent(),
            self.call_minutes,
            self.used.switches(),
        )
    }
}

/// The CPU readings of a few processes at the start of a measured window.
#[derive(Debug)]
pub struct CpuWindow {
    started: tokio::time::Instant,
    before: Vec<(String, u32, Option<CpuSample>)>,
}

impl CpuWindow {
    /// Opens a window over `processes` (name, pid).
    pub fn start(processes: &[(&str, u32)]) -> Self {
        Self {
            started: tokio::time::Instant::now(),
            before: processes
                .iter()
                .map(|(name, pid)| ((*name).to_owned(), *pid, CpuSample::read(*pid)))
                .collect(),
        }
    }

    /// Closes the window, in which `calls` calls were in progress throughout: what each process
    /// used per call-minute (a process that could not be read is left out).
    pub fn finish(self, calls: usize) -> Vec<CpuPerCall> {
        let window = self.started.elapsed();
        self.before
            .into_iter()
            .filter_map(|(name, pid, before)| {
                let used = CpuSample::read(pid)?.since(&before?);
                Some(CpuPerCall {
                    name,
                    used,
                    call_minutes: call_minutes(calls, window),
                    window,
                })
            })
            .collect()
    }
}

/// Prints one line per process and, for more than one, their sum per call-minute; `hint` says
/// how to get a reading when there is none.
pub fn print_cpu(figures: &[CpuPerCall], hint: &str) {
    if figures.is_empty() {
        println!("cpu: not measured ({hint})");
        return;
    }
    for figure in figures {
        println!("cpu {figure}");
    }
    if figures.len() > 1 {
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        let total: f64 = figures.iter().map(CpuPerCall::per_call_minute).sum();
        println!(
            "cpu {}: {total:.4} CPU-s per call-minute together",
            names.join(" + ")
        );
    }
}

/// Prints what each process used over a window of `window_secs` in which `call_minutes` of call
/// and `frames` audio frames went by: CPU-seconds, share of a core, CPU-seconds per call-minute,
/// µs per frame, the kernel's share and context switches per frame; then their sum, labelled
/// `total`. Returns the sum's CPU-seconds per call-minute.
pub fn print_frame_table(
    used: &[(&str, CpuSample)],
    window_secs: f64,
    call_minutes: f64,
    frames: f64,
    total: &str,
) -> f64 {
    let frames = frames.max(1.0);
    let share = |part: f64, whole: f64| part / whole.max(f64::MIN_POSITIVE) * 100.0;
    println!(
        "process       cpu-s  %core  cpu-s/call-min  us/frame  %kernel  ctx-sw/frame (vol+invol)"
    );
    let (mut sum, mut kernel) = (0.0, 0.0);
    for (name, used) in used {
        let cpu = used.cpu_seconds;
        sum += cpu;
        kernel += used.kernel_seconds;
        println!(
            "{name:<12} {cpu:>6.2} {:>6.1} {:>15.4} {:>9.1} {:>8.0} {:>8.2} ({}+{})",
            share(cpu, window_secs),
            cpu / call_minutes,
            cpu * 1e6 / frames,
            share(used.kernel_seconds, cpu),
            used.switches() as f64 / frames,
            used.voluntary_switches,
            used.involuntary_switches,
        );
    }
    println!(
        "{total:<12} {sum:>6.2} {:>6.1} {:>15.4} {:>9.1} {:>8.0}",
        share(sum, window_secs),
        sum / call_minutes,
        sum * 1e6 / frames,
        share(kernel, sum),
    );
    sum / call_minutes
}

/// Call-minutes of `calls` calls in progress throughout `window`.
pub fn call_minutes(calls: usize, window: Duration) -> f64 {
    calls as f64 * window.as_secs_f64() / 60.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_command_name() {
        // A command name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (call (worker) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 567 0 0 20 0 4 0 100 0 0";
        assert_eq!(cpu_seconds_of_stat(stat), Some((12.34, 5.67)));
        assert_eq!(cpu_seconds_of_stat("garbage"), None);
    }

    #[test]
    fn switches_are_read_from_a_thread_status() {
        let status =
            "Name:\tgateway\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches_of_status(status), (120, 7));
        assert_eq!(switches_of_status("Name:\tx\n"), (0, 0));
    }

    #[test]
    fn this_process_uses_cpu_and_the_window_divides_it_per_call_minute() {
        let pid = std::process::id();
        let before = CpuSample::read(pid).expect("own /proc entry");
        // Spin until the tick counter moves (at most a few ticks of 10 ms).
        let mut after = before;
        let mut x = 0u64;
        while after.cpu_seconds <= before.cpu_seconds {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            after = CpuSample::read(pid).expect("own /proc entry");
        }
        assert_ne!(x, 1);
        let used = after.since(&before);
        assert!(used.cpu_seconds >= 0.01, "{used:?}");
        let per = CpuPerCall {
            name: "bench".into(),
            used: CpuSample {
                cpu_seconds: 3.0,
                ..used
            },
            call_minutes: call_minutes(100, Duration::from_secs(30)),
            window: Duration::from_secs(30),
        };
        assert_eq!(per.call_minutes, 50.0);
        assert!((per.per_call_minute() - 0.06).abs() < 1e-9);
        assert!((per.core_percent() - 10.0).abs() < 1e-9);
        assert!(
            per.to_string()
                .starts_with("bench: 0.0600 CPU-s per call-minute")
        );
        assert_eq!(CpuSample::read(u32::MAX), None);
    }

    #[test]
    fn the_frame_table_sums_the_processes_per_call_minute() {
        let used = |cpu: f64, kernel: f64| CpuSample {
            cpu_seconds: cpu,
            kernel_seconds: kernel,
            voluntary_switches: 10,
            involuntary_switches: 5,
        };
        let rows = [("gateway", used(3.0, 1.0)), ("nats-server", used(1.5, 1.5))];
        let per = print_frame_table(&rows, 30.0, 50.0, 1_000.0, "media path");
        assert!((per - 0.09).abs() < 1e-9, "{per}");
        assert_eq!(print_frame_table(&[], 30.0, 50.0, 0.0, "none"), 0.0);
    }

    #[tokio::test]
    async fn a_window_reports_the_processes_it_can_read() {
        let window = CpuWindow::start(&[("self", std::process::id()), ("gone", u32::MAX)]);
        let figures = window.finish(10);
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].name, "self");
        assert!(figures[0].call_minutes >= 0.0);
    }
}
