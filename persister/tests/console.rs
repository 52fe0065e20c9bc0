//! The console as a new user meets it, in a real headless Chromium: calls in progress shown
//! with what was said before the page opened, the timeline in the order things happened,
//! forgiving filters kept in the URL, words instead of codes, a clear page for an unknown call,
//! the analytics page, a phone-width layout, and what the console says when the server is gone.
//! Screenshots go to `target/test-artifacts/console-*.png`.
//!
//! Chromium is required (`scripts/setup` installs it); without it this test fails.

mod common;

use common::*;
use serde_json::{Value, json};
use switchboard_proto::call_event::Body;
use switchboard_proto::{
    CallEvent, Role, ToolFailure, ToolInvocation, TurnLatency, tool_invocation,
};
use switchboard_testkit::browser::{Browser, Cdp};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const DONE: &str = "CA00000000000000000000000000000C01";
const REFUND: &str = "CA00000000000000000000000000000C02";
const LIVE: &str = "CA00000000000000000000000000000C03";

fn tool(name: &str, failed: bool, latency_ms: u32) -> Body {
    Body::Tool(ToolInvocation {
        redacted: Vec::new(),
        call_id: format!("call_{name}"),
        name: name.into(),
        arguments: r#"{"order":"A-17"}"#.into(),
        result: Some(if failed {
            tool_invocation::Result::Error(ToolFailure {
                code: "unavailable".into(),
                message: "the order system is down".into(),
            })
        } else {
            tool_invocation::Result::Output(r#"{"status":"shipped"}"#.into())
        }),
        latency_ms,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Publishes `events` (the call's seqs count from 1 without gaps) and waits until the record
/// holds all of the call's events up to the last of them.
async fn publish_all(fx: &Fixture, sid: &str, events: &[CallEvent]) -> anyhow::Result<()> {
    for ev in events {
        fx.publish(ev).await?;
    }
    let last = events.last().map_or(0, |ev| ev.seq as i64);
    fx.wait_events(sid, last).await
}

/// Opens `url` and waits until the new document satisfies `ready`.
async fn open(cdp: &mut Cdp, url: &str, what: &str, ready: &str) -> anyhow::Result<()> {
    cdp.eval("window.__old = true").await?;
    cdp.navigate(url).await?;
    cdp.wait_for(
        what,
        &format!("!window.__old && document.readyState === 'complete' && ({ready})"),
    )
    .await
}

/// The call page's timeline: each line's text, each tool call as `tool <name>`.
async fn timeline(cdp: &mut Cdp) -> anyhow::Result<Value> {
    cdp.eval(
        "[...document.querySelectorAll('#timeline > li')].map((li) => \
         li.classList.contains('tool') ? 'tool ' + li.dataset.tool : li.querySelector('.text').innerText)",
    )
    .await
}

async fn text(cdp: &mut Cdp) -> anyhow::Result<String> {
    Ok(cdp
        .eval("document.body.innerText")
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn fits_390(cdp: &mut Cdp, page: &str) -> anyhow::Result<()> {
    let width = cdp
        .eval("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
        .await?;
    let width = width.as_f64().unwrap_or(f64::MAX);
    anyhow::ensure!(
        width <= 390.0,
        "{page} scrolls sideways at 390 px: {width} px wide"
    );
    Ok(())
}

#[tokio::test]
async fn the_console_as_a_new_user_meets_it() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    publish_all(&fx, DONE, &realistic_call(DONE, T0)).await?;
    let refund = vec![
        event(REFUND, 1, T0 + 60_000, started("sales", "+15559876543")),
        event(
            REFUND,
            2,
            T0 + 64_000,
            Body::Transcript(said(Role::User, "I want a refund for my order", "u1", 2000)),
        ),
        event(REFUND, 3, T0 + 90_000, ended("end_call", 30_000)),
    ];
    publish_all(&fx, REFUND, &refund).await?;
    // A call that has been going on for a minute when the console opens.
    let t = now_ms() - 65_000;
    let live = vec![
        event(LIVE, 1, t, started("front-desk", "+15557654321")),
        event(
            LIVE,
            2,
            t + 4_000,
            Body::Transcript(said(Role::User, "My order is late", "u1", 1500)),
        ),
    ];
    publish_all(&fx, LIVE, &live).await?;

    let browser = Browser::launch(&[])?;
    let mut cdp = browser.page().await?;
    let result = drive(&mut cdp, fx, t).await;
    if result.is_err() {
        let _ = cdp.screenshot("console-failure.png").await;
    }
    browser.kill().await;
    result
}

async fn drive(cdp: &mut Cdp, fx: Fixture, live_t: i64) -> anyhow::Result<()> {
    let base = fx.base.clone();
    record_csp_violations(cdp).await?;
    open(
        cdp,
        &format!("{base}/login"),
        "the sign-in form",
        "!!document.getElementById('token')",
    )
    .await?;
    submit_token(cdp).await?;

    // Live view catch-up: the call already in progress is there, titled with its agent and
    // caller, with the line said before the page opened and its elapsed time.
    let card = format!("#live .live-call[data-call-sid=\"{LIVE}\"]");
    cdp.wait_for(
        "the call in progress with its earlier line",
        &format!(
            "location.pathname === '/sessions' && !!document.querySelector({0}) \
             && document.querySelector({0}).innerText.includes('My order is late')",
            json!(card)
        ),
    )
    .await?;
    let head = cdp
        .eval(&format!(
            "(() => {{ const h = document.querySelector({}); return [h.innerText, getComputedStyle(h).position]; }})()",
            json!(format!("{card} .live-head"))
        ))
        .await?;
    let title = head[0].as_str().unwrap_or_default();
    assert!(title.contains("front-desk · +15557654321"), "{title}");
    assert!(!title.contains(LIVE), "titled with the CallSid: {title}");
    assert_eq!(head[1], "sticky", "the card's header scrolls away");
    let elapsed = title.rsplit(char::is_whitespace).next().unwrap_or_default();
    let (m, s) = elapsed.split_once(':').unwrap_or(("", ""));
    let seconds = m.parse::<i64>().unwrap_or(-1) * 60 + s.parse::<i64>().unwrap_or(-100);
    assert!(
        (65..200).contains(&seconds),
        "elapsed time {elapsed:?} in {title:?}"
    );
    let empty = cdp
        .eval("getComputedStyle(document.getElementById('live-empty')).display")
        .await?;
    assert_eq!(
        empty, "none",
        "'No calls in progress' next to a call in progress"
    );
    // What happens next appears on the card, in the order it happened.
    publish_all(
        &fx,
        LIVE,
        &[event(
            LIVE,
            3,
            live_t + 9_000,
            Body::Transcript(said(
                Role::Assistant,
                "Let me check that order.",
                "a1",
                6000,
            )),
        )],
    )
    .await?;
    publish_all(
        &fx,
        LIVE,
        &[
            event(LIVE, 4, live_t + 9_300, tool("order_status", false, 120)),
            event(
                LIVE,
                5,
                live_t + 9_400,
                Body::Turn(TurnLatency {
                    kind: "response".into(),
                    latency_ms: 610,
                    response_id: "resp_live_1".into(),
                }),
            ),
        ],
    )
    .await?;
    cdp.wait_for(
        "the live card following the call",
        &format!(
            "document.querySelector({0}).innerText.includes('Let me check that order.') \
             && document.querySelector({0}).innerText.includes('order_status')",
            json!(card)
        ),
    )
    .await?;
    // A call that starts now gets its card; when it ends, the card goes and the list has it.
    const NEW: &str = "CA00000000000000000000000000000C04";
    publish_all(
        &fx,
        NEW,
        &[event(NEW, 1, now_ms(), started("sales", "+15550004444"))],
    )
    .await?;
    let new_card = format!("#live .live-call[data-call-sid=\"{NEW}\"]");
    cdp.wait_for(
        "the new call's card",
        &format!(
            "!!document.querySelector({0}) \
             && document.querySelector({0}).innerText.includes('sales · +15550004444')",
            json!(new_card)
        ),
    )
    .await?;
    publish_all(
        &fx,
        NEW,
        &[event(
            NEW,
            2,
            now_ms() + 3_000,
            ended("caller_hung_up", 3_000),
        )],
    )
    .await?;
    cdp.wait_for(
        "the ended call's card gone and the call listed",
        &format!(
            "!document.querySelector({}) && !!document.querySelector('#rows tr[data-call-sid=\"{NEW}\"]')",
            json!(new_card)
        ),
    )
    .await?;
    no_violations(cdp, "the calls list").await?;

    // Words instead of codes in the list.
    let row = |sid: &str| format!("tr[data-call-sid=\"{sid}\"]");
    cdp.wait_for(
        "the ended calls in the list",
        &format!("!!document.querySelector({})", json!(row(DONE))),
    )
    .await?;
    let listed = cdp
        .eval(&format!(
            "document.querySelector({}).innerText",
            json!(row(DONE))
        ))
        .await?;
    let listed = listed.as_str().unwrap_or_default();
    assert!(listed.contains("Caller hung up"), "{listed}");
    assert!(listed.contains("Inbound"), "{listed}");
    let page = text(cdp).await?;
    assert!(!page.contains("caller_hung_up"), "{page}");
    assert!(page.contains("4 calls"), "result count: {page}");
    // Agents and outcomes are pick-lists of what the record holds.
    cdp.wait_for(
        "the pick-lists",
        "!!document.querySelector('#agent option[value=\"sales\"]') \
         && !!document.querySelector('#agent option[value=\"front-desk\"]') \
         && !!document.querySelector('#outcome option[value=\"resolved\"]')",
    )
    .await?;

    // Filters: part of a number, any case, words said; kept in the URL.
    let only = |sid: &str| {
        format!(
            "document.querySelectorAll('#rows tr').length === 1 && !!document.querySelector({}) \
             && document.getElementById('count').innerText === '1 call'",
            json!(row(sid))
        )
    };
    open(
        cdp,
        &format!("{base}/sessions?from=9876"),
        "a caller found by part of the number",
        &only(REFUND),
    )
    .await?;
    let kept = cdp
        .eval("document.querySelector('#filters input[name=from]').value")
        .await?;
    assert_eq!(kept, "9876");
    open(
        cdp,
        &format!("{base}/sessions?agent=Front-Desk&q=NEVER%20MIND"),
        "a call found by agent in another case and by what was said",
        &only(DONE),
    )
    .await?;
    open(
        cdp,
        &format!("{base}/sessions?q=refund"),
        "a call found by what was said",
        &only(REFUND),
    )
    .await?;
    // A search from the form lands in the URL; nothing found says so.
    cdp.eval(
        "document.querySelector('#filters input[name=q]').value = 'no such words'; \
         document.querySelector('#filters button[type=submit]').click(); true",
    )
    .await?;
    cdp.wait_for(
        "the empty state",
        "!document.getElementById('list-empty').hidden \
         && document.getElementById('count').innerText === '0 calls' \
         && document.querySelectorAll('#rows tr').length === 0 \
         && new URLSearchParams(location.search).get('q') === 'no such words'",
    )
    .await?;
    let export = cdp.eval("document.getElementById('export').href").await?;
    assert!(
        export
            .as_str()
            .unwrap_or_default()
            .contains("/api/sessions.csv?q=no+such+words"),
        "{export}"
    );

    // The finished call: every item at its time (the tool calls after the caller's request),
    // words for codes, no Realtime ids.
    open(
        cdp,
        &format!("{base}/sessions/{DONE}"),
        "the finished call",
        "document.querySelectorAll('#timeline > li').length === 6",
    )
    .await?;
    let order = timeline(cdp).await?;
    assert_eq!(
        order,
        json!([
            "Thanks for calling Acme Dental, how can I help?",
            "Hi, this is Maria. Can you look up my account?",
            "tool lookup_customer",
            "tool book_appointment",
            "I found your account, Maria Garcia. You are a gold member and",
            "Actually, never mind."
        ])
    );
    let page = text(cdp).await?;
    for shown in [
        "Caller hung up",
        "Invalid arguments: the arguments are not valid JSON",
        "Call from +15550001234 to front-desk",
    ] {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    for hidden in ["caller_hung_up", "resp_", "invalid_arguments"] {
        assert!(!page.contains(hidden), "{hidden}: {page}");
    }
    let badge = cdp
        .eval("getComputedStyle(document.getElementById('live-badge')).display")
        .await?;
    assert_eq!(badge, "none", "an ended call is shown as live");
    // Room for the recording's player, above the transcript.
    let player_first = cdp
        .eval(
            "!!(document.getElementById('recording').compareDocumentPosition(\
             document.getElementById('timeline')) & Node.DOCUMENT_POSITION_FOLLOWING)",
        )
        .await?;
    assert_eq!(player_first, Value::Bool(true));
    no_violations(cdp, "the call page").await?;
    cdp.screenshot("console-call.png").await?;

    // The page of a call in progress: a live badge, and tool calls and turns as they happen.
    open(
        cdp,
        &format!("{base}/sessions/{LIVE}"),
        "the call in progress",
        "getComputedStyle(document.getElementById('live-badge')).display !== 'none' \
         && document.body.innerText.includes('Let me check that order.')",
    )
    .await?;
    publish_all(
        &fx,
        LIVE,
        &[
            event(
                LIVE,
                6,
                live_t + 20_000,
                Body::Transcript(said(Role::User, "Can you cancel it?", "u2", 16_000)),
            ),
            event(LIVE, 7, live_t + 21_500, tool("cancel_order", true, 300)),
            event(
                LIVE,
                8,
                live_t + 22_000,
                Body::Turn(TurnLatency {
                    kind: "response".into(),
                    latency_ms: 720,
                    response_id: "resp_live_2".into(),
                }),
            ),
        ],
    )
    .await?;
    cdp.wait_for(
        "the tool call and the turn as they happen",
        "!!document.querySelector('#timeline li.tool.failed[data-tool=\"cancel_order\"]') \
         && document.querySelectorAll('#turns tr').length === 2",
    )
    .await?;
    let order = timeline(cdp).await?;
    assert_eq!(
        order,
        json!([
            "My order is late",
            "Let me check that order.",
            "tool order_status",
            "Can you cancel it?",
            "tool cancel_order"
        ])
    );
    let page = text(cdp).await?;
    assert!(
        page.contains("Unavailable: the order system is down"),
        "{page}"
    );
    assert!(!page.contains("resp_live"), "{page}");

    // An unknown call: a page that says so, and a 404 from the API.
    open(
        cdp,
        &format!("{base}/sessions/CA0000000000000000000000000000FFFF"),
        "the unknown call",
        "document.getElementById('title').innerText === 'No such call'",
    )
    .await?;
    let hidden = cdp.eval("document.getElementById('detail').hidden").await?;
    assert_eq!(
        hidden,
        Value::Bool(true),
        "empty sections on an unknown call"
    );
    let status = cdp
        .eval("fetch('/api/sessions/CA0000000000000000000000000000FFFF').then((r) => r.status)")
        .await?;
    assert_eq!(status, 404);

    // Analytics: the day of the two finished calls.
    open(
        cdp,
        &format!("{base}/analytics?since=2026-01-01&until=2026-01-01"),
        "the analytics of one day",
        "!document.getElementById('overview').hidden",
    )
    .await?;
    let numbers = cdp
        .eval(
            "[document.querySelector('[data-tile=calls] .value').innerText, \
              [...document.querySelectorAll('#per-day g.bar')].map((g) => g.dataset.total), \
              document.querySelector('#tools tr[data-tool=book_appointment]').innerText, \
              document.querySelector('#end-reasons tr[data-value=caller_hung_up]').innerText]",
        )
        .await?;
    assert_eq!(numbers[0], "2");
    assert_eq!(numbers[1], json!(["2"]));
    let tool_row = numbers[2].as_str().unwrap_or_default();
    assert!(tool_row.contains("100.0%"), "{tool_row}");
    assert!(
        numbers[3]
            .as_str()
            .unwrap_or_default()
            .contains("Caller hung up"),
        "{numbers}"
    );
    let nav = cdp
        .eval("!!document.querySelector('nav a[href=\"/sessions\"]')")
        .await?;
    assert_eq!(nav, Value::Bool(true));
    no_violations(cdp, "the analytics page").await?;
    cdp.screenshot("console-analytics.png").await?;
    // A bad range is a clear message.
    open(
        cdp,
        &format!("{base}/analytics?since=2026-02-01&until=2026-01-01"),
        "the analytics of a bad range",
        "!document.getElementById('analytics-error').hidden",
    )
    .await?;
    let said = cdp
        .eval("document.getElementById('analytics-error').innerText")
        .await?;
    assert_eq!(said, "since must be before until");

    // At phone width nothing scrolls sideways.
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
    )
    .await?;
    open(
        cdp,
        &format!("{base}/sessions"),
        "the list at 390 px",
        &format!("!!document.querySelector({})", json!(row(DONE))),
    )
    .await?;
    fits_390(cdp, "the calls list").await?;
    cdp.screenshot("console-list-390.png").await?;
    open(
        cdp,
        &format!("{base}/sessions/{DONE}"),
        "the call at 390 px",
        "document.querySelectorAll('#timeline > li').length === 6 \
         && document.querySelectorAll('#cost tr').length > 0",
    )
    .await?;
    fits_390(cdp, "the call page").await?;
    cdp.screenshot("console-call-390.png").await?;
    open(
        cdp,
        &format!("{base}/analytics?since=2026-01-01&until=2026-01-03"),
        "the analytics at 390 px",
        "!document.getElementById('overview').hidden",
    )
    .await?;
    fits_390(cdp, "the analytics page").await?;
    cdp.call("Emulation.clearDeviceMetricsOverride", json!({}))
        .await?;

    // The server goes away: the list says so and drops its old rows, and the live panel does
    // not claim that nothing is going on.
    open(
        cdp,
        &format!("{base}/sessions"),
        "the list before the outage",
        &format!(
            "!!document.querySelector({}) && document.getElementById('live-dot').classList.contains('on')",
            json!(row(DONE))
        ),
    )
    .await?;
    fx.stop().await?;
    cdp.eval("document.querySelector('#filters button[type=submit]').click(); true")
        .await?;
    cdp.wait_for(
        "the outage explained",
        "!document.getElementById('list-error').hidden \
         && document.getElementById('list-error').innerText.includes('Cannot reach the Switchboard server') \
         && document.querySelectorAll('#rows tr').length === 0 \
         && document.getElementById('count').hidden",
    )
    .await?;
    cdp.wait_for(
        "the live panel admitting it lost the feed",
        "!document.getElementById('live-error').hidden \
         && getComputedStyle(document.getElementById('live-empty')).display === 'none' \
         && !document.body.innerText.includes('No calls in progress') \
         && !document.getElementById('live-dot').classList.contains('on')",
    )
    .await?;
    cdp.screenshot("console-outage.png").await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}
