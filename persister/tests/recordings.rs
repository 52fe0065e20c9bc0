//! Call recordings in the persister: the `recording` event is stored, the session carries
//! `recording` (or `null`), the WAV is served behind the same authentication as the API, and the
//! retention period deletes old ones.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use switchboard_proto::CallRecording;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::recording_seq;
use switchboard_service::recordings::{RecordingStore, wav};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A call with a stored recording of `stream`; returns the WAV.
async fn recorded_call(
    fx: &Fixture,
    store: &RecordingStore,
    sid: &str,
    stream: u32,
    samples: usize,
) -> anyhow::Result<Bytes> {
    let bytes = Bytes::from(wav::encode(&vec![1000; samples], &vec![-1000; samples]));
    let location = RecordingStore::location(sid, stream);
    store.put(&location, bytes.clone()).await?;
    let body = Body::Recording(CallRecording {
        location,
        duration_ms: samples as u64 / 8,
        channels: 2,
        bytes: bytes.len() as u64,
        stream,
    });
    fx.publish(&event(sid, recording_seq(stream), T0 + 9000, body))
        .await?;
    Ok(bytes)
}

#[tokio::test]
async fn a_recorded_call_serves_its_wav_to_the_token_only() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let store = RecordingStore::open(fx.recordings.path().to_str().expect("utf-8"))?;
    let sid = "CA0000000000000000000000000000ae01";
    let events = realistic_call(sid, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    let wav = recorded_call(&fx, &store, sid, 1, 8000).await?;
    fx.wait_events(sid, events.len() as i64 + 1).await?;

    let session = fx.session(sid).await?;
    let url = format!("/api/sessions/{sid}/recording");
    assert_eq!(
        session["recording"],
        serde_json::json!({"url": url, "duration_ms": 1000, "channels": 2})
    );
    let resp = fx.get(&url).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert_eq!(resp.bytes().await?, wav);

    // The same authentication as the API: no token, no recording.
    let anonymous = fx.http.get(format!("{}{url}", fx.base)).send().await?;
    assert_eq!(anonymous.status(), 401);
    let wrong = fx
        .http
        .get(format!("{}{url}", fx.base))
        .bearer_auth("wrong")
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);

    // A call without a recording, and an unknown call.
    let other = "CA0000000000000000000000000000ae02";
    let events = realistic_call(other, T0);
    for ev in &events {
        fx.publish(ev).await?;
    }
    fx.wait_events(other, events.len() as i64).await?;
    assert!(fx.session(other).await?["recording"].is_null());
    let none = fx.get(&format!("/api/sessions/{other}/recording")).await?;
    assert_eq!(none.status(), 404);
    let unknown = fx
        .get("/api/sessions/CA0000000000000000000000000000ae99/recording")
        .await?;
    assert_eq!(unknown.status(), 404);
    Ok(())
}

#[tokio::test]
async fn a_re_attached_streams_recording_replaces_the_first_and_not_the_other_way()
-> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let store = RecordingStore::open(fx.recordings.path().to_str().expect("utf-8"))?;
    let sid = "CA0000000000000000000000000000ae03";
    // Stream 2 (after a gateway failover) arrives first, then a late stream 1.
    let second = recorded_call(&fx, &store, sid, 2, 1600).await?;
    recorded_call(&fx, &store, sid, 1, 8000).await?;
    fx.wait_events(sid, 2).await?;
    let session = fx.session(sid).await?;
    assert_eq!(session["recording"]["duration_ms"], 200);
    let served = fx.get(&format!("/api/sessions/{sid}/recording")).await?;
    assert_eq!(served.bytes().await?, second);
    Ok(())
}

#[tokio::test]
async fn the_retention_period_deletes_old_recordings_and_their_records() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let store = RecordingStore::open(fx.recordings.path().to_str().expect("utf-8"))?;
    let sid = "CA0000000000000000000000000000ae04";
    recorded_call(&fx, &store, sid, 1, 800).await?;
    fx.wait_events(sid, 1).await?;
    let retention = Duration::from_secs(30 * 24 * 60 * 60);
    let now = switchboard_proto::now_ms();

    // Younger than the period (29 days on): kept.
    let day = 24 * 60 * 60 * 1000;
    let kept = persister::retention::sweep(&store, &fx.pool, retention, now + 29 * day).await?;
    assert_eq!(kept, 0);
    assert!(!fx.session(sid).await?["recording"].is_null());

    // Older (31 days on): the WAV and the record go; the call stays.
    let deleted = persister::retention::sweep(&store, &fx.pool, retention, now + 31 * day).await?;
    assert_eq!(deleted, 1);
    assert!(
        store
            .get(&RecordingStore::location(sid, 1))
            .await?
            .is_none()
    );
    assert!(fx.session(sid).await?["recording"].is_null());
    let gone = fx.get(&format!("/api/sessions/{sid}/recording")).await?;
    assert_eq!(gone.status(), 404);
    Ok(())
}
