//! The console's Campaigns page in a real headless Chromium, against the whole system (every
//! service a process, the persister's `DIALER_URL` naming a real dialer that places calls
//! through callsim's fake Twilio): add a number to the do-not-call list, create a campaign
//! from a CSV upload (started paused), resume it, pause it after its first call and resume it
//! again, see each contact dialed with its result (answered, busy, DNC never dialed), export
//! the contacts as CSV, and open the answered call's page from its attempt. The list and the
//! campaign fit a 390 px wide screen without sideways scrolling, and nothing violates the
//! console's Content-Security-Policy. Keeps screenshots, `target/test-artifacts/campaigns*.png`.

use std::time::Duration;

use anyhow::{Context, ensure};
use callsim::twilio_dialing::{Limits, Outcome};
use callsim::twilio_rest::FakeTwilio;
use callsim::{CallConfig, CallerScript};
use serde_json::{Value, json};
use switchboard_e2e::{
    ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, CALLEE_LISTENS_THEN_HANGS_UP, CAMPAIGN_FROM, System,
    get_session,
};
use switchboard_testkit::browser::{Browser, Cdp};
use switchboard_testkit::free_port;

const ANSWERS: &str = "+15550300001";
const BUSY: &str = "+15550300002";
const DNC: &str = "+15550300003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_from_the_console_in_a_real_browser() -> anyhow::Result<()> {
    let dialer_addr = format!("127.0.0.1:{}", free_port());
    let mut system = System::start_with(&[
        ("MAX_CALLS", "8".into()),
        ("DIALER_URL", format!("http://{dialer_addr}")),
    ])
    .await?;
    let twilio_port = free_port();
    let mut cfg = CallConfig::new(&system.gateway, AUTH_TOKEN);
    cfg.account_sid = ACCOUNT_SID.into();
    let twilio = FakeTwilio::start_on(
        format!("127.0.0.1:{twilio_port}").parse()?,
        cfg,
        CallerScript::from_toml_str(CALLEE_LISTENS_THEN_HANGS_UP)?,
    )
    .await?;
    twilio
        .dialing()
        .set_limits(Limits {
            calls_per_second: Some(1.0),
            ..Default::default()
        })
        .await;
    twilio
        .dialing()
        .set_outcomes(BUSY, vec![Outcome::Busy])
        .await;
    system
        .start_dialer_at(
            &dialer_addr,
            &format!("http://127.0.0.1:{twilio_port}"),
            &[("TWILIO_CALLS_PER_SECOND", "1".into())],
        )
        .await?;

    let browser = Browser::launch(&[])?;
    let result = drive(&system, &twilio, &browser).await;
    browser.kill().await;
    if let Err(error) = &result {
        eprintln!("{error:#}\n{}", system.logs());
    }
    result
}

async fn drive(system: &System, twilio: &FakeTwilio, browser: &Browser) -> anyhow::Result<()> {
    let base = &system.persister;
    let mut cdp = browser.page().await?;
    cdp.record_csp_violations().await?;
    cdp.sign_in(base, ADMIN_TOKEN).await?;

    // The Campaigns page, from the navigation.
    cdp.eval("document.querySelector('nav a[href=\"/campaigns\"]').click(); true")
        .await?;
    cdp.wait_for(
        "the campaigns page",
        "location.pathname === '/campaigns' && !!document.querySelector('#agent option[value=\"front-desk\"]') \
         && !document.getElementById('dnc-note').hidden",
    )
    .await?;

    // A number on the do-not-call list, from the page.
    cdp.eval(&format!(
        "document.getElementById('dnc-number').value = {}; document.getElementById('dnc-reason').value = 'asked'; \
         document.getElementById('dnc-add').requestSubmit(); true",
        json!(DNC)
    ))
    .await?;
    cdp.wait_for(
        "the number on the list",
        &format!(
            "!!document.querySelector('#dnc tr.dnc-number[data-number=\"{DNC}\"]') && \
             document.querySelector('#dnc tr.dnc-number').innerText.includes('asked')"
        ),
    )
    .await?;

    // A campaign from a CSV upload (one pace of a call every ten seconds: room to pause it
    // between two calls), started paused.
    let csv = format!("to,name\n{ANSWERS},Ada\n{BUSY},Grace\n{DNC},Linus\n");
    cdp.eval(&format!(
        "document.getElementById('new-campaign').open = true; \
         document.getElementById('name').value = 'Spring recall'; \
         document.getElementById('agent').value = 'front-desk'; \
         document.getElementById('from').value = {CAMPAIGN_FROM:?}; \
         document.getElementById('cps').value = '0.1'; \
         document.getElementById('concurrency').value = '2'; \
         document.getElementById('paused').checked = true; \
         const dt = new DataTransfer(); \
         dt.items.add(new File([{}], 'contacts.csv', {{ type: 'text/csv' }})); \
         document.getElementById('contacts').files = dt.files; \
         document.getElementById('create').requestSubmit(); true",
        json!(csv)
    ))
    .await?;
    cdp.wait_for(
        "the new campaign, paused, with its three contacts",
        "new URLSearchParams(location.search).has('id') && document.body.dataset.campaignState === 'paused' \
         && document.querySelectorAll('#contacts-list tr.contact.pending').length === 3",
    )
    .await?;
    let id = cdp
        .eval("new URLSearchParams(location.search).get('id')")
        .await?
        .as_str()
        .context("the campaign's id")?
        .to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        twilio.dialing().placed().await.is_empty(),
        "a paused campaign dials nobody"
    );

    // Resumed: the first contact is dialed; paused again before the second one's turn.
    click(&mut cdp, "#campaign-actions button.resume").await?;
    cdp.wait_for(
        "the first contact dialed",
        "document.querySelector('#campaign-progress [data-count=\"dialed\"]')?.innerText === 'Dialed 1'",
    )
    .await?;
    click(&mut cdp, "#campaign-actions button.pause").await?;
    cdp.wait_for(
        "the campaign paused",
        "document.body.dataset.campaignState === 'paused'",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    ensure!(
        twilio.dialing().placed().await.len() == 1,
        "a paused campaign places no further call"
    );

    // Resumed again: the rest is dialed, the listed number never.
    click(&mut cdp, "#campaign-actions button.resume").await?;
    cdp.wait_for_within(
        Duration::from_secs(90),
        "the campaign completed",
        "document.body.dataset.campaignState === 'completed' \
         && !document.querySelector('#contacts-list tr.contact.dialing')",
    )
    .await?;
    let progress: Vec<String> = serde_json::from_value(
        cdp.eval("[...document.querySelectorAll('#campaign-progress [data-count]')].map((p) => p.innerText)")
            .await?,
    )?;
    assert_eq!(
        progress,
        [
            "3 contacts",
            "Dialed 2",
            "Answered 1",
            "Voicemail 0",
            "Busy 1",
            "No answer 0",
            "Failed 0",
            "DNC 1",
            "Pending 0"
        ],
        "{progress:?}"
    );
    let rows: Vec<Vec<String>> = serde_json::from_value(
        cdp.eval(
            "[...document.querySelectorAll('#contacts-list tr.contact')].map((tr) => \
             [...tr.cells].slice(1, 4).map((td) => td.innerText))",
        )
        .await?,
    )?;
    assert_eq!(
        rows,
        [
            [ANSWERS, "Done", "Answered"],
            [BUSY, "Done", "Busy"],
            [DNC, "Do not call", "—"],
        ],
        "{rows:?}"
    );
    let placed: Vec<String> = twilio
        .dialing()
        .placed()
        .await
        .iter()
        .map(|p| p.to.clone())
        .collect();
    assert_eq!(placed, [ANSWERS, BUSY], "the listed number is never dialed");

    // The contacts filter lives in the URL.
    cdp.eval(
        "document.getElementById('contact-result').value = 'busy'; \
         document.getElementById('contact-filters').requestSubmit(); true",
    )
    .await?;
    cdp.wait_for(
        "only the busy contact",
        "new URLSearchParams(location.search).get('result') === 'busy' \
         && document.getElementById('contact-result').value === 'busy' \
         && document.querySelectorAll('#contacts-list tr.contact').length === 1",
    )
    .await?;
    cdp.navigate(&format!("{base}/campaigns?id={id}")).await?;
    cdp.wait_for(
        "every contact again",
        "document.querySelectorAll('#contacts-list tr.contact').length === 3",
    )
    .await?;

    // The export, through the console.
    let export = cdp
        .eval(
            "(async () => { const a = document.querySelector('#campaign-actions a.export'); \
              const r = await fetch(a.href); \
              return [r.status, r.headers.get('content-disposition') || '', await r.text()]; })()",
        )
        .await?;
    assert_eq!(export[0], 200, "{export}");
    assert!(
        export[1].as_str().is_some_and(|d| d.contains("attachment")),
        "{export}"
    );
    let text = export[2].as_str().unwrap_or_default();
    assert!(
        text.contains(ANSWERS) && text.contains(BUSY) && text.contains(DNC),
        "{text}"
    );

    cdp.no_csp_violations().await?;
    cdp.screenshot("campaigns-campaign.png").await?;
    fits_a_phone(&mut cdp, "the campaign").await?;

    // The list: the campaign with its state and progress; the DNC list.
    cdp.navigate(&format!("{base}/campaigns")).await?;
    let row = format!("#campaigns tr.campaign[data-campaign-id=\"{id}\"]");
    cdp.wait_for(
        "the campaign in the list",
        &format!(
            "document.querySelector({0})?.classList.contains('completed') && \
             document.querySelector({0}).innerText.includes('Answered 1')",
            json!(row)
        ),
    )
    .await?;
    cdp.no_csp_violations().await?;
    cdp.screenshot("campaigns.png").await?;
    fits_a_phone(&mut cdp, "the campaigns list").await?;

    // The answered call's page, from its attempt.
    let campaign: Value = reqwest::Client::new()
        .get(format!("{base}/api/campaigns/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let call_sid = campaign["contacts"][0]["attempts"][0]["call_sid"]
        .as_str()
        .context("the answered attempt's call")?
        .to_owned();
    get_session(base, &call_sid).await?;
    cdp.navigate(&format!("{base}/campaigns?id={id}")).await?;
    cdp.wait_for(
        "the contacts",
        "document.querySelectorAll('#contacts-list tr.contact').length === 3",
    )
    .await?;
    cdp.eval(&format!(
        "const tr = document.querySelector('#contacts-list tr.contact[data-to=\"{ANSWERS}\"]'); \
         tr.querySelector('details').open = true; tr.querySelector('a.call').click(); true"
    ))
    .await?;
    cdp.wait_for(
        "the call's page",
        &format!(
            "location.pathname === '/sessions/{call_sid}' && document.body.innerText.includes('front-desk')"
        ),
    )
    .await?;
    cdp.no_csp_violations().await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}

async fn click(cdp: &mut Cdp, selector: &str) -> anyhow::Result<()> {
    cdp.wait_for(
        &format!("{selector} on the page"),
        &format!("!!document.querySelector({})", json!(selector)),
    )
    .await?;
    cdp.eval(&format!(
        "document.querySelector({}).click(); true",
        json!(selector)
    ))
    .await?;
    Ok(())
}

/// The page at a phone's width (390 px) scrolls only up and down.
async fn fits_a_phone(cdp: &mut Cdp, what: &str) -> anyhow::Result<()> {
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let widths = cdp
        .eval("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        .await?;
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await?;
    ensure!(
        widths[0].as_i64() <= widths[1].as_i64(),
        "{what} scrolls sideways at 390 px: {widths}"
    );
    Ok(())
}
