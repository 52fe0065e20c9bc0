//! Operators see the persister's lag on `/metrics`: the durable consumer's backlog (polled, not
//! measured on the write path) and the age of each event when it was committed.

mod common;

use std::time::Duration;

use common::*;
use switchboard_testkit::eventually;

#[tokio::test]
async fn lag_and_event_age_are_exported() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let sid = "CA00000000000000000000000000000042";
    // Events that happened a minute ago: their age at commit is at least that.
    let t0 = switchboard_proto::now_ms() - 60_000;
    let events = realistic_call(sid, t0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(sid, events.len() as i64).await?;

    let url = format!("{}/metrics", fx.base);
    let text = eventually(Duration::from_secs(30), "lag metrics", || {
        let req = fx.http.get(&url);
        async move {
            let text = req.send().await.ok()?.text().await.ok()?;
            (text.contains("persister_pending_events 0")
                && text.contains("persister_ack_pending_events 0"))
            .then_some(text)
        }
    })
    .await?;
    let count = metric(&text, "persister_event_age_seconds_count");
    assert_eq!(count, Some(events.len() as f64), "{text}");
    let sum = metric(&text, "persister_event_age_seconds_sum").unwrap_or(0.0);
    assert!(
        sum >= 45.0 * events.len() as f64,
        "every event was about a minute old when committed: sum {sum}"
    );
    fx.stop().await
}

/// The value of an unlabelled sample.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
