//! Claiming calls ahead against a real Postgres: one claim takes the moments of the next
//! 300 ms at the campaign's pace, as many as the concurrency cap has room for, skips and marks
//! numbers on the do-not-call list without dialing a contact twice, and the next claim starts
//! where the last one stopped.

use std::time::Duration;

use dialer::outcome::RetryPolicy;
use dialer::pacer;
use dialer::store::{self, Claim, NewCampaign, NewContact};
use serde_json::json;
use switchboard_testkit::Postgres;
use time::OffsetDateTime;

/// `at` to the microsecond, as Postgres keeps it (the account's pacer starts at the claim's
/// moment, read back from the database).
fn micros(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at)
}

async fn pool(pg: &Postgres) -> anyhow::Result<sqlx::PgPool> {
    let url = pg.create_database("switchboard_dialer").await?;
    let pool = persister::db::pool(&url)?;
    store::MIGRATOR.run(&pool).await?;
    Ok(pool)
}

fn campaign(cps: f64, max_concurrent: i32, numbers: &[String]) -> NewCampaign {
    NewCampaign {
        name: "claims".into(),
        agent_id: "front-desk".into(),
        from: "+15550001111".into(),
        calls_per_second: cps,
        max_concurrent,
        paused: false,
        retry: RetryPolicy::default(),
        hours: None,
        time_zone: "UTC".into(),
        contacts: numbers
            .iter()
            .map(|to| NewContact {
                to: to.clone(),
                vars: json!({}),
                time_zone: None,
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_claim_takes_the_next_moments_at_the_pace_and_skips_listed_numbers() -> anyhow::Result<()>
{
    let pg = Postgres::start().await?;
    let pool = pool(&pg).await?;
    let numbers: Vec<String> = (0..12).map(|i| format!("+1555040{i:04}")).collect();
    // Two numbers among the first ones are on the list.
    store::add_dnc(&pool, &[numbers[1].clone(), numbers[3].clone()], "asked").await?;
    let id = store::create_campaign(&pool, &campaign(50.0, 100, &numbers)).await?;
    let account_interval = pacer::interval(100.0);
    // Past the campaign's creation, so both stored moments have come.
    let now = micros(OffsetDateTime::now_utc() + Duration::from_secs(1));

    let Claim::Dial(first, next) = store::claim(&pool, id, "AC1", account_interval, now).await?
    else {
        anyhow::bail!("nothing claimed");
    };
    // 300 ms at 50 calls per second: 15 moments, 20 ms apart from now; 10 contacts can be
    // dialed.
    assert_eq!(first.len(), 10, "{first:?}");
    for (k, call) in first.iter().enumerate() {
        assert_eq!(call.dial_at, now + Duration::from_millis(20) * k as u32);
    }
    let mut dialed: Vec<&str> = first.iter().map(|c| c.to.as_str()).collect();
    dialed.sort();
    dialed.dedup();
    assert_eq!(dialed.len(), 10, "no contact twice: {dialed:?}");
    assert!(!dialed.contains(&numbers[1].as_str()) && !dialed.contains(&numbers[3].as_str()));
    assert_eq!(
        next,
        now + Duration::from_millis(200),
        "after the last one claimed"
    );
    let shown = store::campaign(&pool, id).await?.expect("the campaign");
    assert_eq!(shown["progress"]["dnc"], 2, "{shown}");
    assert_eq!(shown["progress"]["dialed"], 10, "{shown}");
    assert_eq!(
        shown["progress"]["pending"], 10,
        "dialing counts as pending: {shown}"
    );

    // Nothing is left to claim; the campaign is not over while its calls are up.
    let later = next + Duration::from_millis(10);
    let again = store::claim(&pool, id, "AC1", account_interval, later).await?;
    assert!(matches!(again, Claim::Idle), "{again:?}");
    Ok(())
}

#[tokio::test]
async fn a_claim_fills_only_the_room_under_the_concurrency_cap_and_waits_beyond_the_lead()
-> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let pool = pool(&pg).await?;
    let numbers: Vec<String> = (0..20).map(|i| format!("+1555050{i:04}")).collect();
    let id = store::create_campaign(&pool, &campaign(100.0, 3, &numbers)).await?;
    let account_interval = pacer::interval(100.0);
    let now = micros(OffsetDateTime::now_utc() + Duration::from_secs(1));
    let Claim::Dial(first, _) = store::claim(&pool, id, "AC1", account_interval, now).await? else {
        anyhow::bail!("nothing claimed");
    };
    assert_eq!(first.len(), 3, "the cap's room: {first:?}");
    let full = store::claim(&pool, id, "AC1", account_interval, now).await?;
    assert!(matches!(full, Claim::AtCap), "{full:?}");

    // A slow campaign: one call, then the next moment is beyond the lead.
    let slow = store::create_campaign(&pool, &campaign(1.0, 10, &numbers[..2])).await?;
    let Claim::Dial(one, next) = store::claim(&pool, slow, "AC2", account_interval, now).await?
    else {
        anyhow::bail!("nothing claimed");
    };
    assert_eq!(one.len(), 1);
    assert_eq!(next, now + Duration::from_secs(1));
    let wait = store::claim(&pool, slow, "AC2", account_interval, now).await?;
    // Postgres keeps microseconds.
    assert!(
        matches!(wait, Claim::WaitUntil(at)
            if (at - (now + Duration::from_secs(1))).abs() < Duration::from_micros(1)),
        "{wait:?}"
    );
    Ok(())
}
