//! `lookup_customer`: the caller's own record in the `customers` table.
//!
//! The record is found by the number the call comes from ([`ToolContext::caller_number`]), never
//! by a number the model passes: a caller who says "my number is ..." must not hear somebody
//! else's name and notes. The tool therefore takes no arguments; anything the model sends anyway
//! is ignored. A call from a withheld number or a non-phone client finds nothing.

use serde_json::{Value, json};
use sqlx::PgPool;
use switchboard_service::redact::MaskedPhone;

use crate::tool::{Tool, ToolContext, ToolDefinitionError, ToolFailure};

/// The tool's name.
pub const NAME: &str = "lookup_customer";

/// The JSON Schema of its arguments: none. Whose record it is comes from the call.
pub fn parameters() -> Value {
    json!({"type": "object", "properties": {}})
}

/// The tool, answering from `pool`.
pub fn lookup_customer(pool: PgPool) -> Result<Tool, ToolDefinitionError> {
    Tool::new(
        NAME,
        "Look up the caller's customer record by the number they are calling from (no \
         arguments: it is always the caller's own record). Returns found=false when the number \
         is unknown or withheld.",
        parameters(),
        move |ctx: ToolContext, _args: Value| {
            let pool = pool.clone();
            async move {
                match ctx.caller_number() {
                    Some(phone) => lookup(&pool, phone).await,
                    None => Ok(json!({"found": false, "number_withheld": true})),
                }
            }
        },
    )
}

async fn lookup(pool: &PgPool, phone: &str) -> Result<Value, ToolFailure> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT name, tier, notes FROM customers WHERE phone = $1")
            .bind(phone)
            .fetch_optional(pool)
            .await
            .map_err(|error| {
                tracing::warn!(%error, caller = %MaskedPhone(phone), "customer lookup failed");
                ToolFailure::unavailable("the customer directory is unavailable right now")
            })?;
    Ok(match row {
        Some((name, tier, notes)) => {
            json!({"found": true, "name": name, "phone": phone, "tier": tier, "notes": notes})
        }
        None => json!({"found": false, "phone": phone}),
    })
}
