//! A call that changed owner: the persister keeps each `owner` event (never as a transcript
//! line), serves them as `owners` with the count of `takeovers`, and the `ended` event with
//! the highest seq decides the call's end, whatever the arrival order.

mod common;

use common::*;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::owner_seq;
use switchboard_proto::{CallOwner, Role, ToolDispatched, Usage};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn owner(epoch: u32, worker: &str, reason: &str, previous: &str, gap_ms: u32) -> Body {
    Body::Owner(CallOwner {
        epoch,
        worker_id: worker.into(),
        reason: reason.into(),
        previous_worker_id: previous.into(),
        gap_ms,
        agent_id: "front-desk".into(),
    })
}

#[tokio::test]
async fn owners_are_recorded_and_the_highest_ended_wins() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000a01";
    let events = [
        event(
            sid,
            owner_seq(0, 1),
            T0,
            owner(0, "worker-a", "offer", "", 0),
        ),
        event(
            sid,
            owner_seq(0, 2),
            T0,
            started("front-desk", "+15550001234"),
        ),
        event(
            sid,
            owner_seq(0, 3),
            T0 + 1_000,
            Body::Transcript(said(Role::User, "Book me in.", "u1", 900)),
        ),
        event(
            sid,
            owner_seq(0, 4),
            T0 + 1_100,
            Body::Dispatched(ToolDispatched {
                audio_end_ms: 0,
                redacted: Vec::new(),
                call_id: "c1".into(),
                name: "book".into(),
                arguments: "{}".into(),
            }),
        ),
        event(
            sid,
            owner_seq(0, 5),
            T0 + 1_200,
            Body::Usage(Usage {
                input_tokens: 10,
                ..Default::default()
            }),
        ),
        event(
            sid,
            owner_seq(1, 1),
            T0 + 2_000,
            owner(1, "worker-b", "worker_lost", "worker-a", 640),
        ),
        event(
            sid,
            owner_seq(1, 2),
            T0 + 3_000,
            Body::Transcript(said(Role::Assistant, "Booked.", "a1", 2_900)),
        ),
        event(
            sid,
            owner_seq(1, 3),
            T0 + 9_000,
            ended("caller_hung_up", 9_000),
        ),
    ];
    // The new owner's end arrives first; a lower-numbered end (the gateway's, published after
    // it gave up waiting) arrives later and must not replace it.
    let late_lower = event(sid, 1_000_001, T0 + 9_500, ended("worker_lost", 9_500));
    for ev in events.iter().rev() {
        fx.publish(ev).await?;
    }
    fx.publish(&late_lower).await?;
    fx.wait_events(sid, events.len() as i64 + 1).await?;

    let s = fx.session(sid).await?;
    assert_eq!(
        s["end_reason"], "caller_hung_up",
        "the highest seq decides the end"
    );
    assert_eq!(s["duration_ms"], 9_000);
    assert_eq!(s["takeovers"], 1);
    let owners = s["owners"].as_array().expect("owners");
    assert_eq!(owners.len(), 2);
    assert_eq!(owners[0]["epoch"], 0);
    assert_eq!(owners[0]["worker_id"], "worker-a");
    assert_eq!(owners[0]["reason"], "offer");
    assert!(owners[0]["previous_worker_id"].is_null());
    assert_eq!(owners[1]["epoch"], 1);
    assert_eq!(owners[1]["worker_id"], "worker-b");
    assert_eq!(owners[1]["reason"], "worker_lost");
    assert_eq!(owners[1]["previous_worker_id"], "worker-a");
    assert_eq!(owners[1]["gap_ms"], 640);
    assert_eq!(owners[1]["at"], "2026-01-01T00:00:02Z");
    // Ownership is not part of what was said.
    let lines: Vec<&str> = s["transcript"]
        .as_array()
        .expect("transcript")
        .iter()
        .filter_map(|t| t["text"].as_str())
        .collect();
    assert_eq!(lines, ["Book me in.", "Booked."]);

    // A call with one owner has no takeovers; a redelivered owner event changes nothing.
    let single = "CA00000000000000000000000000000a02";
    let first = event(single, 1, T0, owner(0, "worker-a", "offer", "", 0));
    fx.publish(&first).await?;
    fx.publish_with_id(&first, &format!("{single}:1:again"))
        .await?;
    fx.publish(&event(single, 2, T0, started("front-desk", "+15550001234")))
        .await?;
    fx.wait_events(single, 2).await?;
    let s = fx.session(single).await?;
    assert_eq!(s["takeovers"], 0);
    assert_eq!(s["owners"].as_array().map(Vec::len), Some(1));
    fx.stop().await
}
