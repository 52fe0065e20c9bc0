//! Contacts as CSV (RFC 4180): uploaded, and exported with their attempts and results.
//!
//! An upload's first row names the columns: `to` (required), `time_zone` (optional), and any
//! other column is one of the contact's `vars` (an empty cell leaves it out). The export has a
//! row per contact: position, number, state, result, attempts, each attempt's CallSid and
//! result, the vars as JSON.

use serde_json::{Map, Value};

use crate::api::ContactRequest;
use crate::store::ContactView;

/// Splits CSV text into rows of fields (quoted fields may hold commas, quotes and newlines).
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, '"') => return Err(format!("line {line}: a quote inside an unquoted field")),
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                line += 1;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {line}: an unterminated quoted field"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows.retain(|r| !(r.len() == 1 && r[0].trim().is_empty()));
    Ok(rows)
}

/// The contacts of an uploaded CSV.
pub fn contacts(text: &str) -> Result<Vec<ContactRequest>, String> {
    let mut rows = parse(text.trim_start_matches('\u{feff}'))?.into_iter();
    let header: Vec<String> = rows
        .next()
        .ok_or("the CSV is empty")?
        .into_iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let to = header
        .iter()
        .position(|h| h == "to")
        .ok_or("the CSV needs a `to` column")?;
    let zone = header.iter().position(|h| h == "time_zone");
    rows.enumerate()
        .map(|(i, row)| {
            if row.len() != header.len() {
                return Err(format!(
                    "row {}: {} fields, the header has {}",
                    i + 2,
                    row.len(),
                    header.len()
                ));
            }
            let mut vars = Map::new();
            for (j, value) in row.iter().enumerate() {
                if j != to && Some(j) != zone && !value.is_empty() {
                    vars.insert(header[j].clone(), Value::String(value.clone()));
                }
            }
            Ok(ContactRequest {
                to: row[to].trim().to_owned(),
                vars,
                time_zone: zone
                    .map(|z| row[z].trim().to_owned())
                    .filter(|z| !z.is_empty()),
            })
        })
        .collect()
}

fn field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// The export of a campaign's contacts.
pub fn export(contacts: &[ContactView]) -> String {
    let mut out =
        String::from("position,to,state,result,attempts,call_sids,results,answered_by,vars\n");
    for c in contacts {
        let join = |f: &dyn Fn(&crate::store::AttemptView) -> Option<String>| {
            c.attempts
                .iter()
                .map(|a| f(a).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let cells = [
            c.position.to_string(),
            c.to.clone(),
            c.state.clone(),
            c.result.clone().unwrap_or_default(),
            c.attempts.len().to_string(),
            join(&|a| a.call_sid.clone()),
            join(&|a| a.result.clone()),
            join(&|a| a.answered_by.clone()),
            c.vars.to_string(),
        ];
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, cell);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_and_vars() {
        let text = "to,name,time_zone,note\r\n+15550002222,\"Doe, Jane\",America/New_York,\"said \"\"hi\"\"\"\n+15550003333,Bob,,\n";
        let c = contacts(text).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].to, "+15550002222");
        assert_eq!(c[0].vars["name"], "Doe, Jane");
        assert_eq!(c[0].vars["note"], "said \"hi\"");
        assert_eq!(c[0].time_zone.as_deref(), Some("America/New_York"));
        assert_eq!(c[1].time_zone, None);
        assert!(!c[1].vars.contains_key("note"));
    }

    #[test]
    fn bad_csv_is_refused_with_the_line() {
        assert!(contacts("name\nBob\n").unwrap_err().contains("`to`"));
        assert!(
            contacts("to,name\n+15550002222\n")
                .unwrap_err()
                .contains("row 2")
        );
        assert!(
            contacts("to\n\"+1555")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(contacts("").is_err());
    }

    #[test]
    fn export_quotes_what_needs_it() {
        let mut out = String::new();
        field(&mut out, "{\"name\":\"Doe, Jane\"}");
        assert_eq!(out, "\"{\"\"name\"\":\"\"Doe, Jane\"\"}\"");
        let back = parse(&out).unwrap();
        assert_eq!(back[0][0], "{\"name\":\"Doe, Jane\"}");
    }
}
