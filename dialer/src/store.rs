//! The dialer's Postgres state (`migrations/`): campaigns, their contacts, every attempt, the
//! do-not-call list and the account's pacer.
//!
//! Replicas share the rows and never dial one contact twice: a contact is claimed inside one
//! transaction that holds its campaign's row (`FOR UPDATE`, which also serialises the campaign's
//! pacer and concurrency count) and the account's pacer row, picks the contact with
//! `FOR UPDATE SKIP LOCKED`, moves it to `dialing` and inserts its attempt. Only then is
//! Twilio asked to place the call.
//!
//! Calling hours and time zones are evaluated by Postgres (`AT TIME ZONE`), whose time zone
//! database every deployment has; the clock is the dialer's, passed in.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Row as _, Transaction};
use time::{OffsetDateTime, Time};
use uuid::Uuid;

use crate::outcome::{CallResult, Next, RetryPolicy};
use crate::pacer::{self, Slots};

/// The schema, embedded at build time and applied at start (sqlx takes an advisory lock, so
/// replicas starting together apply it once).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A campaign's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Running,
    Paused,
    Cancelled,
    /// Every contact is done.
    Completed,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "cancelled" => Self::Cancelled,
            _ => Self::Completed,
        }
    }
}

/// A contact's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactState {
    /// Waiting for its (next) attempt.
    Pending,
    /// A call is placed or being placed.
    Dialing,
    /// Finished with its last result.
    Done,
    /// On the do-not-call list when its turn came: never dialed.
    Dnc,
    /// The campaign was cancelled before it was done.
    Cancelled,
}

impl ContactState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Dialing => "dialing",
            Self::Done => "done",
            Self::Dnc => "dnc",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Calling hours in the contact's local time: `start` up to `end` (spanning midnight when
/// `end` < `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingHours {
    pub start: Time,
    pub end: Time,
}

/// One contact of a new campaign.
#[derive(Debug, Clone)]
pub struct NewContact {
    pub to: String,
    pub vars: Value,
    pub time_zone: Option<String>,
}

/// A campaign to create.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub agent_id: String,
    pub from: String,
    pub calls_per_second: f64,
    pub max_concurrent: i32,
    pub paused: bool,
    pub retry: RetryPolicy,
    pub hours: Option<CallingHours>,
    pub time_zone: String,
    pub contacts: Vec<NewContact>,
}

/// Which of `zones` Postgres does not know.
pub async fn unknown_time_zones(
    pool: &PgPool,
    zones: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT z FROM unnest($1::text[]) AS z
         WHERE NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = z)",
    )
    .bind(zones)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// Stores a campaign with its contacts; returns its id.
pub async fn create_campaign(pool: &PgPool, campaign: &NewCampaign) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let state = if campaign.paused {
        CampaignState::Paused
    } else {
        CampaignState::Running
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO campaigns (id, name, agent_id, from_number, calls_per_second, max_concurrent,
            state, retry, hours_start, hours_end, time_zone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(&campaign.name)
    .bind(&campaign.agent_id)
    .bind(&campaign.from)
    .bind(campaign.calls_per_second)
    .bind(campaign.max_concurrent)
    .bind(state.as_str())
    .bind(serde_json::to_value(&campaign.retry).unwrap_or_default())
    .bind(campaign.hours.map(|h| h.start))
    .bind(campaign.hours.map(|h| h.end))
    .bind(&campaign.time_zone)
    .execute(&mut *tx)
    .await?;
    add_contacts_tx(&mut tx, id, &campaign.contacts).await?;
    tx.commit().await?;
    Ok(id)
}

/// Appends contacts to a campaign that is not over; `false` if there is no such campaign.
pub async fn add_contacts(
    pool: &PgPool,
    campaign: Uuid,
    contacts: &[NewContact],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM campaigns WHERE id = $1 FOR UPDATE")
            .bind(campaign)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(state) = state.map(|s| CampaignState::parse(&s)) else {
        return Ok(false);
    };
    if state == CampaignState::Cancelled {
        return Ok(false);
    }
    add_contacts_tx(&mut tx, campaign, contacts).await?;
    if state == CampaignState::Completed {
        set_state_tx(&mut tx, campaign, CampaignState::Running).await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn add_contacts_tx(
    tx: &mut Transaction<'_, Postgres>,
    campaign: Uuid,
    contacts: &[NewContact],
) -> Result<(), sqlx::Error> {
    let to: Vec<&str> = contacts.iter().map(|c| c.to.as_str()).collect();
    let vars: Vec<Value> = contacts.iter().map(|c| c.vars.clone()).collect();
    let zones: Vec<Option<&str>> = contacts.iter().map(|c| c.time_zone.as_deref()).collect();
    sqlx::query(
        "INSERT INTO campaign_contacts (campaign_id, position, to_number, vars, time_zone)
         SELECT $1, base.n + c.ord, c.to_number, c.vars, c.time_zone
         FROM (SELECT COALESCE(MAX(position), 0) AS n FROM campaign_contacts WHERE campaign_id = $1) base,
              unnest($2::text[], $3::jsonb[], $4::text[]) WITH ORDINALITY AS c(to_number, vars, time_zone, ord)",
    )
    .bind(campaign)
    .bind(&to)
    .bind(&vars)
    .bind(&zones)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_state_tx(
    tx: &mut Transaction<'_, Postgres>,
    campaign: Uuid,
    state: CampaignState,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE campaigns SET state = $2 WHERE id = $1")
        .bind(campaign)
        .bind(state.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What a pause, resume or cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
}

/// Applies `control`; the campaign's state after it, `None` if there is no such campaign.
/// Calls in progress are not touched: a paused or cancelled campaign places no new ones.
pub async fn control(
    pool: &PgPool,
    campaign: Uuid,
    control: Control,
) -> Result<Option<CampaignState>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM campaigns WHERE id = $1 FOR UPDATE")
            .bind(campaign)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(state) = state.map(|s| CampaignState::parse(&s)) else {
        return Ok(None);
    };
    use CampaignState::*;
    let next = match (control, state) {
        (_, Cancelled | Completed) => state,
        (Control::Pause, _) => Paused,
        (Control::Resume, _) => Running,
        (Control::Cancel, _) => Cancelled,
    };
    if next != state {
        set_state_tx(&mut tx, campaign, next).await?;
    }
    if next == Cancelled {
        sqlx::query(
            "UPDATE campaign_contacts SET state = 'cancelled'
             WHERE campaign_id = $1 AND state = 'pending'",
        )
        .bind(campaign)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(next))
}

/// The campaigns replicas dial for.
pub async fn running_campaigns(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM campaigns WHERE state = 'running' ORDER BY created_at")
        .fetch_all(pool)
        .await
}

/// A contact claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub attempt_id: i64,
    pub contact_id: i64,
    pub campaign_id: Uuid,
    pub agent_id: String,
    pub from: String,
    pub to: String,
    pub vars: Value,
    /// The campaign's calls-per-second cap (the replica's window of it).
    pub calls_per_second: f64,
    /// The moment the call is to be placed.
    pub dial_at: OffsetDateTime,
}

/// What a claim came to.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Place these calls, each at its moment; the campaign's next call is not before the
    /// moment given.
    Dial(Vec<Claimed>, OffsetDateTime),
    /// The pacers say the next call is not before this moment.
    WaitUntil(OffsetDateTime),
    /// As many calls as `max_concurrent` are up.
    AtCap,
    /// No contact is due (or the campaign is no longer running).
    Idle,
}

/// Claims the next due contacts of `campaign` that its caps allow within [`pacer::LEAD`] of
/// `now`, each with the moment its call is to be placed ([`pacer::slots`]), as many as the
/// concurrency cap has room for. `account` and `account_interval` are the account's shared
/// calls-per-second cap. One transaction claims them all.
pub async fn claim(
    pool: &PgPool,
    campaign: Uuid,
    account: &str,
    account_interval: std::time::Duration,
    now: OffsetDateTime,
) -> Result<Claim, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query(
        "SELECT agent_id, from_number, calls_per_second, max_concurrent, next_dial_at,
                hours_start, hours_end, time_zone
         FROM campaigns WHERE id = $1 AND state = 'running' FOR UPDATE",
    )
    .bind(campaign)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Claim::Idle);
    };
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM campaign_attempts WHERE campaign_id = $1 AND finished_at IS NULL",
    )
    .bind(campaign)
    .fetch_one(&mut *tx)
    .await?;
    let room = i64::from(row.get::<i32, _>("max_concurrent")) - open;
    if room <= 0 {
        return Ok(Claim::AtCap);
    }
    let account_next: OffsetDateTime = sqlx::query_scalar(
        "INSERT INTO dial_pacers (account, next_dial_at) VALUES ($1, $2)
         ON CONFLICT (account) DO UPDATE SET next_dial_at = dial_pacers.next_dial_at
         RETURNING next_dial_at",
    )
    .bind(account)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let calls_per_second: f64 = row.get("calls_per_second");
    let campaign_pace = pacer::Pace {
        next_at: row.get("next_dial_at"),
        interval: pacer::interval(calls_per_second),
    };
    let account_pace = pacer::Pace {
        next_at: account_next,
        interval: account_interval,
    };
    let most = usize::try_from(room).unwrap_or(0).min(pacer::MAX_BATCH);
    let slots = match pacer::slots(campaign_pace, account_pace, now, pacer::LEAD, most) {
        Slots::WaitUntil(at) => return Ok(Claim::WaitUntil(at)),
        Slots::Dial(slots) => slots,
    };
    let hours_start: Option<Time> = row.get("hours_start");
    let hours_end: Option<Time> = row.get("hours_end");
    let zone: String = row.get("time_zone");
    let mut contacts: Vec<(i64, String, Value)> = Vec::new();
    while contacts.len() < slots.len() {
        let wanted = (slots.len() - contacts.len()) as i64;
        let due = sqlx::query(
            "SELECT id, to_number, vars FROM campaign_contacts
             WHERE campaign_id = $1 AND state = 'pending' AND next_attempt_at <= $2
               AND ($3::time IS NULL OR (
                   CASE WHEN $3::time <= $4::time
                        THEN ($2 AT TIME ZONE COALESCE(time_zone, $5))::time >= $3::time
                         AND ($2 AT TIME ZONE COALESCE(time_zone, $5))::time < $4::time
                        ELSE ($2 AT TIME ZONE COALESCE(time_zone, $5))::time >= $3::time
                          OR ($2 AT TIME ZONE COALESCE(time_zone, $5))::time < $4::time
                   END))
             ORDER BY next_attempt_at, position
             LIMIT $6 FOR UPDATE SKIP LOCKED",
        )
        .bind(campaign)
        .bind(now)
        .bind(hours_start)
        .bind(hours_end)
        .bind(&zone)
        .bind(wanted)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            break;
        }
        let numbers: Vec<String> = due.iter().map(|c| c.get("to_number")).collect();
        // The list is checked when the call is about to be placed, not when the campaign was
        // created: a number added since is never dialed.
        let listed: Vec<String> =
            sqlx::query_scalar("SELECT number FROM do_not_call WHERE number = ANY($1::text[])")
                .bind(&numbers)
                .fetch_all(&mut *tx)
                .await?;
        let mut unlisted = Vec::with_capacity(due.len());
        let mut dnc = Vec::new();
        for c in &due {
            let (id, to): (i64, String) = (c.get("id"), c.get("to_number"));
            if listed.contains(&to) {
                dnc.push(id);
            } else {
                unlisted.push((id, to, c.get::<Value, _>("vars")));
            }
        }
        if !dnc.is_empty() {
            sqlx::query("UPDATE campaign_contacts SET state = 'dnc' WHERE id = ANY($1::bigint[])")
                .bind(&dnc)
                .execute(&mut *tx)
                .await?;
        }
        // Out of `pending` at once: this transaction's own locks do not hide them from the
        // next round of the loop.
        let ids: Vec<i64> = unlisted.iter().map(|c| c.0).collect();
        sqlx::query(
            "UPDATE campaign_contacts SET state = 'dialing', attempts = attempts + 1
             WHERE id = ANY($1::bigint[])",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        contacts.extend(unlisted);
    }
    if contacts.is_empty() {
        complete_if_done(&mut tx, campaign).await?;
        tx.commit().await?;
        return Ok(Claim::Idle);
    }
    let slots = &slots[..contacts.len()];
    let ids: Vec<i64> = contacts.iter().map(|c| c.0).collect();
    let attempts: std::collections::HashMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
        "INSERT INTO campaign_attempts (contact_id, campaign_id, dial_at)
         SELECT c.id, $2, c.dial_at FROM unnest($1::bigint[], $3::timestamptz[]) AS c(id, dial_at)
         RETURNING contact_id, id",
    )
    .bind(&ids)
    .bind(campaign)
    .bind(slots)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let last = *slots.last().unwrap_or(&now);
    let (campaign_next, account_next) = pacer::after(campaign_pace, account_pace, last);
    sqlx::query("UPDATE campaigns SET next_dial_at = $2 WHERE id = $1")
        .bind(campaign)
        .bind(campaign_next)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE dial_pacers SET next_dial_at = GREATEST(next_dial_at, $2) WHERE account = $1",
    )
    .bind(account)
    .bind(account_next)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let (agent_id, from): (String, String) = (row.get("agent_id"), row.get("from_number"));
    let claimed = contacts
        .into_iter()
        .zip(slots)
        .filter_map(|((contact_id, to, vars), dial_at)| {
            Some(Claimed {
                attempt_id: *attempts.get(&contact_id)?,
                contact_id,
                campaign_id: campaign,
                agent_id: agent_id.clone(),
                from: from.clone(),
                to,
                vars,
                calls_per_second,
                dial_at: *dial_at,
            })
        })
        .collect();
    Ok(Claim::Dial(claimed, campaign_next))
}

/// Marks a campaign with no contact left to dial completed.
async fn complete_if_done(
    tx: &mut Transaction<'_, Postgres>,
    campaign: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE campaigns SET state = 'completed'
         WHERE id = $1 AND state IN ('running', 'paused')
           AND NOT EXISTS (SELECT 1 FROM campaign_contacts
                           WHERE campaign_id = $1 AND state IN ('pending', 'dialing'))",
    )
    .bind(campaign)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Twilio took the call: the attempt is now known by its CallSid.
pub async fn record_call_sid(
    pool: &PgPool,
    attempt: i64,
    call_sid: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE campaign_attempts SET call_sid = $2 WHERE id = $1")
        .bind(attempt)
        .bind(call_sid)
        .execute(pool)
        .await?;
    Ok(())
}

/// The answering-machine verdict of a call; `false` if no attempt has that CallSid.
pub async fn record_answered_by(
    pool: &PgPool,
    call_sid: &str,
    answered_by: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE campaign_attempts SET answered_by = $2 WHERE call_sid = $1")
        .bind(call_sid)
        .bind(answered_by)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How an attempt is found when it ends.
#[derive(Debug, Clone, Copy)]
pub enum AttemptKey<'a> {
    Id(i64),
    CallSid(&'a str),
}

/// What finishing an attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The attempt ended with this result (now, not before).
    Now(CallResult),
    /// It had ended already (a repeated callback).
    Already,
    /// No attempt by that key (not a campaign's call, or its CallSid is not stored yet).
    Unknown,
    /// The call was answered but its answering-machine verdict has not come yet; nothing
    /// changed.
    AwaitingVerdict,
}

/// Ends an attempt: `status` is Twilio's final `CallStatus` (or `failed` when the create
/// request was refused); the contact is retried or done as its campaign's policy says. With
/// `await_verdict`, an answered call without its answering-machine verdict is left open (the
/// verdict can arrive after the call ended: a voicemail box hung up on).
pub async fn finish_attempt(
    pool: &PgPool,
    key: AttemptKey<'_>,
    status: &str,
    error: Option<&str>,
    await_verdict: bool,
    now: OffsetDateTime,
) -> Result<Finished, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let query = match key {
        AttemptKey::Id(id) => sqlx::query(
            "SELECT a.id, a.contact_id, a.campaign_id, a.answered_by, a.finished_at IS NOT NULL AS ended,
                    ct.attempts, c.retry, c.state
             FROM campaign_attempts a JOIN campaign_contacts ct ON ct.id = a.contact_id
                  JOIN campaigns c ON c.id = a.campaign_id
             WHERE a.id = $1 FOR UPDATE OF a, ct",
        )
        .bind(id),
        AttemptKey::CallSid(sid) => sqlx::query(
            "SELECT a.id, a.contact_id, a.campaign_id, a.answered_by, a.finished_at IS NOT NULL AS ended,
                    ct.attempts, c.retry, c.state
             FROM campaign_attempts a JOIN campaign_contacts ct ON ct.id = a.contact_id
                  JOIN campaigns c ON c.id = a.campaign_id
             WHERE a.call_sid = $1 FOR UPDATE OF a, ct",
        )
        .bind(sid),
    };
    let Some(row) = query.fetch_optional(&mut *tx).await? else {
        return Ok(Finished::Unknown);
    };
    if row.get::<bool, _>("ended") {
        return Ok(Finished::Already);
    }
    let answered_by: Option<String> = row.get("answered_by");
    if await_verdict && status == "completed" && answered_by.is_none() {
        return Ok(Finished::AwaitingVerdict);
    }
    let Some(result) = CallResult::from_twilio(status, answered_by.as_deref()) else {
        return Ok(Finished::Already);
    };
    let attempt_id: i64 = row.get("id");
    let contact_id: i64 = row.get("contact_id");
    let campaign: Uuid = row.get("campaign_id");
    sqlx::query(
        "UPDATE campaign_attempts SET result = $2, error = $3, finished_at = $4 WHERE id = $1",
    )
    .bind(attempt_id)
    .bind(result.as_str())
    .bind(error)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let policy: RetryPolicy = serde_json::from_value(row.get("retry")).unwrap_or_default();
    let attempts = u32::try_from(row.get::<i32, _>("attempts")).unwrap_or(0);
    let cancelled = CampaignState::parse(row.get("state")) == CampaignState::Cancelled;
    let (state, next_at) = match policy.next(result, attempts) {
        _ if cancelled => (ContactState::Cancelled, now),
        Next::RetryIn(delay) => (ContactState::Pending, now + delay),
        Next::Done => (ContactState::Done, now),
    };
    sqlx::query(
        "UPDATE campaign_contacts SET state = $2, result = $3, next_attempt_at = $4 WHERE id = $1",
    )
    .bind(contact_id)
    .bind(state.as_str())
    .bind(result.as_str())
    .bind(next_at)
    .execute(&mut *tx)
    .await?;
    complete_if_done(&mut tx, campaign).await?;
    tx.commit().await?;
    Ok(Finished::Now(result))
}

/// Whether `campaign` is running (placements check before repeating a refused request).
pub async fn is_running(pool: &PgPool, campaign: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $1 AND state = 'running')",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await
}

/// Gives back a claim whose call was never placed (its campaign was paused or cancelled while
/// Twilio kept answering 20429): the attempt is forgotten and the contact is pending again (or
/// cancelled with its campaign).
pub async fn release_unplaced(pool: &PgPool, attempt: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let contact: Option<i64> = sqlx::query_scalar(
        "DELETE FROM campaign_attempts WHERE id = $1 AND call_sid IS NULL AND finished_at IS NULL
         RETURNING contact_id",
    )
    .bind(attempt)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(contact) = contact {
        sqlx::query(
            "UPDATE campaign_contacts ct SET attempts = attempts - 1,
                state = CASE WHEN c.state = 'cancelled' THEN 'cancelled' ELSE 'pending' END
             FROM campaigns c WHERE ct.id = $1 AND c.id = ct.campaign_id",
        )
        .bind(contact)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether some attempt is still waiting for Twilio's answer to its create request (so a
/// status of an unknown CallSid may be one of ours, arriving before the answer was stored).
pub async fn awaiting_call_sids(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM campaign_attempts WHERE call_sid IS NULL AND finished_at IS NULL)",
    )
    .fetch_one(pool)
    .await
}

/// Ends attempts whose create request never got an answer stored before `before` (their
/// replica died between the claim and Twilio's answer): they count as failed, so the
/// concurrency cap is not held forever.
pub async fn expire_unplaced(
    pool: &PgPool,
    before: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    let stale: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM campaign_attempts
         WHERE call_sid IS NULL AND finished_at IS NULL AND created_at < $1",
    )
    .bind(before)
    .fetch_all(pool)
    .await?;
    let mut expired = 0;
    for id in stale {
        let finished = finish_attempt(
            pool,
            AttemptKey::Id(id),
            "failed",
            Some("the dialer stopped before Twilio answered"),
            false,
            now,
        )
        .await?;
        expired += u64::from(matches!(finished, Finished::Now(_)));
    }
    Ok(expired)
}

/// Adds numbers to the do-not-call list.
pub async fn add_dnc(pool: &PgPool, numbers: &[String], reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO do_not_call (number, reason) SELECT n, $2 FROM unnest($1::text[]) AS n
         ON CONFLICT (number) DO NOTHING",
    )
    .bind(numbers)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a number from the do-not-call list; `false` if it was not on it.
pub async fn remove_dnc(pool: &PgPool, number: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM do_not_call WHERE number = $1")
        .bind(number)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The do-not-call list.
pub async fn list_dnc(pool: &PgPool) -> Result<Value, sqlx::Error> {
    let rows = sqlx::query("SELECT number, reason, added_at FROM do_not_call ORDER BY number")
        .fetch_all(pool)
        .await?;
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "number": r.get::<String, _>("number"),
                    "reason": r.get::<String, _>("reason"),
                    "added_at": rfc3339(r.get("added_at")),
                })
            })
            .collect(),
    ))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn campaign_json(r: &sqlx::postgres::PgRow) -> Value {
    let hours = match (
        r.get::<Option<Time>, _>("hours_start"),
        r.get::<Option<Time>, _>("hours_end"),
    ) {
        (Some(start), Some(end)) => json!({
            "start": format!("{:02}:{:02}", start.hour(), start.minute()),
            "end": format!("{:02}:{:02}", end.hour(), end.minute()),
        }),
        _ => Value::Null,
    };
    json!({
        "id": r.get::<Uuid, _>("id"),
        "name": r.get::<String, _>("name"),
        "agent_id": r.get::<String, _>("agent_id"),
        "from": r.get::<String, _>("from_number"),
        "calls_per_second": r.get::<f64, _>("calls_per_second"),
        "max_concurrent": r.get::<i32, _>("max_concurrent"),
        "state": r.get::<String, _>("state"),
        "retry": r.get::<Value, _>("retry"),
        "calling_hours": hours,
        "time_zone": r.get::<String, _>("time_zone"),
        "created_at": rfc3339(r.get("created_at")),
        "contacts_total": r.get::<i64, _>("total"),
        "contacts_done": r.get::<i64, _>("done"),
        "contacts_pending": r.get::<i64, _>("pending"),
        "progress": progress(r),
    })
}

/// A campaign's progress by contact: how many were dialed at least once, how many are at each
/// result of their latest attempt, on the do-not-call list, and still to be dialed (pending or
/// being dialed). Every result is named, with 0 when none.
fn progress(r: &sqlx::postgres::PgRow) -> Value {
    let results: Option<Value> = r.get("results");
    let mut progress = serde_json::Map::new();
    progress.insert("dialed".into(), json!(r.get::<i64, _>("dialed")));
    for result in CallResult::ALL {
        let n = results
            .as_ref()
            .and_then(|counts| counts.get(result.as_str()))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        progress.insert(result.as_str().into(), json!(n));
    }
    progress.insert("dnc".into(), json!(r.get::<i64, _>("dnc")));
    progress.insert("pending".into(), json!(r.get::<i64, _>("pending")));
    Value::Object(progress)
}

/// A campaign with its contacts counted in one pass over them.
const CAMPAIGN_SELECT: &str = "SELECT c.id, c.name, c.agent_id, c.from_number, c.calls_per_second,
    c.max_concurrent, c.state, c.retry, c.hours_start, c.hours_end, c.time_zone, c.created_at,
    n.total, n.done, n.pending, n.dialed, n.dnc,
    (SELECT jsonb_object_agg(result, count) FROM (SELECT result, count(*) FROM campaign_contacts
        WHERE campaign_id = c.id AND result IS NOT NULL GROUP BY result) r) AS results
    FROM campaigns c CROSS JOIN LATERAL (SELECT count(*) AS total,
        count(*) FILTER (WHERE state IN ('done', 'dnc', 'cancelled')) AS done,
        count(*) FILTER (WHERE state IN ('pending', 'dialing')) AS pending,
        count(*) FILTER (WHERE attempts > 0) AS dialed,
        count(*) FILTER (WHERE state = 'dnc') AS dnc
        FROM campaign_contacts WHERE campaign_id = c.id) n";

/// Every campaign, newest first, with its contact counts.
pub async fn list_campaigns(pool: &PgPool) -> Result<Value, sqlx::Error> {
    let sql = format!("{CAMPAIGN_SELECT} ORDER BY c.created_at DESC");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    Ok(Value::Array(rows.iter().map(campaign_json).collect()))
}

/// One campaign with every contact and each contact's attempts; `None` if there is none.
pub async fn campaign(pool: &PgPool, id: Uuid) -> Result<Option<Value>, sqlx::Error> {
    let sql = format!("{CAMPAIGN_SELECT} WHERE c.id = $1");
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let mut campaign = campaign_json(&row);
    let contacts = contacts(pool, id).await?;
    campaign["contacts"] = Value::Array(contacts.into_iter().map(|c| c.json()).collect());
    Ok(Some(campaign))
}

/// One contact with its attempts, for the API and the CSV export.
#[derive(Debug, Clone)]
pub struct ContactView {
    pub position: i32,
    pub to: String,
    pub vars: Value,
    pub time_zone: Option<String>,
    pub state: String,
    pub result: Option<String>,
    pub next_attempt_at: OffsetDateTime,
    pub attempts: Vec<AttemptView>,
}

/// One attempt.
#[derive(Debug, Clone)]
pub struct AttemptView {
    pub call_sid: Option<String>,
    pub dial_at: OffsetDateTime,
    pub answered_by: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<OffsetDateTime>,
}

impl ContactView {
    fn json(&self) -> Value {
        json!({
            "position": self.position,
            "to": self.to,
            "vars": self.vars,
            "time_zone": self.time_zone,
            "state": self.state,
            "result": self.result,
            "next_attempt_at": rfc3339(self.next_attempt_at),
            "attempts": self.attempts.iter().map(|a| json!({
                "call_sid": a.call_sid,
                "dial_at": rfc3339(a.dial_at),
                "answered_by": a.answered_by,
                "result": a.result,
                "error": a.error,
                "finished_at": a.finished_at.map(rfc3339),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A campaign's contacts in order, each with its attempts in order.
pub async fn contacts(pool: &PgPool, campaign: Uuid) -> Result<Vec<ContactView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, position, to_number, vars, time_zone, state, result, next_attempt_at
         FROM campaign_contacts WHERE campaign_id = $1 ORDER BY position",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await?;
    let attempts = sqlx::query(
        "SELECT contact_id, call_sid, dial_at, answered_by, result, error, finished_at
         FROM campaign_attempts WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await?;
    let mut by_contact: std::collections::HashMap<i64, Vec<AttemptView>> = Default::default();
    for a in &attempts {
        by_contact
            .entry(a.get("contact_id"))
            .or_default()
            .push(AttemptView {
                call_sid: a.get("call_sid"),
                dial_at: a.get("dial_at"),
                answered_by: a.get("answered_by"),
                result: a.get("result"),
                error: a.get("error"),
                finished_at: a.get("finished_at"),
            });
    }
    Ok(rows
        .iter()
        .map(|r| ContactView {
            position: r.get("position"),
            to: r.get("to_number"),
            vars: r.get("vars"),
            time_zone: r.get("time_zone"),
            state: r.get("state"),
            result: r.get("result"),
            next_attempt_at: r.get("next_attempt_at"),
            attempts: by_contact
                .remove(&r.get::<i64, _>("id"))
                .unwrap_or_default(),
        })
        .collect())
}
