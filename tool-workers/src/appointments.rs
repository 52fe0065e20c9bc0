//! `check_availability` and `book_appointment`: the demo clinic's schedule in Postgres.
//!
//! Both are typed tools ([`Tool::typed`]): the argument structs below are the schemas the model
//! sees. Callers speak in the clinic's local time (`clinic_settings.timezone`), so dates and
//! times in arguments are local, and every slot is returned both as a local `time` and as an
//! RFC 3339 `start` carrying the local offset, which the model can pass back unchanged.
//!
//! The schedule is weekly opening hours (`clinic_hours`) cut into fixed slots; a slot is free when
//! no row of `appointments` starts at it. Double booking is refused by a unique constraint
//! (`slot_taken`), so two calls racing for one slot cannot both win, and a booking remembers the
//! invocation (`call_sid`, `call_id`) that made it, so a redelivered request returns that booking
//! instead of failing on its own slot or booking twice.
//!
//! A booking is always in the caller's name: the patient's number is the number the call comes
//! from ([`ToolContext::caller_number`]), not an argument, so a caller cannot book (or learn the
//! bookings of) somebody else. A caller in the `customers` directory is booked under the name on
//! their record; the name the model passes only names a caller the clinic does not know yet. A
//! call from a withheld number cannot book (`no_caller_number`).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::tool::{Tool, ToolContext, ToolDefinitionError, ToolFailure};

/// The availability tool's name.
pub const CHECK_AVAILABILITY: &str = "check_availability";
/// The booking tool's name.
pub const BOOK_APPOINTMENT: &str = "book_appointment";
/// Error code: someone else has the slot.
pub const SLOT_TAKEN: &str = "slot_taken";
/// Error code: the clinic offers no slot at that time (closed, misaligned or in the past).
pub const NO_SUCH_SLOT: &str = "no_such_slot";
/// Error code: the call has no phone number to book under (withheld, or not a phone call).
pub const NO_CALLER_NUMBER: &str = "no_caller_number";

/// A part of the day the caller prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeOfDay {
    /// Before 12:00.
    Morning,
    /// From 12:00 to 17:00.
    Afternoon,
    /// From 17:00.
    Evening,
}

impl TimeOfDay {
    fn contains(self, t: Time) -> bool {
        match self {
            Self::Morning => t.hour() < 12,
            Self::Afternoon => (12..17).contains(&t.hour()),
            Self::Evening => t.hour() >= 17,
        }
    }
}

/// Arguments of `check_availability`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AvailabilityArgs {
    /// The day to check, YYYY-MM-DD.
    pub date: String,
    /// Only list slots in this part of the day, if the caller has a preference.
    #[serde(default)]
    pub time_of_day: Option<TimeOfDay>,
}

/// Arguments of `book_appointment`. There is no phone number among them: the booking is for the
/// number the call comes from.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct BookingArgs {
    /// The caller's name, if they gave it (a caller known to the clinic is booked under the
    /// name on their record).
    #[serde(default)]
    pub name: Option<String>,
    /// The slot's start exactly as check_availability returned it (RFC 3339). Alternatively give
    /// `date` and `time`.
    #[serde(default)]
    pub start: Option<String>,
    /// The day, YYYY-MM-DD (with `time`, instead of `start`).
    #[serde(default)]
    pub date: Option<String>,
    /// The clinic's local start time, HH:MM in 24-hour form (with `date`).
    #[serde(default)]
    pub time: Option<String>,
}

/// `check_availability`, answering from `pool`.
pub fn check_availability(pool: PgPool) -> Result<Tool, ToolDefinitionError> {
    Tool::typed(
        CHECK_AVAILABILITY,
        "List the free appointment slots of the clinic on a given day, optionally only in the \
         morning, afternoon or evening. Returns open=false when the clinic is closed that day.",
        move |_ctx: ToolContext, args: AvailabilityArgs| {
            let pool = pool.clone();
            async move { availability(&pool, &args).await }
        },
    )
}

/// `book_appointment`, writing to `pool`.
pub fn book_appointment(pool: PgPool) -> Result<Tool, ToolDefinitionError> {
    Tool::typed(
        BOOK_APPOINTMENT,
        "Book an appointment slot for the caller (always under the number they are calling \
         from). Use a slot from check_availability. Fails with slot_taken if someone else has \
         the slot.",
        move |ctx: ToolContext, args: BookingArgs| {
            let pool = pool.clone();
            async move {
                let booked = book(&pool, &ctx, &args).await?;
                ctx.set_outcome("booked");
                Ok(booked)
            }
        },
    )
}

fn db_down(error: sqlx::Error) -> ToolFailure {
    tracing::warn!(%error, "clinic schedule query failed");
    ToolFailure::unavailable("the clinic schedule is unavailable right now")
}

async fn availability(pool: &PgPool, args: &AvailabilityArgs) -> Result<Value, ToolFailure> {
    let date = parse_date(&args.date)?;
    let (timezone, opens, closes): (String, Option<Time>, Option<Time>) = sqlx::query_as(
        "SELECT s.timezone, h.opens, h.closes FROM clinic_settings s \
         LEFT JOIN clinic_hours h ON h.weekday = EXTRACT(DOW FROM $1::date)",
    )
    .bind(date)
    .fetch_one(pool)
    .await
    .map_err(db_down)?;
    let (Some(opens), Some(closes)) = (opens, closes) else {
        return Ok(json!({"date": args.date, "timezone": timezone, "open": false, "slots": []}));
    };
    let rows: Vec<(PrimitiveDateTime, OffsetDateTime)> = sqlx::query_as(
        "SELECT g.local_ts, g.local_ts AT TIME ZONE s.timezone \
         FROM clinic_settings s \
         JOIN clinic_hours h ON h.weekday = EXTRACT(DOW FROM $1::date) \
         CROSS JOIN LATERAL generate_series( \
             $1::date + h.opens, \
             $1::date + h.closes - make_interval(mins => s.slot_minutes), \
             make_interval(mins => s.slot_minutes)) AS g(local_ts) \
         WHERE g.local_ts AT TIME ZONE s.timezone > now() \
           AND NOT EXISTS (SELECT 1 FROM appointments a \
                           WHERE a.starts_at = g.local_ts AT TIME ZONE s.timezone) \
         ORDER BY g.local_ts",
    )
    .bind(date)
    .fetch_all(pool)
    .await
    .map_err(db_down)?;
    let slots: Vec<Value> = rows
        .into_iter()
        .filter(|(local, _)| args.time_of_day.is_none_or(|p| p.contains(local.time())))
        .map(|(local, start)| {
            json!({"start": rfc3339_local(local, start), "time": hh_mm(local.time())})
        })
        .collect();
    Ok(json!({
        "date": args.date,
        "timezone": timezone,
        "open": true,
        "opens": hh_mm(opens),
        "closes": hh_mm(closes),
        "slots": slots,
    }))
}

async fn book(pool: &PgPool, ctx: &ToolContext, args: &BookingArgs) -> Result<Value, ToolFailure> {
    let phone = ctx.caller_number().ok_or_else(|| {
        ToolFailure::new(
            NO_CALLER_NUMBER,
            "the caller's number is withheld, so the clinic cannot book for them; offer to \
             transfer them to a person",
        )
    })?;
    let name = args
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let starts_at = match (&args.start, &args.date, &args.time) {
        (Some(start), _, _) => OffsetDateTime::parse(start, &Rfc3339).map_err(|_| {
            ToolFailure::invalid_arguments(format!(
                "`start` must be an RFC 3339 time such as 2030-06-03T09:00:00-04:00, got {start:?}"
            ))
        })?,
        (None, Some(date), Some(time)) => {
            let local = PrimitiveDateTime::new(parse_date(date)?, parse_time(time)?);
            let (at,): (OffsetDateTime,) =
                sqlx::query_as("SELECT $1::timestamp AT TIME ZONE timezone FROM clinic_settings")
                    .bind(local)
                    .fetch_one(pool)
                    .await
                    .map_err(db_down)?;
            at
        }
        _ => {
            return Err(ToolFailure::invalid_arguments(
                "give the slot as `start`, or as `date` and `time`",
            ));
        }
    };

    // Is it a slot of the schedule, and still ahead?
    let slot: Option<(bool,)> = sqlx::query_as(
        "WITH t AS (SELECT ($1::timestamptz AT TIME ZONE s.timezone) AS local_ts, s.slot_minutes \
                    FROM clinic_settings s) \
         SELECT $1::timestamptz > now() FROM t \
         JOIN clinic_hours h ON h.weekday = EXTRACT(DOW FROM t.local_ts) \
         WHERE t.local_ts::time >= h.opens AND t.local_ts::time < h.closes \
           AND t.local_ts::time + make_interval(mins => t.slot_minutes) <= h.closes \
           AND EXTRACT(EPOCH FROM (t.local_ts::time - h.opens))::bigint \
               % (t.slot_minutes * 60) = 0",
    )
    .bind(starts_at)
    .fetch_optional(pool)
    .await
    .map_err(db_down)?;
    match slot {
        Some((true,)) => {}
        Some((false,)) => {
            return Err(ToolFailure::new(
                NO_SUCH_SLOT,
                "that slot is in the past; use check_availability for free slots",
            ));
        }
        None => {
            return Err(ToolFailure::new(
                NO_SUCH_SLOT,
                "the clinic has no appointment slot at that time; use check_availability",
            ));
        }
    }

    type Booking = (
        i64,
        PrimitiveDateTime,
        OffsetDateTime,
        String,
        Option<String>,
    );
    let inserted: Result<Option<Booking>, sqlx::Error> = sqlx::query_as(
        "INSERT INTO appointments (starts_at, phone, name, call_sid, call_id) \
         VALUES ($1, $2, COALESCE((SELECT name FROM customers WHERE phone = $2), $3), \
                 NULLIF($4, ''), NULLIF($5, '')) \
         ON CONFLICT (call_sid, call_id) DO NOTHING \
         RETURNING id, starts_at AT TIME ZONE (SELECT timezone FROM clinic_settings), \
                   starts_at, phone, name",
    )
    .bind(starts_at)
    .bind(phone)
    .bind(name)
    .bind(&ctx.call_sid)
    .bind(&ctx.call_id)
    .fetch_optional(pool)
    .await;
    let booking = match inserted {
        Ok(Some(booking)) => booking,
        // This invocation booked before (a redelivery): answer with that booking.
        Ok(None) => sqlx::query_as::<_, Booking>(
            "SELECT id, starts_at AT TIME ZONE (SELECT timezone FROM clinic_settings), \
                    starts_at, phone, name \
             FROM appointments WHERE call_sid = $1 AND call_id = $2",
        )
        .bind(&ctx.call_sid)
        .bind(&ctx.call_id)
        .fetch_one(pool)
        .await
        .map_err(db_down)?,
        Err(error)
            if error
                .as_database_error()
                .and_then(|e| e.constraint())
                .is_some_and(|c| c == "appointments_slot_taken") =>
        {
            return Err(ToolFailure::new(
                SLOT_TAKEN,
                "that slot has just been taken; offer the caller another one",
            ));
        }
        Err(error) => return Err(db_down(error)),
    };
    let (id, local, start, phone, name) = booking;
    Ok(json!({
        "booked": true,
        "appointment_id": id,
        "start": rfc3339_local(local, start),
        "date": local.date().to_string(),
        "time": hh_mm(local.time()),
        "phone": phone,
        "name": name,
    }))
}

/// `start` written with the offset of the clinic's local time `local`.
fn rfc3339_local(local: PrimitiveDateTime, start: OffsetDateTime) -> String {
    let offset_seconds = (local.assume_utc() - start).whole_seconds();
    let offset = i32::try_from(offset_seconds)
        .ok()
        .and_then(|s| UtcOffset::from_whole_seconds(s).ok())
        .unwrap_or(UtcOffset::UTC);
    start
        .to_offset(offset)
        .format(&Rfc3339)
        .unwrap_or_else(|_| start.to_string())
}

fn hh_mm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// `YYYY-MM-DD`.
fn parse_date(text: &str) -> Result<Date, ToolFailure> {
    let bad = || {
        ToolFailure::invalid_arguments(format!(
            "dates are YYYY-MM-DD, like 2030-06-03; got {text:?}"
        ))
    };
    let mut parts = text.trim().splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (y, m, d): (i32, u8, u8) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let month = Month::try_from(m).map_err(|_| bad())?;
    Date::from_calendar_date(y, month, d).map_err(|_| bad())
}

/// `HH:MM` (24-hour).
fn parse_time(text: &str) -> Result<Time, ToolFailure> {
    let bad = || {
        ToolFailure::invalid_arguments(format!(
            "times are HH:MM in 24-hour form, like 14:30; got {text:?}"
        ))
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::from_hms(h, m, 0).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_and_times() {
        assert_eq!(
            parse_date("2030-06-03").unwrap(),
            Date::from_calendar_date(2030, Month::June, 3).unwrap()
        );
        for bad in ["2030-13-01", "2030-02-30", "June 3", "", "2030-06"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("14:30").unwrap(),
            Time::from_hms(14, 30, 0).unwrap()
        );
        for bad in ["25:00", "2pm", "14"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preferences_split_the_day() {
        let at = |h| Time::from_hms(h, 0, 0).unwrap();
        assert!(TimeOfDay::Morning.contains(at(9)));
        assert!(!TimeOfDay::Morning.contains(at(12)));
        assert!(TimeOfDay::Afternoon.contains(at(16)));
        assert!(TimeOfDay::Evening.contains(at(17)));
    }

    #[tokio::test]
    async fn schemas_are_object_schemas_with_the_right_required_fields() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/unused")
            .unwrap();
        let check = check_availability(pool.clone()).unwrap();
        assert_eq!(check.parameters()["required"], json!(["date"]));
        let book = book_appointment(pool).unwrap();
        // Whose booking it is comes from the call, never from the model.
        assert!(book.parameters()["properties"].get("phone").is_none());
        assert!(book.parameters()["properties"]["start"].is_object());
        let required = book.parameters().get("required").cloned();
        assert!(
            required.is_none() || required == Some(json!([])),
            "{required:?}"
        );
    }
}
