//! The filler line while a tool is slow.

use super::*;

#[test]
fn a_slow_tool_gets_one_filler_line_and_the_round_waits_for_it() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    args_done(&mut c, 20, "r1", "c1", "lookup_customer", "{}");
    c.done(
        30,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.take();
    assert_eq!(
        c.m.next_deadline(),
        Some(c.at(1520)),
        "1.5 s after the dispatch"
    );
    c.m.on_timer(c.at(1520));
    let fx = c.take();
    assert_eq!(filler_creates(&fx), 1);
    assert_eq!(response_creates(&fx).len(), 1);

    // The tool answers while the filler is being said: its output waits for the filler.
    c.created(1530, "r2");
    tool_done(
        &mut c,
        1600,
        "c1",
        "lookup_customer",
        ToolReply::Output("{}".into()),
    );
    let fx = c.take();
    assert!(function_outputs(&fx).is_empty());
    assert!(response_creates(&fx).is_empty());
    c.done(2000, "r2", "completed", json!([]));
    let fx = c.take();
    assert_eq!(function_outputs(&fx).len(), 1);
    assert_eq!(
        response_creates(&fx),
        vec![None],
        "exactly one response.create for the round"
    );
    // Never a second filler for the round.
    c.m.on_timer(c.at(10_000));
    assert_eq!(filler_creates(&c.take()), 0);
}

#[test]
fn a_filler_waits_for_silence_and_is_skipped_when_the_tool_is_quick() {
    // Quick tool: no filler.
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    tool_done(
        &mut c,
        500,
        "c1",
        "lookup_customer",
        ToolReply::Output("{}".into()),
    );
    c.take();
    c.m.on_timer(c.at(1520));
    assert_eq!(filler_creates(&c.take()), 0);

    // A response is active at the deadline: the filler waits for it to end.
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.created(1000, "r2");
    c.take();
    c.m.on_timer(c.at(1520));
    assert_eq!(filler_creates(&c.take()), 0);
    c.done(1600, "r2", "completed", json!([]));
    c.take();
    let next = c.m.next_deadline().unwrap();
    assert!(next <= c.at(1770), "rechecked soon");
    c.m.on_timer(next);
    assert_eq!(filler_creates(&c.take()), 1);

    // Turned off by the agent.
    let mut c = Call::new(agent_with(|a| a.filler_after = None));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.take();
    assert_eq!(c.m.next_deadline(), None);
}
