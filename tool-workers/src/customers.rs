//! `lookup_customer`: finds a caller in the `customers` table by phone number.
//!
//! The model passes whatever number it heard or was given (`(555) 000-1234`, `555-000-1234`,
//! `+1 555 000 1234`), so the number is normalized to E.164 before the lookup; the answer echoes
//! the normalized number so the model can read it back.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::tool::{Tool, ToolContext, ToolDefinitionError, ToolFailure};

/// The tool's name.
pub const NAME: &str = "lookup_customer";

/// The JSON Schema of its arguments.
pub fn parameters() -> Value {
    json!({
        "type": "object",
        "properties": {
            "phone": {"type": "string", "description": "Caller phone number in E.164"}
        },
        "required": ["phone"]
    })
}

/// The tool, answering from `pool`.
pub fn lookup_customer(pool: PgPool) -> Result<Tool, ToolDefinitionError> {
    Tool::new(
        NAME,
        "Look up a customer by phone number. Returns found=false when the number is unknown.",
        parameters(),
        move |_ctx: ToolContext, args: Value| {
            let pool = pool.clone();
            async move {
                let raw = args
                    .get("phone")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let phone = normalize_phone(raw).map_err(ToolFailure::invalid_arguments)?;
                lookup(&pool, &phone).await
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
                tracing::warn!(%error, "customer lookup failed");
                ToolFailure::unavailable("the customer directory is unavailable right now")
            })?;
    Ok(match row {
        Some((name, tier, notes)) => {
            json!({"found": true, "name": name, "phone": phone, "tier": tier, "notes": notes})
        }
        None => json!({"found": false, "phone": phone}),
    })
}

/// Normalizes a phone number to E.164: keeps the digits; a leading `+` means the country code
/// is there already; a bare 10-digit number is a US number (`+1`); 11 digits starting with `1`
/// are a US number with its country code.
pub fn normalize_phone(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let international = raw.starts_with('+') || raw.starts_with("00");
    let mut digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if raw.starts_with("00") {
        digits.drain(..2);
    }
    if digits.is_empty() {
        return Err(format!("`phone` has no digits: {raw:?}"));
    }
    let e164 = if international {
        format!("+{digits}")
    } else if digits.len() == 10 {
        format!("+1{digits}")
    } else {
        format!("+{digits}")
    };
    // E.164 allows at most 15 digits; fewer than 7 cannot be a full number.
    if !(7..=16).contains(&e164.len()) {
        return Err(format!(
            "`phone` is not a full phone number in E.164 form: {raw:?}"
        ));
    }
    Ok(e164)
}

#[cfg(test)]
mod tests {
    use super::normalize_phone;

    #[test]
    fn normalizes_to_e164() {
        assert_eq!(normalize_phone("+15550001234").unwrap(), "+15550001234");
        assert_eq!(normalize_phone("(555) 000-1234").unwrap(), "+15550001234");
        assert_eq!(normalize_phone("555.000.1234").unwrap(), "+15550001234");
        assert_eq!(normalize_phone("1 555 000 1234").unwrap(), "+15550001234");
        assert_eq!(
            normalize_phone(" +1 (555) 000-1234 ").unwrap(),
            "+15550001234"
        );
        assert_eq!(
            normalize_phone("+44 20 7123 4567").unwrap(),
            "+442071234567"
        );
        assert_eq!(
            normalize_phone("0044 20 7123 4567").unwrap(),
            "+442071234567"
        );
    }

    #[test]
    fn rejects_what_is_no_number() {
        assert!(normalize_phone("").is_err());
        assert!(normalize_phone("call me").is_err());
        assert!(normalize_phone("12345").is_err());
        assert!(normalize_phone("+1234567890123456789").is_err());
    }
}
