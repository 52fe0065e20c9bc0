//! The notifier in-process against a real nats-server and Postgres, delivering to receivers
//! on 127.0.0.1 (allowed the private network explicitly, except where the guard is tested).

mod common;

use common::*;
use switchboard_proto::CallStatus;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_reach_the_endpoints_that_asked_for_them() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    let file = [
        endpoint(
            &format!("{base}/crm"),
            &["call.started", "call.ended"],
            true,
        ),
        endpoint(&format!("{base}/live"), &["call.transcript"], true),
    ]
    .concat();
    let fx = Fixture::new(&file, |_| {}).await?;
    let n = fx.start().await?;
    for e in call("CA1") {
        fx.publish(&e).await?;
    }
    let crm = receiver.wait_for("crm", 2, WAIT).await?;
    let live = receiver.wait_for("live", 2, WAIT).await?;

    for r in crm.iter().chain(&live) {
        assert!(verify(SECRET, r), "signature of {r:?}");
        assert!(r.id.starts_with("msg_"), "{}", r.id);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            (now - r.timestamp).abs() < 60,
            "webhook-timestamp {}",
            r.timestamp
        );
    }
    let types: Vec<Value> = crm.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(types, ["call.started", "call.ended"]);
    let started = crm[0].json();
    assert_eq!(started["data"]["agent_id"], "support");
    assert_eq!(started["timestamp"], "2025-12-06T05:46:41Z");
    let report = &crm[1].json()["data"];
    assert_eq!(report["call_sid"], "CA1");
    assert_eq!(report["end_reason"], "caller_hung_up");
    assert_eq!(report["outcome"]["outcome"], "resolved");
    assert_eq!(report["usage"]["input_tokens"], 100);
    let transcript: Vec<&str> = report["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(transcript, ["Hello, how can I help?", "Where is my order?"]);
    let live_types: Vec<Value> = live.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(live_types, ["call.transcript", "call.transcript"]);

    // Nothing else arrives: the filters hold.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.on("crm").await.len(), 2);
    assert_eq!(receiver.on("live").await.len(), 2);
    // A wrong secret does not verify (the check above can fail).
    assert!(!verify(
        "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
        &crm[0]
    ));

    // The delivery log shows each attempt.
    let log = fx.log(&n, &format!("?endpoint={base}/crm")).await?;
    assert_eq!(log.len(), 2);
    for d in &log {
        assert_eq!(d["state"], "delivered");
        assert_eq!(d["attempt_log"][0]["status"], 200);
    }
    let unauthorized = fx
        .http
        .get(format!("{}/api/webhooks/deliveries", n.base))
        .send()
        .await?;
    assert_eq!(unauthorized.status(), 401);
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_library_verifies_the_deliveries() -> anyhow::Result<()> {
    let python = switchboard_testkit::workspace_root().join(".venv/bin/python");
    let script = switchboard_testkit::workspace_root().join("notifier/tests/receiver.py");
    let port = free_port();
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .arg(SECRET)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("{} (run scripts/setup)", python.display()))?;
    let url = format!("http://127.0.0.1:{port}/hook");
    let fx = Fixture::new(
        &endpoint(
            &url,
            &["call.started", "call.transcript", "call.ended"],
            true,
        ),
        |_| {},
    )
    .await?;
    let n = fx.start().await?;
    for e in call("CA2") {
        fx.publish(&e).await?;
    }
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut types = Vec::new();
    while types.len() < 4 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .context("the Python receiver got too few deliveries")??
            .context("the Python receiver exited")?;
        let got: Value = serde_json::from_str(&line)?;
        assert_eq!(got["verified"], true, "{got}");
        types.push(got["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    assert_eq!(
        types,
        [
            "call.ended",
            "call.started",
            "call.transcript",
            "call.transcript"
        ]
    );
    eventually(WAIT, "four delivered", || async {
        let log = fx.log(&n, "?state=delivered").await.ok()?;
        (log.len() == 4).then_some(())
    })
    .await?;
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_under_the_same_id_honouring_retry_after() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    receiver
        .script(
            "hook",
            vec![
                Reply::Status(500),
                Reply::RetryAfter(503, 3),
                Reply::Status(302),
            ],
        )
        .await;
    let fx = Fixture::new(
        &endpoint(&format!("{base}/hook"), &["call.outcome"], true),
        |_| {},
    )
    .await?;
    let n = fx.start().await?;
    fx.publish(&call("CA3")[3]).await?;
    let got = receiver.wait_for("hook", 4, WAIT).await?;
    // One webhook-id and one body, every attempt signed afresh.
    assert!(
        got.iter()
            .all(|r| r.id == got[0].id && r.body == got[0].body)
    );
    assert!(got.iter().all(|r| verify(SECRET, r)));
    // Backoff from 200 ms: the first retry within [100, 200] ms (plus scheduling).
    let first = got[1].at - got[0].at;
    assert!(
        first >= Duration::from_millis(100) && first < Duration::from_secs(2),
        "{first:?}"
    );
    // Retry-After: 3 s, far above the backoff's step.
    let after = got[2].at - got[1].at;
    assert!(
        after >= Duration::from_millis(2900),
        "Retry-After not honoured: {after:?}"
    );
    // A redirect is a failure, not followed.
    let third = got[3].at - got[2].at;
    assert!(third < Duration::from_secs(3), "{third:?}");
    let log = eventually(WAIT, "delivered", || async {
        let log = fx.log(&n, "").await.ok()?;
        (log.first()?["state"] == "delivered").then_some(log)
    })
    .await?;
    let statuses: Vec<Value> = log[0]["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, [500, 503, 302, 200]);
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_gives_up_is_kept_and_can_be_resent() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    receiver
        .script("hook", vec![Reply::Status(500), Reply::Status(500)])
        .await;
    let fx = Fixture::new(
        &endpoint(&format!("{base}/hook"), &["call.outcome"], true),
        |c| {
            c.webhook_max_attempts = 2;
        },
    )
    .await?;
    let n = fx.start().await?;
    fx.publish(&call("CA4")[3]).await?;
    let failed = eventually(WAIT, "given up", || async {
        let log = fx.log(&n, "?state=failed").await.ok()?;
        (log.len() == 1).then_some(log)
    })
    .await?;
    assert_eq!(failed[0]["attempts"], 2);
    assert_eq!(receiver.on("hook").await.len(), 2);
    let id = failed[0]["id"].as_str().unwrap();

    let resent = fx
        .http
        .post(format!("{}/api/webhooks/deliveries/{id}/resend", n.base))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(resent.status(), 202);
    let got = receiver.wait_for("hook", 3, WAIT).await?;
    assert_eq!(got[2].id, id);
    assert_eq!(got[2].body, got[0].body);
    eventually(WAIT, "delivered after re-send", || async {
        let log = fx.log(&n, "?state=delivered").await.ok()?;
        (log.len() == 1).then_some(())
    })
    .await?;
    let missing = fx
        .http
        .post(format!(
            "{}/api/webhooks/deliveries/msg_nope/resend",
            n.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_until_it_is_enabled() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    receiver.script("gone", vec![Reply::Status(410)]).await;
    let url = format!("{base}/gone");
    let file = [
        endpoint(&url, &["call.transcript"], true),
        endpoint(&format!("{base}/other"), &["call.transcript"], true),
    ]
    .concat();
    let fx = Fixture::new(&file, |_| {}).await?;
    let n = fx.start().await?;
    let events = call("CA5");
    fx.publish(&events[1]).await?;
    receiver.wait_for("gone", 1, WAIT).await?;
    eventually(WAIT, "failed", || async {
        let log = fx
            .log(&n, &format!("?endpoint={url}&state=failed"))
            .await
            .ok()?;
        (log.len() == 1).then_some(())
    })
    .await?;
    fx.publish(&events[2]).await?;
    receiver.wait_for("other", 2, WAIT).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.on("gone").await.len(),
        1,
        "a disabled endpoint got a delivery"
    );

    let enabled = fx
        .http
        .post(reqwest::Url::parse_with_params(
            &format!("{}/api/webhooks/endpoints/enable", n.base),
            [("endpoint", url.as_str())],
        )?)
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(enabled.status(), 200);
    let got = receiver.wait_for("gone", 2, WAIT).await?;
    assert_eq!(got[1].json()["data"]["seq"], 3);
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_allowed() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    let port = base.rsplit(':').next().unwrap();
    let file = [
        endpoint(
            &format!("http://127.0.0.1:{port}/literal"),
            &["call.outcome"],
            false,
        ),
        endpoint(
            &format!("http://localhost:{port}/named"),
            &["call.outcome"],
            false,
        ),
        endpoint(
            &format!("http://localhost:{port}/allowed"),
            &["call.outcome"],
            true,
        ),
    ]
    .concat();
    let fx = Fixture::new(&file, |c| c.webhook_max_attempts = 1).await?;
    let n = fx.start().await?;
    fx.publish(&call("CA6")[3]).await?;
    receiver.wait_for("allowed", 1, WAIT).await?;
    let failed = eventually(WAIT, "both refused", || async {
        let log = fx.log(&n, "?state=failed").await.ok()?;
        (log.len() == 2).then_some(log)
    })
    .await?;
    for d in failed {
        let error = d["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("not a public address"), "{error}");
        assert!(d["last_status"].is_null());
    }
    assert!(receiver.on("literal").await.is_empty());
    assert!(receiver.on("named").await.is_empty());
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_delay_the_others() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    receiver.script("slow", vec![Reply::Hang; 50]).await;
    let file = [
        endpoint(&format!("{base}/slow"), &["call.transcript"], true),
        endpoint(&format!("{base}/fast"), &["call.transcript"], true),
    ]
    .concat();
    let fx = Fixture::new(&file, |_| {}).await?;
    let n = fx.start().await?;
    let started = Instant::now();
    for seq in 0..20 {
        fx.publish(&event(
            "CA7",
            10 + seq,
            said(Role::User, &format!("line {seq}")),
        ))
        .await?;
    }
    let fast = receiver.wait_for("fast", 20, WAIT).await?;
    let took = fast.last().unwrap().at - started;
    assert!(
        took < Duration::from_secs(3),
        "the fast endpoint waited: {took:?}"
    );
    // The slow one has only its first few attempts in flight, all hanging.
    assert!(
        receiver.on("slow").await.len() <= 4,
        "{}",
        receiver.on("slow").await.len()
    );
    receiver.hang.notify_waiters();
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_delivery_loses_nothing_and_keeps_ids_and_bodies() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    receiver.script("hook", vec![Reply::Hang]).await;
    let fx = Fixture::new(
        &endpoint(
            &format!("{base}/hook"),
            &["call.transcript", "call.ended"],
            true,
        ),
        |c| c.webhook_timeout_seconds = 2,
    )
    .await?;
    let n = fx.start().await?;
    let events = call("CA8");
    fx.publish(&events[1]).await?;
    receiver.wait_for("hook", 1, WAIT).await?;
    // Stopped while the attempt hangs; meanwhile the call goes on.
    n.stop().await?;
    for e in &events[2..] {
        fx.publish(e).await?;
    }
    let n = fx.start().await?;
    eventually(WAIT, "all delivered", || async {
        let log = fx.log(&n, "?state=delivered").await.ok()?;
        (log.len() == 3).then_some(())
    })
    .await?;
    let got = receiver.on("hook").await;
    let mut by_id: HashMap<&str, Vec<&Received>> = HashMap::new();
    for r in &got {
        by_id.entry(r.id.as_str()).or_default().push(r);
    }
    assert_eq!(by_id.len(), 3, "three deliveries: {got:?}");
    for (id, rs) in &by_id {
        assert!(
            rs.iter().all(|r| r.body == rs[0].body),
            "{id} sent with two bodies"
        );
    }
    // The hung delivery was retried under its id after the restart.
    assert!(by_id[got[0].id.as_str()].len() >= 2);
    let ended = got
        .iter()
        .find(|r| r.json()["type"] == "call.ended")
        .context("no call.ended")?;
    assert_eq!(
        ended.json()["data"]["transcript"].as_array().unwrap().len(),
        2,
        "{}",
        ended.body
    );
    // Nothing is redelivered by NATS either: the consumer acked everything.
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&fx.pool)
        .await?;
    assert_eq!(pending, 3);
    let _ = &fx.nats;
    n.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transcript_is_linked_not_sent() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    let fx = Fixture::new(
        &endpoint(&format!("{base}/hook"), &["call.ended"], true),
        |c| {
            c.webhook_max_payload_bytes = 3000;
        },
    )
    .await?;
    let n = fx.start().await?;
    let mut events = call("CA9");
    let ended = events.pop().unwrap();
    for e in &events {
        fx.publish(e).await?;
    }
    for seq in 0..40 {
        fx.publish(&event(
            "CA9",
            100 + seq,
            said(Role::User, &format!("a rather long sentence number {seq}")),
        ))
        .await?;
    }
    fx.publish(&CallEvent { seq: 200, ..ended }).await?;
    let got = receiver.wait_for("hook", 1, WAIT).await?;
    let body = got[0].json();
    assert!(got[0].body.len() <= 3000, "{}", got[0].body.len());
    assert!(body["data"]["transcript"].is_null());
    assert_eq!(body["data"]["transcript_entries"], 42);
    assert_eq!(
        body["data"]["transcript_url"],
        "https://console.example.com/api/sessions/CA9"
    );
    n.stop().await
}

/// An attempt that gets no answer fails after the timeout, measured on the paused clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_shortly_after_ended_are_in_the_report() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    let fx = Fixture::new(
        &endpoint(&format!("{base}/hook"), &["call.ended"], true),
        |_| {},
    )
    .await?;
    let n = fx.start().await?;
    for e in call("CA10") {
        fx.publish(&e).await?;
    }
    // As in a real call: the worker's last usage, then Twilio's final status through the
    // gateway, each arriving a little later, together well past the first second after `ended`.
    let late_usage = Usage {
        output_tokens: 7,
        ..Default::default()
    };
    let completed = CallStatus {
        status: "completed".into(),
        sequence_number: 3,
        duration_seconds: 4,
        ..Default::default()
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    fx.publish(&event("CA10", 6, Body::Usage(late_usage)))
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    fx.publish(&event(
        "CA10",
        switchboard_proto::event::GATEWAY_SEQ_BASE + 4,
        Body::Status(completed),
    ))
    .await?;
    let got = receiver.wait_for("hook", 1, WAIT).await?;
    let data = &got[0].json()["data"];
    assert_eq!(
        data["twilio_statuses"][0]["status"], "completed",
        "{data:#}"
    );
    assert_eq!(data["end_reason"], "caller_hung_up", "{data:#}");
    // One report, built once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.on("hook").await.len(), 1);
    n.stop().await
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_attempt_times_out_on_time() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    receiver.script("hang", vec![Reply::Hang]).await;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(
        file.path(),
        endpoint(&format!("{base}/hang"), &["call.ended"], true),
    )?;
    let endpoint = notifier::endpoints::load(file.path())?.remove(0);
    let clients = notifier::dispatch::Clients::new()?;
    let started = tokio::time::Instant::now();
    let real = std::time::SystemTime::now();
    let answer = notifier::dispatch::attempt(
        &clients,
        &endpoint,
        "msg_1",
        1,
        "{}",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(answer.status, None);
    assert!(answer.error.unwrap().contains("no answer within 15"));
    assert_eq!(started.elapsed().as_secs(), 15);
    assert!(real.elapsed()? < Duration::from_secs(5));
    Ok(())
}
