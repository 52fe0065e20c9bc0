//! The breaking-change check of `switchboard.v1`: every message, field, oneof member, enum and
//! enum value of the last release (`proto/compat/switchboard.v1.lock`, one line each) must still
//! be there, with the same number, type and label. Additions pass; removals, renumberings,
//! retypings and renames fail.
//!
//! At a release, regenerate the lock with `UPDATE_PROTO_LOCK=1 cargo test -p switchboard-proto
//! --test compatibility` and commit it.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, ensure};

const FILES: [&str; 3] = [
    "switchboard/v1/call.proto",
    "switchboard/v1/tool.proto",
    "switchboard/v1/event.proto",
];

/// One line per element of the contract, as compiled by protox from `root`.
fn contract(root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let fds = protox::compile(FILES, [root]).context("compiling the .proto files")?;
    let mut lines = BTreeSet::new();
    for file in &fds.file {
        let package = file.package();
        for message in &file.message_type {
            describe_message(
                &format!("{package}.{}", message.name()),
                message,
                &mut lines,
            );
        }
        for e in &file.enum_type {
            describe_enum(&format!("{package}.{}", e.name()), e, &mut lines);
        }
    }
    Ok(lines)
}

fn describe_message(
    name: &str,
    message: &prost_types::DescriptorProto,
    lines: &mut BTreeSet<String>,
) {
    lines.insert(format!("message {name}"));
    for field in &message.field {
        let oneof = field
            .oneof_index
            .and_then(|i| message.oneof_decl.get(i as usize))
            .map(|o| o.name().to_owned())
            .filter(|_| !field.proto3_optional())
            .unwrap_or_else(|| "-".to_owned());
        lines.insert(format!(
            "field {name}.{} = {} {:?} {} {:?} oneof={oneof}",
            field.name(),
            field.number(),
            field.r#type(),
            field.type_name(),
            field.label(),
        ));
    }
    for nested in &message.nested_type {
        describe_message(&format!("{name}.{}", nested.name()), nested, lines);
    }
    for e in &message.enum_type {
        describe_enum(&format!("{name}.{}", e.name()), e, lines);
    }
}

fn describe_enum(name: &str, e: &prost_types::EnumDescriptorProto, lines: &mut BTreeSet<String>) {
    lines.insert(format!("enum {name}"));
    for value in &e.value {
        lines.insert(format!(
            "value {name}.{} = {}",
            value.name(),
            value.number()
        ));
    }
}

/// What of `released` is missing from `current`.
fn broken(released: &BTreeSet<String>, current: &BTreeSet<String>) -> Vec<String> {
    released.difference(current).cloned().collect()
}

fn lock_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/switchboard.v1.lock")
}

fn read_lock() -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(lock_path())?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_contract_keeps_everything_the_last_release_had() -> anyhow::Result<()> {
    let current = contract(Path::new(env!("CARGO_MANIFEST_DIR")))?;
    if std::env::var_os("UPDATE_PROTO_LOCK").is_some() {
        let mut text = String::from(
            "# switchboard.v1 as released; checked by proto/tests/compatibility.rs.\n",
        );
        for line in &current {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(lock_path(), text)?;
    }
    let released = read_lock()?;
    let missing = broken(&released, &current);
    ensure!(
        missing.is_empty(),
        "breaking changes to switchboard.v1 (removed, renumbered, retyped or renamed):\n{}",
        missing.join("\n")
    );
    Ok(())
}

#[test]
fn renumbering_removing_or_retyping_a_field_is_caught_and_adding_is_not() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let released = contract(root)?;
    let event = std::fs::read_to_string(root.join("switchboard/v1/event.proto"))?;
    let check = |edit: &dyn Fn(&str) -> String| -> anyhow::Result<Vec<String>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("switchboard/v1"))?;
        for file in FILES {
            std::fs::copy(root.join(file), dir.path().join(file))?;
        }
        std::fs::write(dir.path().join("switchboard/v1/event.proto"), edit(&event))?;
        Ok(broken(&released, &contract(dir.path())?))
    };
    let renumbered = check(&|t| t.replace("uint64 duration_ms = 2;", "uint64 duration_ms = 9;"))?;
    ensure!(
        renumbered.iter().any(|l| l.contains("duration_ms = 2")),
        "{renumbered:?}"
    );
    let retyped = check(&|t| t.replace("uint64 duration_ms = 2;", "uint32 duration_ms = 2;"))?;
    ensure!(!retyped.is_empty(), "a retyped field passed");
    let removed = check(&|t| t.replace("  string detail = 2;\n", ""))?;
    ensure!(
        removed.iter().any(|l| l.contains("CallOutcome.detail")),
        "{removed:?}"
    );
    let added = check(&|t| {
        t.replace(
            "  string detail = 2;\n",
            "  string detail = 2;\n  string source = 9;\n",
        )
    })?;
    ensure!(added.is_empty(), "an added field was refused: {added:?}");
    Ok(())
}
