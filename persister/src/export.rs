//! The CSV export of the calls list: `GET /api/sessions.csv` with the list's filters, every
//! matching call (no paging), newest first.
//!
//! Fields are quoted as RFC 4180 says (a field holding a comma, quote or line break is
//! enclosed in quotes, its quotes doubled), lines end in CRLF. A text field a spreadsheet would
//! run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`, unless it
//! is a number or a phone number such as `+15551234567`: outcomes and agent ids can come from
//! outside. The rows are read a page at a time and streamed, so a large export holds one page
//! in memory.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use crate::api::{ApiError, ApiState, filter_params};
use crate::sessions::{self, Cursor, Filter, MAX_LIMIT, SessionSummary};

/// The route of the export.
pub const CSV_PATH: &str = "/api/sessions.csv";

/// The columns, in order.
pub const COLUMNS: [&str; 14] = [
    "call_sid",
    "started_at",
    "ended_at",
    "agent_id",
    "direction",
    "from",
    "to",
    "outcome",
    "end_reason",
    "rejected_reason",
    "duration_ms",
    "cost_usd",
    "twilio_status",
    "twilio_duration_seconds",
];

pub(crate) async fn calls_csv(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let filter = filter_params(&params)?;
    // The first page is read before answering, so a database that is down is a 503, not an
    // empty file.
    let first = sessions::page(&state.pool, &filter, None, MAX_LIMIT).await?;
    let mut head = record(COLUMNS.iter().copied());
    head.push_str(&rows(&first.0));
    let pool = state.pool.clone();
    let rest = futures::stream::unfold(
        (pool, filter, first.1),
        |(pool, filter, cursor): (sqlx::PgPool, Filter, Option<Cursor>)| async move {
            let cursor = cursor?;
            match sessions::page(&pool, &filter, Some(&cursor), MAX_LIMIT).await {
                Ok((page, next)) => Some((Ok(Bytes::from(rows(&page))), (pool, filter, next))),
                Err(error) => {
                    // The status is sent already: cutting the body short tells the client.
                    tracing::warn!(%error, "CSV export failed part way");
                    metrics::counter!(crate::metrics::API_DB_ERRORS).increment(1);
                    Some((Err(std::io::Error::other(error)), (pool, filter, None)))
                }
            }
        },
    );
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(rest);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"calls.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn rows(page: &[SessionSummary]) -> String {
    let mut out = String::new();
    for s in page {
        let duration = s.duration_ms.map(|d| d.to_string());
        let cost = s.cost_usd.map(|c| c.to_string());
        let billed = s.twilio_duration_seconds.map(|d| d.to_string());
        let text = |v: &Option<String>| v.as_deref().unwrap_or_default().to_owned();
        out.push_str(&record(
            [
                s.call_sid.clone(),
                text(&s.started_at),
                text(&s.ended_at),
                text(&s.agent_id),
                text(&s.direction),
                text(&s.from),
                text(&s.to),
                text(&s.outcome),
                text(&s.end_reason),
                text(&s.rejected_reason),
                text(&duration),
                text(&cost),
                text(&s.twilio_status),
                text(&billed),
            ]
            .iter()
            .map(String::as_str),
        ));
    }
    out
}

/// One CSV line (CRLF-terminated) of `fields`.
pub fn record<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    let mut line = String::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&field_text(field));
    }
    line.push_str("\r\n");
    line
}

/// A field as written: defused if a spreadsheet would run it, quoted if it needs to be.
pub fn field_text(field: &str) -> String {
    let defused = if runs_as_formula(field) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if defused.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

fn runs_as_formula(field: &str) -> bool {
    let Some(first) = field.chars().next() else {
        return false;
    };
    if !matches!(first, '=' | '+' | '-' | '@' | '\t' | '\r') {
        return false;
    }
    // `+15551234567` and `-1.5` are data, not formulas.
    let rest = &field[1..];
    let numeric = matches!(first, '+' | '-')
        && !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
        && rest.chars().filter(|&c| c == '.').count() <= 1;
    !numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(
            record(["a", "b,c", "say \"hi\"", "two\nlines", ""]),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn formulas_are_defused_but_numbers_and_phone_numbers_are_kept() {
        assert_eq!(field_text("+15551234567"), "+15551234567");
        assert_eq!(field_text("-1.5"), "-1.5");
        assert_eq!(
            field_text("=HYPERLINK(\"x\")"),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(field_text("+1+cmd"), "'+1+cmd");
        assert_eq!(field_text("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field_text("-"), "'-");
        assert_eq!(field_text("front-desk"), "front-desk");
    }
}
