//! The simulated caller: runs the script one 20 ms tick at a time and says what goes out in each
//! tick (speech or silence, a key press, the end of the call).
//!
//! It only reads the playback model (what is playing now), never the socket, so its decisions are
//! plain functions of stream time and can be tested without a network or a clock.

use std::collections::VecDeque;
use std::time::Duration;

use switchboard_twilio::FRAME_BYTES;

use crate::playback::Playback;
use crate::script::{BARGE_IN_MAX_WAIT_MS, CallerScript, EXPECT_DIGITS_MAX_WAIT_MS, Step};
use crate::voice::{self, Voice};

/// Length of one media frame.
pub const FRAME: Duration = Duration::from_millis(20);

/// How the caller leaves the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// Send `stop`, then close the socket (a `hangup = true` step or the script ran out).
    Hangup,
    /// Drop the connection without `stop` (`hangup = false`).
    Drop,
    /// A step failed; hang up and report the reason.
    Failed(String),
}

/// What goes out in one tick.
#[derive(Debug)]
pub struct Tick {
    /// The 20 ms media frame (speech or silence).
    pub frame: [u8; FRAME_BYTES],
    /// Whether `frame` is speech.
    pub speaking: bool,
    /// A key pressed in this tick.
    pub dtmf: Option<char>,
    /// A `say` (or the speech of a `barge_in`) ended with this frame.
    pub said_end: bool,
    /// The call ends in this tick (after `frame` is sent).
    pub leave: Option<Leave>,
}

/// The step in progress.
#[derive(Debug)]
enum Active {
    Listen {
        started: Duration,
        max: Duration,
        silence: Duration,
    },
    Say {
        frames_left: u64,
    },
    BargeWait {
        started: Duration,
        after: Duration,
        say_ms: u64,
    },
    Dtmf {
        digits: VecDeque<char>,
    },
    Pause {
        until: Duration,
    },
    ExpectDigits {
        started: Duration,
        expected: String,
    },
}

/// The caller's state.
#[derive(Debug)]
pub struct Caller {
    steps: VecDeque<Step>,
    active: Option<Active>,
    voice: Voice,
    /// Tones the line played to this callee (`<Play digits>`) not yet matched by a step.
    tones_heard: String,
}

impl Caller {
    /// A caller that will follow `script`.
    pub fn new(script: &CallerScript) -> Self {
        Self {
            steps: script.steps.iter().cloned().collect(),
            active: None,
            voice: Voice::new(),
            tones_heard: String::new(),
        }
    }

    /// The line played `tones` to this callee (an `expect_digits` step checks them).
    pub fn tones_played(&mut self, tones: &str) {
        self.tones_heard.push_str(tones);
    }

    /// Decides the tick ending at stream time `now`.
    pub fn tick(&mut self, now: Duration, playback: &Playback) -> Tick {
        let mut out = Tick {
            frame: voice::silence(),
            speaking: false,
            dtmf: None,
            said_end: false,
            leave: None,
        };
        // Every pass either consumes this tick or finishes a step, so this ends.
        loop {
            let Some(active) = self.active.as_mut() else {
                match self.steps.pop_front() {
                    None => {
                        out.leave = Some(Leave::Hangup);
                        return out;
                    }
                    Some(Step::Hangup(true)) => {
                        out.leave = Some(Leave::Hangup);
                        return out;
                    }
                    Some(Step::Hangup(false)) => {
                        out.leave = Some(Leave::Drop);
                        return out;
                    }
                    Some(step) => {
                        self.active = Some(start(step, now));
                        continue;
                    }
                }
            };
            match active {
                Active::Listen {
                    started,
                    max,
                    silence,
                } => {
                    let heard_after_start = playback.played_until(now) > *started;
                    if heard_after_start
                        && !playback.is_playing(now)
                        && now - playback.played_until(now) >= *silence
                    {
                        self.active = None;
                        continue;
                    }
                    if now - *started >= *max {
                        out.leave = Some(Leave::Failed(format!(
                            "listen: no assistant audio followed by {} ms of silence within {} ms",
                            silence.as_millis(),
                            max.as_millis()
                        )));
                        return out;
                    }
                    return out;
                }
                Active::Pause { until } => {
                    if now >= *until {
                        self.active = None;
                        continue;
                    }
                    return out;
                }
                Active::BargeWait {
                    started,
                    after,
                    say_ms,
                } => {
                    if playback.playing_for(now) >= *after {
                        self.active = Some(Active::Say {
                            frames_left: frames_for(*say_ms),
                        });
                        continue;
                    }
                    if now - *started >= Duration::from_millis(BARGE_IN_MAX_WAIT_MS) {
                        out.leave = Some(Leave::Failed(format!(
                            "barge_in: assistant audio never played for {} ms within {} ms",
                            after.as_millis(),
                            BARGE_IN_MAX_WAIT_MS
                        )));
                    }
                    return out;
                }
                Active::Say { frames_left } => {
                    out.frame = self.voice.frame();
                    out.speaking = true;
                    *frames_left = frames_left.saturating_sub(1);
                    if *frames_left == 0 {
                        out.said_end = true;
                        self.active = None;
                    }
                    return out;
                }
                Active::ExpectDigits { started, expected } => {
                    if !self.tones_heard.is_empty() {
                        let heard = std::mem::take(&mut self.tones_heard);
                        if heard != *expected {
                            out.leave = Some(Leave::Failed(format!(
                                "expect_digits: heard {heard:?}, expected {expected:?}"
                            )));
                            return out;
                        }
                        self.active = None;
                        continue;
                    }
                    if now - *started >= Duration::from_millis(EXPECT_DIGITS_MAX_WAIT_MS) {
                        out.leave = Some(Leave::Failed(format!(
                            "expect_digits: no keys within {EXPECT_DIGITS_MAX_WAIT_MS} ms"
                        )));
                    }
                    return out;
                }
                Active::Dtmf { digits } => {
                    out.dtmf = digits.pop_front();
                    if digits.is_empty() {
                        self.active = None;
                    }
                    return out;
                }
            }
        }
    }
}

/// Sets up a step that starts at `now`.
fn start(step: Step, now: Duration) -> Active {
    match step {
        Step::Listen { max_ms, silence_ms } => Active::Listen {
            started: now,
            max: Duration::from_millis(max_ms),
            silence: Duration::from_millis(silence_ms),
        },
        Step::SayMs(ms) => Active::Say {
            frames_left: frames_for(ms),
        },
        Step::BargeIn { after_ms, say_ms } => Active::BargeWait {
            started: now,
            after: Duration::from_millis(after_ms),
            say_ms,
        },
        Step::Dtmf(digits) => Active::Dtmf {
            digits: digits.chars().collect(),
        },
        Step::ExpectDigits(expected) => Active::ExpectDigits {
            started: now,
            expected,
        },
        Step::PauseMs(ms) => Active::Pause {
            until: now + Duration::from_millis(ms),
        },
        // Hang-ups never become active; `tick` ends the call on them.
        Step::Hangup(_) => Active::Pause { until: now },
    }
}

/// 20 ms frames needed to speak `ms` (at least one).
fn frames_for(ms: u64) -> u64 {
    ms.div_ceil(20).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs ticks from 20 ms on until the caller leaves; returns (time, tick) pairs.
    fn run(caller: &mut Caller, playback: &mut Playback, until: u64) -> Vec<(u64, Tick)> {
        let mut out = Vec::new();
        let mut t = 20;
        while t <= until {
            let tick = caller.tick(ms(t), playback);
            let leave = tick.leave.is_some();
            out.push((t, tick));
            if leave {
                break;
            }
            t += 20;
        }
        out
    }

    #[test]
    fn expect_digits_waits_for_the_keys_and_fails_on_others_or_none() {
        let script = CallerScript {
            steps: vec![Step::ExpectDigits("12#".into()), Step::Hangup(true)],
        };
        let pb = Playback::new();
        let mut caller = Caller::new(&script);
        assert!(caller.tick(ms(20), &pb).leave.is_none());
        assert!(caller.tick(ms(1000), &pb).leave.is_none(), "still waiting");
        caller.tones_played("12#");
        assert_eq!(caller.tick(ms(1020), &pb).leave, Some(Leave::Hangup));

        let mut caller = Caller::new(&script);
        caller.tones_played("13#");
        let Some(Leave::Failed(why)) = caller.tick(ms(20), &pb).leave else {
            panic!("other keys passed");
        };
        assert!(why.contains("\"13#\""), "{why}");

        let mut caller = Caller::new(&script);
        assert!(caller.tick(ms(20), &pb).leave.is_none());
        let late = ms(20 + EXPECT_DIGITS_MAX_WAIT_MS);
        assert!(matches!(
            caller.tick(late, &pb).leave,
            Some(Leave::Failed(_))
        ));
    }

    #[test]
    fn listen_waits_for_audio_then_silence_and_say_speaks_for_its_length() {
        let script = CallerScript {
            steps: vec![
                Step::Listen {
                    max_ms: 5000,
                    silence_ms: 300,
                },
                Step::SayMs(100),
                Step::Dtmf("12".into()),
                Step::Hangup(true),
            ],
        };
        let mut caller = Caller::new(&script);
        let mut pb = Playback::new();
        pb.push_audio(ms(200), 4000); // plays 200..700
        let ticks = run(&mut caller, &mut pb, 5000);
        let first_speech = ticks.iter().find(|(_, t)| t.speaking).map(|(at, _)| *at);
        // Silence of 300 ms after 700 ms is reached at 1000 ms; speaking starts in that tick.
        assert_eq!(first_speech, Some(1000));
        let spoken = ticks.iter().filter(|(_, t)| t.speaking).count();
        assert_eq!(spoken, 5);
        let said_end: Vec<u64> = ticks
            .iter()
            .filter(|(_, t)| t.said_end)
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(said_end, vec![1080]);
        let digits: Vec<(u64, char)> = ticks
            .iter()
            .filter_map(|(at, t)| t.dtmf.map(|d| (*at, d)))
            .collect();
        assert_eq!(digits, vec![(1100, '1'), (1120, '2')]);
        let (at, last) = ticks.last().expect("ticks");
        assert_eq!((*at, last.leave.clone()), (1140, Some(Leave::Hangup)));
    }

    #[test]
    fn listen_times_out_without_audio() {
        let script = CallerScript {
            steps: vec![Step::Listen {
                max_ms: 200,
                silence_ms: 100,
            }],
        };
        let mut caller = Caller::new(&script);
        let mut pb = Playback::new();
        let ticks = run(&mut caller, &mut pb, 1000);
        let (at, last) = ticks.last().expect("ticks");
        assert_eq!(*at, 220);
        assert!(matches!(&last.leave, Some(Leave::Failed(m)) if m.contains("listen")));
    }

    #[test]
    fn barge_in_speaks_once_audio_has_played_long_enough() {
        let script = CallerScript {
            steps: vec![Step::BargeIn {
                after_ms: 300,
                say_ms: 40,
            }],
        };
        let mut caller = Caller::new(&script);
        let mut pb = Playback::new();
        pb.push_audio(ms(110), 8000); // plays 110..1110
        let ticks = run(&mut caller, &mut pb, 2000);
        let speech: Vec<u64> = ticks
            .iter()
            .filter(|(_, t)| t.speaking)
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(speech, vec![420, 440]);
        assert_eq!(ticks.last().map(|(at, _)| *at), Some(460));
    }
}
