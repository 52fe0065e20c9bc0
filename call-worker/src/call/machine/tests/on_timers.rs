//! Timers: idle, maximum duration and stream start.

use super::*;

#[test]
fn idle_caller_is_prompted_once_then_the_call_ends() {
    let mut c = Call::new(agent_with(|a| {
        a.idle_timeout = Some(Duration::from_secs(10))
    }));
    assert!(
        c.m.next_deadline().unwrap() >= c.at(29_000),
        "only the start timer before start"
    );
    c.start(0);
    c.take();
    // Caller speech resets the timer.
    c.speech_started(5_000, "u1");
    c.speech_stopped(6_000, "u1");
    c.m.on_timer(c.at(10_000));
    assert!(response_creates(&c.take()).is_empty());
    assert_eq!(c.m.next_deadline(), Some(c.at(16_000)));
    c.m.on_timer(c.at(16_000));
    let creates = response_creates(&c.take());
    assert_eq!(creates.len(), 1);
    assert!(
        creates[0]
            .as_ref()
            .unwrap()
            .instructions
            .as_deref()
            .unwrap()
            .contains("\"Are you still there?\"")
    );
    c.created(16_100, "r1");
    c.done(16_200, "r1", "completed", json!([]));
    c.take();
    // The quiet period restarts when the prompt has been said (its response.done at 16.2 s).
    c.m.on_timer(c.m.next_deadline().unwrap());
    assert!(response_creates(&c.take()).is_empty());
    assert_eq!(c.m.next_deadline(), Some(c.at(26_200)));
    c.m.on_timer(c.at(26_200));
    let creates = response_creates(&c.take());
    assert_eq!(creates.len(), 1, "goodbye");
    assert!(
        creates[0]
            .as_ref()
            .unwrap()
            .instructions
            .as_deref()
            .unwrap()
            .starts_with("Say exactly: \"")
    );
    c.created(26_300, "r2");
    c.done(26_400, "r2", "completed", json!([]));
    let fx = c.take();
    assert!(matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "idle"));
    assert_eq!(ended(&fx).unwrap().reason, "idle");
}

#[test]
fn idle_timer_waits_while_a_lost_session_is_replaced() {
    let mut c = Call::new(agent_with(|a| {
        a.idle_timeout = Some(Duration::from_secs(10))
    }));
    c.start(0);
    c.take();
    // Two losses just before the caller has been quiet for 10 s: the second waits 250 ms.
    closed(&mut c, 9_800);
    c.m.resume_session(Vec::new());
    closed(&mut c, 9_900);
    c.take();
    assert!(c.m.reconnecting());
    c.m.on_timer(c.at(10_000));
    assert!(
        response_creates(&c.take()).is_empty(),
        "no prompt while there is no session"
    );
    c.m.on_timer(c.at(10_150));
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    assert!(
        response_creates(&c.take()).is_empty(),
        "nothing was queued for the new session"
    );
    assert_eq!(c.m.next_deadline(), Some(c.at(11_000)));
    c.m.on_timer(c.at(11_000));
    assert_eq!(response_creates(&c.take()).len(), 1, "the prompt, now");
}

#[test]
fn max_duration_says_goodbye_then_hangs_up() {
    let mut c = Call::new(agent_with(|a| a.max_call = Some(Duration::from_secs(60))));
    c.start(0);
    c.take();
    assert_eq!(c.m.next_deadline(), Some(c.at(60_000)));
    c.m.on_timer(c.at(60_000));
    assert_eq!(response_creates(&c.take()).len(), 1);
    c.say(60_100, "r1", "i1", 1);
    let m = marks(&c.take());
    c.echo(60_300, &m[0]);
    assert_eq!(ended(&c.take()).unwrap().reason, "max_duration");
}

#[test]
fn stream_that_never_starts_ends_the_call() {
    let mut c = Call::new(agent_with(|_| {}));
    c.take();
    assert_eq!(c.m.next_deadline(), Some(c.at(30_000)));
    c.m.on_timer(c.at(30_000));
    assert_eq!(ended(&c.take()).unwrap().reason, "stream_lost");
}

#[test]
fn shutdown_hangs_up_with_worker_shutdown() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    c.m.shutdown(c.at(100));
    let fx = c.take();
    assert!(
        matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "worker_shutdown")
    );
    assert_eq!(ended(&fx).unwrap().reason, "worker_shutdown");
    assert_eq!(c.m.next_deadline(), None);
}
