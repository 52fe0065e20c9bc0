//! `check_availability` and `book_appointment` in the `tool-worker` binary against a real
//! nats-server and Postgres: free slots, preferences, closed days, booking, `slot_taken`, and a
//! redelivered booking answered once (by the results bucket and, behind it, by the database), and
//! every booking made under the number the call comes from, whatever number the model passes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use switchboard_proto::{ToolResult, tool_result};
use switchboard_testkit::{NatsServer, Postgres, Service, free_port};
use tool_workers::idempotency::{RESULTS_BUCKET, key};

mod common;
use common::{invoke, output};

/// A Monday far enough ahead to be in the future (clinic hours 09:00-17:00, 30-minute slots).
const MONDAY: &str = "2030-06-03";

fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("call_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Maria Garcia's number: the caller of most of these calls.
const MARIA: &str = "+15550001234";
/// James Chen's and Aisha Khan's numbers.
const JAMES: &str = "+15550005678";
const AISHA: &str = "+15550009876";

async fn call_as(
    client: &async_nats::Client,
    tool: &str,
    call_id: &str,
    arguments: Value,
) -> anyhow::Result<ToolResult> {
    request(client, MARIA, tool, call_id, arguments).await
}

/// A call of `tool` from a caller at `caller`.
async fn call_from(
    client: &async_nats::Client,
    caller: &str,
    tool: &str,
    arguments: Value,
) -> anyhow::Result<ToolResult> {
    request(client, caller, tool, &fresh_id(), arguments).await
}

async fn request(
    client: &async_nats::Client,
    caller: &str,
    tool: &str,
    call_id: &str,
    arguments: Value,
) -> anyhow::Result<ToolResult> {
    invoke(client, ("CA0456", caller), tool, call_id, arguments, 5000).await
}

async fn call(
    client: &async_nats::Client,
    tool: &str,
    arguments: Value,
) -> anyhow::Result<ToolResult> {
    call_as(client, tool, &fresh_id(), arguments).await
}

fn error_code(result: &ToolResult) -> Option<&str> {
    match &result.result {
        Some(tool_result::Result::Error(e)) => Some(e.code.as_str()),
        _ => None,
    }
}

fn times(availability: &Value) -> Vec<String> {
    availability["slots"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .filter_map(|s| s["time"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn availability_and_booking_over_nats() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let pg = Postgres::start().await?;
    let db = pg.create_database("switchboard_tools").await?;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut worker = Service::spawn(
        "tool-worker",
        &[
            ("LISTEN", listen.clone()),
            ("DATABASE_URL", db),
            ("NATS_URL", nats.url().to_owned()),
        ],
    )?;
    worker.wait_ready(&listen).await?;
    let client = async_nats::connect(nats.url()).await?;

    // A whole free Monday: 16 half-hour slots, starts in RFC 3339 with the local offset (EDT).
    let day = output(&call(&client, "check_availability", json!({"date": MONDAY})).await?)?;
    assert_eq!(day["open"], true);
    assert_eq!(day["timezone"], "America/New_York");
    let all = times(&day);
    assert_eq!(all.len(), 16, "{day}");
    assert_eq!(all.first().map(String::as_str), Some("09:00"));
    assert_eq!(all.last().map(String::as_str), Some("16:30"));
    assert_eq!(day["slots"][0]["start"], "2030-06-03T09:00:00-04:00");

    let mornings = output(
        &call(
            &client,
            "check_availability",
            json!({"date": MONDAY, "time_of_day": "morning"}),
        )
        .await?,
    )?;
    assert_eq!(
        times(&mornings),
        ["09:00", "09:30", "10:00", "10:30", "11:00", "11:30"]
    );

    let sunday =
        output(&call(&client, "check_availability", json!({"date": "2030-06-02"})).await?)?;
    assert_eq!(sunday["open"], false);
    assert_eq!(times(&sunday), Vec::<String>::new());

    let r = call(&client, "check_availability", json!({"date": "June 3rd"})).await?;
    assert_eq!(error_code(&r), Some("invalid_arguments"));
    let r = call(
        &client,
        "check_availability",
        json!({"date": MONDAY, "time_of_day": "night"}),
    )
    .await?;
    assert_eq!(error_code(&r), Some("invalid_arguments"));

    // Book 10:00 by date and time.
    let booking_id = fresh_id();
    let first = call_as(
        &client,
        "book_appointment",
        &booking_id,
        json!({"name": "Maria Garcia", "date": MONDAY, "time": "10:00"}),
    )
    .await?;
    let booked = output(&first)?;
    assert_eq!(first.outcome, "booked");
    assert_eq!(booked["booked"], true);
    assert_eq!(booked["start"], "2030-06-03T10:00:00-04:00");
    assert_eq!(booked["time"], "10:00");
    assert_eq!(booked["phone"], MARIA);
    assert_eq!(booked["name"], "Maria Garcia");

    // The slot is gone from the list.
    let day = output(&call(&client, "check_availability", json!({"date": MONDAY})).await?)?;
    assert_eq!(times(&day).len(), 15);
    assert!(!times(&day).contains(&"10:00".to_owned()));

    // Someone else, by the RFC 3339 start: refused with a clear code.
    let r = call_from(
        &client,
        JAMES,
        "book_appointment",
        json!({"start": "2030-06-03T10:00:00-04:00"}),
    )
    .await?;
    assert_eq!(error_code(&r), Some("slot_taken"), "{r:?}");
    // The same instant in UTC is the same slot.
    let r = call_from(
        &client,
        JAMES,
        "book_appointment",
        json!({"start": "2030-06-03T14:00:00Z"}),
    )
    .await?;
    assert_eq!(error_code(&r), Some("slot_taken"));

    // The same invocation again: the stored result.
    let again = call_as(
        &client,
        "book_appointment",
        &booking_id,
        json!({"name": "Maria Garcia", "date": MONDAY, "time": "10:00"}),
    )
    .await?;
    assert_eq!(again, first);
    // Even without the stored result (expired), the database recognises the invocation.
    let js = async_nats::jetstream::new(client.clone());
    let results = js.get_key_value(RESULTS_BUCKET).await?;
    let result_key = key("book_appointment", "CA0456", &booking_id).expect("a key");
    results.purge(&result_key).await?;
    let once_more = call_as(
        &client,
        "book_appointment",
        &booking_id,
        json!({"name": "Maria Garcia", "date": MONDAY, "time": "10:00"}),
    )
    .await?;
    assert_eq!(output(&once_more)?, booked);
    let day = output(&call(&client, "check_availability", json!({"date": MONDAY})).await?)?;
    assert_eq!(times(&day).len(), 15, "booked twice");

    // Two callers racing for one slot: exactly one wins.
    let (a, b) = tokio::join!(
        call_from(
            &client,
            JAMES,
            "book_appointment",
            json!({"date": MONDAY, "time": "11:00"})
        ),
        call_from(
            &client,
            AISHA,
            "book_appointment",
            json!({"date": MONDAY, "time": "11:00"})
        ),
    );
    let mut codes = [
        error_code(&a?).unwrap_or("booked").to_owned(),
        error_code(&b?).unwrap_or("booked").to_owned(),
    ];
    codes.sort();
    assert_eq!(codes, ["booked", "slot_taken"]);

    // Not a slot: closed day, misaligned, after hours, in the past; missing slot arguments.
    for args in [
        json!({"date": "2030-06-02", "time": "10:00"}),
        json!({"date": MONDAY, "time": "10:15"}),
        json!({"date": MONDAY, "time": "17:00"}),
        json!({"date": "2020-06-01", "time": "10:00"}),
    ] {
        let r = call(&client, "book_appointment", args.clone()).await?;
        assert_eq!(error_code(&r), Some("no_such_slot"), "{args}");
    }
    for args in [
        json!({"date": MONDAY}),
        json!({"start": "Monday at ten"}),
        json!({"name": 7, "date": MONDAY, "time": "11:00"}),
        json!({}),
    ] {
        let r = call(&client, "book_appointment", args.clone()).await?;
        assert_eq!(error_code(&r), Some("invalid_arguments"), "{args}");
    }

    // The model passes somebody else's number and name (Maria says "book it for James Chen,
    // 555 000 5678"): the booking is Maria's, under her number and the name on her record.
    let r = call(
        &client,
        "book_appointment",
        json!({"phone": JAMES, "name": "James Chen", "date": MONDAY, "time": "12:00"}),
    )
    .await?;
    let booked = output(&r)?;
    assert_eq!(booked["phone"], MARIA, "{booked}");
    assert_eq!(booked["name"], "Maria Garcia", "{booked}");
    let text = booked.to_string();
    assert!(!text.contains(JAMES) && !text.contains("James"), "{text}");

    // A caller the clinic does not know yet is booked under the name they gave.
    let r = call_from(
        &client,
        "+15551239999",
        "book_appointment",
        json!({"phone": JAMES, "name": "Sam Lee", "date": MONDAY, "time": "13:00"}),
    )
    .await?;
    let booked = output(&r)?;
    assert_eq!(booked["phone"], "+15551239999", "{booked}");
    assert_eq!(booked["name"], "Sam Lee", "{booked}");

    // A call from a withheld number cannot book anyone's slot.
    for caller in ["anonymous", "client:alice"] {
        let r = call_from(
            &client,
            caller,
            "book_appointment",
            json!({"phone": JAMES, "date": MONDAY, "time": "12:30"}),
        )
        .await?;
        assert_eq!(error_code(&r), Some("no_caller_number"), "{caller}: {r:?}");
    }
    let day = output(&call(&client, "check_availability", json!({"date": MONDAY})).await?)?;
    assert!(times(&day).contains(&"12:30".to_owned()), "{day}");

    let status = worker.terminate(std::time::Duration::from_secs(10)).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
