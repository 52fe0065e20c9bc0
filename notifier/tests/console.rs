//! A call's webhook deliveries on its console page, in a real headless Chromium: the persister
//! (in-process, `NOTIFIER_URL` set) reads them from the notifier's delivery log and the page
//! shows each delivery's endpoint, event type, state, attempts, last status and last error,
//! under the console's Content-Security-Policy without a violation.
//!
//! Chromium is required (`scripts/setup` installs it); without it this test fails.

mod common;

use common::*;
use serde_json::json;
use switchboard_testkit::browser::{Browser, Cdp};

/// The persister in-process on the fixture's NATS and a database of its own.
struct Console {
    base: String,
    service: InProcess<persister::RunError>,
}

impl Console {
    async fn start(fx: &Fixture, notifier: &Notifier) -> anyhow::Result<Self> {
        let db = fx.pg.create_database("switchboard").await?;
        let listen = format!("127.0.0.1:{}", free_port());
        let config = persister::Config {
            listen: listen.parse()?,
            database_url: Secret::new(db),
            admin_token: Some(Secret::new(TOKEN)),
            public_url: None,
            session_ttl_seconds: persister::console_sessions::DEFAULT_TTL.as_secs(),
            prices: Default::default(),
            live_client_buffer: persister::live::DEFAULT_CLIENT_BUFFER,
            drain_seconds: 2,
            web_call: Default::default(),
            webhook_log: persister::webhook_log::WebhookLogArgs {
                notifier_url: Some(notifier.base.clone()),
            },
            dialer: Default::default(),
            // No gateway records here: an empty store outside the source tree.
            recordings: switchboard_service::recordings::RecordingsArgs {
                recordings_url: std::env::temp_dir()
                    .join("switchboard-test-recordings")
                    .display()
                    .to_string(),
            },
            recordings_retention_days: 0,
            nats: NatsArgs::for_url(fx.nats.url()),
        };
        let service = InProcess::start(|shutdown| persister::run(config, shutdown));
        let base = format!("http://{listen}");
        let url = format!("{base}/readyz");
        eventually(Duration::from_secs(30), "persister ready", || {
            let req = fx.http.get(&url);
            async move { (req.send().await.ok()?.status() == 200).then_some(()) }
        })
        .await?;
        Ok(Self { base, service })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.service
            .stop(Duration::from_secs(20))
            .await
            .context("the console's persister")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_page_shows_its_webhook_deliveries() -> anyhow::Result<()> {
    let (_receiver, base) = Receiver::start().await?;
    // Nothing listens on the second endpoint (yet): its attempts fail with the connection
    // refused.
    let dead_port = free_port();
    let dead = format!("http://127.0.0.1:{dead_port}/dead");
    let file = [
        endpoint(
            &format!("{base}/crm"),
            &["call.started", "call.ended"],
            true,
        ),
        endpoint(&dead, &["call.outcome"], true),
    ]
    .concat();
    let fx = Fixture::new(&file, |c| c.webhook_max_attempts = 2).await?;
    let n = fx.start().await?;
    let console = Console::start(&fx, &n).await?;
    let sid = "CA00000000000000000000000000000W01";
    for e in call(sid) {
        fx.publish(&e).await?;
    }
    eventually(WAIT, "three deliveries settled", || async {
        let log = fx.log(&n, &format!("?call_sid={sid}")).await.ok()?;
        (log.len() == 3 && log.iter().all(|d| d["state"] != "pending")).then_some(())
    })
    .await?;

    // The API: the call's deliveries, and only to the signed in.
    let url = format!("{}/api/sessions/{sid}/webhooks", console.base);
    let unsigned = fx.http.get(&url).send().await?;
    anyhow::ensure!(unsigned.status() == 401, "{}", unsigned.status());
    let log: Value = fx
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let deliveries = log["deliveries"].as_array().context("deliveries")?;
    anyhow::ensure!(deliveries.len() == 3, "{log:#}");
    anyhow::ensure!(deliveries.iter().all(|d| d["call_sid"] == sid), "{log:#}");
    let other: Value = fx
        .http
        .get(format!("{}/api/sessions/CA-other/webhooks", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(other["deliveries"] == json!([]), "{other:#}");

    let browser = Browser::launch(&[])?;
    let result = drive(&console.base, sid, &dead, dead_port, &browser).await;
    browser.kill().await;
    result?;
    // The re-sent delivery's log keeps the two failed attempts and adds the third.
    let log = fx.log(&n, &format!("?call_sid={sid}")).await?;
    let outcome = log
        .iter()
        .find(|d| d["event_type"] == "call.outcome")
        .context("the outcome delivery")?;
    let statuses: Vec<&Value> = outcome["attempt_log"]
        .as_array()
        .context("attempt_log")?
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(
        statuses,
        [&Value::Null, &Value::Null, &json!(200)],
        "{outcome:#}"
    );
    console.stop().await?;
    n.stop().await
}

const WAIT: Duration = Duration::from_secs(30);

async fn drive(
    base: &str,
    sid: &str,
    dead: &str,
    dead_port: u16,
    browser: &Browser,
) -> anyhow::Result<()> {
    let mut cdp = signed_in(base, browser).await?;
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{base}/sessions/{sid}")}),
    )
    .await?;
    cdp.wait_for(
        "the call's three deliveries",
        "document.querySelectorAll('#webhooks tr.delivery').length === 3",
    )
    .await?;
    let rows = cdp
        .eval(
            "[...document.querySelectorAll('#webhooks tr.delivery')].map((tr) => \
             [...tr.cells].map((td) => td.innerText))",
        )
        .await?;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows)?;
    let row = |event: &str| {
        rows.iter()
            .find(|r| r[1] == event)
            .with_context(|| format!("no {event} row in {rows:?}"))
    };
    // Endpoint, event, state, attempts, last status, last error.
    let ended = row("call.ended")?;
    assert!(ended[0].ends_with("/crm"), "{ended:?}");
    assert_eq!(&ended[2..6], ["delivered", "1", "200", "—"], "{ended:?}");
    let started = row("call.started")?;
    assert_eq!(started[2], "delivered", "{started:?}");
    let outcome = row("call.outcome")?;
    assert_eq!(outcome[0], dead, "{outcome:?}");
    assert_eq!(&outcome[2..5], ["failed", "2", "—"], "{outcome:?}");
    assert!(
        outcome[5].to_lowercase().contains("refused"),
        "the last error says why: {outcome:?}"
    );
    // Oldest first: the call started before it ended.
    let position = |event: &str| rows.iter().position(|r| r[1] == event);
    assert!(
        position("call.started") < position("call.ended"),
        "{rows:?}"
    );

    // The endpoint comes back; the failed delivery is re-sent from the page.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", dead_port)).await?;
    let back = axum::Router::new().route("/dead", axum::routing::post(|| async { StatusCode::OK }));
    tokio::spawn(async move { axum::serve(listener, back).await });
    let outcome_row = "[...document.querySelectorAll('#webhooks tr.delivery')]\
        .find((tr) => tr.cells[1].innerText === 'call.outcome')";
    let only_failed_rows_offer_it = cdp
        .eval("[...document.querySelectorAll('#webhooks button.resend')].length")
        .await?;
    assert_eq!(only_failed_rows_offer_it, json!(1));
    cdp.eval(&format!(
        "{outcome_row}.querySelector('button.resend').click(); true"
    ))
    .await?;
    cdp.wait_for(
        "the re-sent delivery delivered",
        &format!("{outcome_row}?.cells[2].innerText === 'delivered'"),
    )
    .await?;
    let cells = cdp
        .eval(&format!(
            "[...{outcome_row}.cells].map((td) => td.innerText)"
        ))
        .await?;
    assert_eq!(cells[3], "1", "a fresh attempt budget: {cells}");
    assert_eq!(cells[4], "200", "{cells}");
    cdp.no_csp_violations().await?;
    cdp.screenshot("webhook-deliveries.png").await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}

/// A page signed in to the console at `base` (on the calls list), recording every
/// Content-Security-Policy violation.
async fn signed_in(base: &str, browser: &Browser) -> anyhow::Result<Cdp> {
    let mut cdp = browser.page().await?;
    cdp.record_csp_violations().await?;
    cdp.sign_in(base, TOKEN).await?;
    Ok(cdp)
}

/// The webhooks page: deliveries across calls to three endpoints (one answers, one refuses
/// connections, one answers 410 and is disabled), filtered by endpoint and by state with the
/// filters in the URL, each delivery's attempts with status and latency, a failed delivery
/// re-sent and delivered, and the disabled endpoint enabled from the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_page_filters_deliveries_and_resends_a_failed_one() -> anyhow::Result<()> {
    let (receiver, base) = Receiver::start().await?;
    receiver.script("gone", vec![Reply::Status(410)]).await;
    let dead_port = free_port();
    let dead = format!("http://127.0.0.1:{dead_port}/dead");
    let crm = format!("{base}/crm");
    let gone = format!("{base}/gone");
    let file = [
        endpoint(&crm, &["call.started", "call.ended"], true),
        endpoint(&dead, &["call.outcome"], true),
        endpoint(&gone, &["call.ended"], true),
    ]
    .concat();
    let fx = Fixture::new(&file, |c| c.webhook_max_attempts = 2).await?;
    let n = fx.start().await?;
    let console = Console::start(&fx, &n).await?;
    let first = "CA00000000000000000000000000000P01";
    let second = "CA00000000000000000000000000000P02";
    for e in call(first) {
        fx.publish(&e).await?;
    }
    // The second call's end, owed to the endpoint disabled by its 410, waits there.
    eventually(WAIT, "the first call's deliveries settled", || async {
        let log = fx.log(&n, "").await.ok()?;
        (log.len() == 4 && log.iter().all(|d| d["state"] != "pending")).then_some(())
    })
    .await?;
    for e in call(second) {
        fx.publish(&e).await?;
    }
    eventually(WAIT, "the second call's deliveries settled", || async {
        let log = fx.log(&n, &format!("?call_sid={second}")).await.ok()?;
        let settled = log
            .iter()
            .filter(|d| d["endpoint_url"] != gone.as_str())
            .all(|d| d["state"] != "pending");
        (log.len() == 4 && settled).then_some(())
    })
    .await?;

    // The console's routes pass the filters on, and stay behind the sign-in.
    let deliveries = format!("{}/api/webhooks/deliveries", console.base);
    let unsigned = fx.http.get(&deliveries).send().await?;
    anyhow::ensure!(unsigned.status() == 401, "{}", unsigned.status());
    let failed: Value = fx
        .http
        .get(reqwest::Url::parse_with_params(
            &deliveries,
            [("state", "failed"), ("endpoint", dead.as_str())],
        )?)
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let failed = failed["deliveries"].as_array().context("deliveries")?;
    anyhow::ensure!(
        failed.len() == 2
            && failed
                .iter()
                .all(|d| d["endpoint_url"] == dead.as_str() && d["state"] == "failed"),
        "{failed:?}"
    );
    let refused = fx
        .http
        .get(format!("{deliveries}?state=lost"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    anyhow::ensure!(refused.status() == 400, "{}", refused.status());
    let limited: Value = fx
        .http
        .get(format!("{deliveries}?limit=3"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        limited["deliveries"].as_array().map(Vec::len) == Some(3),
        "{limited:#}"
    );
    let not_a_number = fx
        .http
        .get(format!("{deliveries}?limit=all"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    anyhow::ensure!(not_a_number.status() == 400, "{}", not_a_number.status());
    // The notifier's refusals are passed on: no such disabled endpoint.
    let not_disabled = fx
        .http
        .post(reqwest::Url::parse_with_params(
            &format!("{}/api/webhooks/endpoints/enable", console.base),
            [("endpoint", crm.as_str())],
        )?)
        .bearer_auth(TOKEN)
        .send()
        .await?;
    anyhow::ensure!(not_disabled.status() == 404, "{}", not_disabled.status());
    // The notifier's listing is behind its admin token.
    let unsigned = fx
        .http
        .get(format!("{}/api/webhooks/endpoints", n.base))
        .send()
        .await?;
    anyhow::ensure!(unsigned.status() == 401, "{}", unsigned.status());

    let browser = Browser::launch(&[])?;
    let result = drive_webhooks(&console.base, [&crm, &dead, &gone], dead_port, &browser).await;
    browser.kill().await;
    result?;
    let endpoints: Value = fx
        .http
        .get(format!("{}/api/webhooks/endpoints", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        endpoints["endpoints"]
            .as_array()
            .context("endpoints")?
            .iter()
            .all(|e| e["disabled"] == false),
        "enabled again: {endpoints:#}"
    );
    // The second call's end, held while its endpoint was disabled, goes out once enabled.
    eventually(WAIT, "the held delivery delivered", || async {
        let log = fx
            .log(&n, &format!("?call_sid={second}&state=delivered"))
            .await
            .ok()?;
        log.iter()
            .any(|d| d["endpoint_url"] == gone.as_str())
            .then_some(())
    })
    .await?;
    console.stop().await?;
    n.stop().await
}

async fn drive_webhooks(
    base: &str,
    [crm, dead, gone]: [&str; 3],
    dead_port: u16,
    browser: &Browser,
) -> anyhow::Result<()> {
    let mut cdp = signed_in(base, browser).await?;
    cdp.eval("document.querySelector('nav a[href=\"/webhooks\"]').click(); true")
        .await?;
    cdp.wait_for(
        "all eight deliveries",
        "location.pathname === '/webhooks' && \
         document.querySelectorAll('#deliveries tr.delivery').length === 8",
    )
    .await?;
    let rows = table(&mut cdp).await?;
    // Call (a link to its page), endpoint, event, state.
    let links = cdp
        .eval(
            "[...document.querySelectorAll('#deliveries tr.delivery td:first-child a')]\
             .map((a) => a.getAttribute('href'))",
        )
        .await?;
    assert_eq!(links.as_array().map(Vec::len), Some(8), "{links}");
    for row in &rows {
        assert!(
            links
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| *l == format!("/sessions/{}", row[0])),
            "{row:?} {links}"
        );
    }
    // The endpoints: the one that answered 410 is disabled and offers the enable action.
    let endpoints = cdp
        .eval(
            "[...document.querySelectorAll('#endpoints tr.endpoint')].map((tr) => \
             [tr.cells[0].innerText, tr.cells[1].innerText, !!tr.querySelector('button.enable')])",
        )
        .await?;
    let mut expected = vec![
        json!([crm, "enabled", false]),
        json!([dead, "enabled", false]),
        json!([gone, "disabled", true]),
    ];
    expected.sort_by_key(|e| e[0].as_str().map(str::to_owned));
    assert_eq!(endpoints, Value::Array(expected), "{endpoints}");
    let why = cdp
        .eval("document.querySelector('#endpoints tr.endpoint.disabled').cells[2].innerText")
        .await?;
    assert!(why.as_str().is_some_and(|w| w.contains("410")), "{why}");

    // Filter by endpoint: the form puts it in the URL.
    cdp.eval(&format!(
        "document.getElementById('endpoint').value = {}; \
         document.getElementById('filters').requestSubmit(); true",
        json!(crm)
    ))
    .await?;
    cdp.wait_for(
        "the endpoint's four deliveries",
        &format!(
            "new URLSearchParams(location.search).get('endpoint') === {} && \
             document.getElementById('endpoint').value === {0} && \
             document.querySelectorAll('#deliveries tr.delivery').length === 4",
            json!(crm)
        ),
    )
    .await?;
    let rows = table(&mut cdp).await?;
    assert!(
        rows.iter().all(|r| r[1] == crm && r[3] == "delivered"),
        "{rows:?}"
    );
    // Each attempt's status code and latency, on expand.
    let attempts = attempts_of(&mut cdp, "tr.delivery").await?;
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    for (status, latency) in attempts.iter().flatten() {
        assert_eq!(status, "200");
        assert!(is_latency(latency), "{latency}");
    }

    // Filter by state, from the URL alone.
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{base}/webhooks?state=failed")}),
    )
    .await?;
    cdp.wait_for(
        "the three failed deliveries",
        "document.getElementById('state').value === 'failed' && \
         document.querySelectorAll('#deliveries tr.delivery').length === 3",
    )
    .await?;
    let rows = table(&mut cdp).await?;
    assert!(rows.iter().all(|r| r[3] == "failed"), "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r[1] == dead).count(), 2, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r[1] == gone).count(), 1, "{rows:?}");
    let buttons = cdp
        .eval("document.querySelectorAll('#deliveries button.resend').length")
        .await?;
    assert_eq!(buttons, json!(3));
    // The refused endpoint's two attempts: nothing answered, each with its latency and why.
    let refused = attempts_of(&mut cdp, "tr.delivery").await?;
    let dead_attempts: Vec<_> = rows
        .iter()
        .zip(&refused)
        .filter(|(r, _)| r[1] == dead)
        .map(|(_, a)| a.clone())
        .collect();
    for a in &dead_attempts {
        assert_eq!(a.len(), 2, "{dead_attempts:?}");
        for (status, latency) in a {
            assert_eq!(status, "no answer");
            assert!(is_latency(latency), "{latency}");
        }
    }
    let gone_attempts: Vec<_> = rows
        .iter()
        .zip(&refused)
        .filter(|(r, _)| r[1] == gone)
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(gone_attempts[0][0].0, "410", "{gone_attempts:?}");

    // The endpoint comes back; one of its failed deliveries is re-sent from its filtered view.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", dead_port)).await?;
    let back = axum::Router::new().route("/dead", axum::routing::post(|| async { StatusCode::OK }));
    tokio::spawn(async move { axum::serve(listener, back).await });
    cdp.call(
        "Page.navigate",
        json!({"url": reqwest::Url::parse_with_params(&format!("{base}/webhooks"), [("endpoint", dead)])?.as_str()}),
    )
    .await?;
    cdp.wait_for(
        "the refused endpoint's two deliveries",
        "document.querySelectorAll('#deliveries tr.delivery.failed button.resend').length === 2",
    )
    .await?;
    let id = cdp
        .eval(
            "const tr = document.querySelector('#deliveries tr.delivery.failed'); \
             tr.querySelector('button.resend').click(); tr.dataset.deliveryId",
        )
        .await?;
    let id = id.as_str().context("a delivery id")?.to_owned();
    let row = format!(
        "document.querySelector('#deliveries tr[data-delivery-id={}]')",
        json!(id)
    );
    cdp.wait_for(
        "the re-sent delivery delivered",
        &format!("{row}?.cells[3].innerText === 'delivered'"),
    )
    .await?;
    let resent = attempts_of(&mut cdp, &format!("tr[data-delivery-id={}]", json!(id))).await?;
    let statuses: Vec<&str> = resent[0].iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["no answer", "no answer", "200"], "{resent:?}");
    let still = cdp
        .eval("document.querySelectorAll('#deliveries tr.delivery.failed').length")
        .await?;
    assert_eq!(still, json!(1), "only the one re-sent");

    // The disabled endpoint is enabled from the page.
    cdp.eval(
        "document.querySelector('#endpoints tr.endpoint.disabled button.enable').click(); true",
    )
    .await?;
    cdp.wait_for(
        "every endpoint enabled",
        "document.querySelectorAll('#endpoints tr.endpoint').length === 3 && \
         document.querySelectorAll('#endpoints tr.endpoint.disabled').length === 0",
    )
    .await?;
    cdp.no_csp_violations().await?;
    cdp.screenshot("webhooks-page.png").await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}

/// The deliveries table: call, endpoint, event, state per row.
async fn table(cdp: &mut Cdp) -> anyhow::Result<Vec<Vec<String>>> {
    let rows = cdp
        .eval(
            "[...document.querySelectorAll('#deliveries tr.delivery')].map((tr) => \
             [...tr.cells].slice(0, 4).map((td) => td.innerText))",
        )
        .await?;
    Ok(serde_json::from_value(rows)?)
}

/// Each matching row's attempts (status, latency), its attempt list expanded first.
async fn attempts_of(cdp: &mut Cdp, rows: &str) -> anyhow::Result<Vec<Vec<(String, String)>>> {
    let found = cdp
        .eval(&format!(
            "[...document.querySelectorAll('#deliveries ' + {})].map((tr) => {{ \
               tr.querySelector('details').open = true; \
               return [...tr.querySelectorAll('li.attempt')].filter((li) => li.checkVisibility()) \
                 .map((li) => [li.querySelector('.status').innerText, li.querySelector('.latency').innerText]); }})",
            json!(rows)
        ))
        .await?;
    Ok(serde_json::from_value(found)?)
}

/// A latency as the console shows it (`12 ms`, `1.2 s`).
fn is_latency(text: &str) -> bool {
    let number = text
        .strip_suffix(" ms")
        .or_else(|| text.strip_suffix(" s"))
        .unwrap_or("x");
    number.parse::<f64>().is_ok()
}
