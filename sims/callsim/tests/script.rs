//! The caller-script TOML format: the documented example parses, mistakes give clear errors.

use std::time::Duration;

use callsim::{CallerScript, ScriptError, Step};

const DOCUMENTED: &str = r#"
[[step]]
listen = { max_ms = 15000, silence_ms = 700 }   # wait until some assistant audio has played
[[step]]
say_ms = 1500
[[step]]
barge_in = { after_ms = 800, say_ms = 1000 }
[[step]]
dtmf = "1"
[[step]]
pause_ms = 500
[[step]]
hangup = true
"#;

#[test]
fn the_documented_script_parses() {
    let script = CallerScript::from_toml_str(DOCUMENTED).expect("parses");
    assert_eq!(
        script.steps,
        vec![
            Step::Listen {
                max_ms: 15000,
                silence_ms: 700
            },
            Step::SayMs(1500),
            Step::BargeIn {
                after_ms: 800,
                say_ms: 1000
            },
            Step::Dtmf("1".into()),
            Step::PauseMs(500),
            Step::Hangup(true),
        ]
    );
    // 15 + 1.5 + (15 + 1) + 0.02 + 0.5 s of steps plus 30 s of slack.
    assert_eq!(script.time_limit(), Duration::from_millis(63_020));
}

#[test]
fn listen_fields_have_defaults_and_files_load() {
    let script = CallerScript::from_toml_str("[[step]]\nlisten = {}\n").expect("parses");
    assert_eq!(
        script.steps,
        vec![Step::Listen {
            max_ms: 15000,
            silence_ms: 700
        }]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("caller.toml");
    std::fs::write(&path, DOCUMENTED).expect("write");
    assert_eq!(
        CallerScript::from_file(&path).expect("loads").steps.len(),
        6
    );
    assert!(CallerScript::demo().validate().is_ok());
}

fn error(toml: &str) -> String {
    let err = CallerScript::from_toml_str(toml).expect_err(toml);
    err.to_string()
}

#[test]
fn bad_scripts_get_clear_errors() {
    let e = error("[[step]]\nshout_ms = 100\n");
    assert!(e.contains("shout_ms"), "{e}");
    let e = error("[[step]]\nsay_ms = -5\n");
    assert!(e.contains("-5"), "{e}");
    let e = error("[[step]]\nsay_ms = \"long\"\n");
    assert!(e.contains("say_ms") || e.contains("long"), "{e}");
    let e = error("[[step]]\nsay_ms = 100\npause_ms = 100\n");
    assert_eq!(
        e,
        "invalid caller script: step 1: each [[step]] holds exactly one action, found 2 (pause_ms, say_ms)"
    );
    let e = error("[[step]]\nlisten = { max_ms = 1000, silence = 5 }\n");
    assert!(e.contains("silence"), "{e}");
    let e = error("[[steps]]\nsay_ms = 100\n");
    assert!(e.contains("steps"), "{e}");

    let e = error("[[step]]\nlisten = { max_ms = 500, silence_ms = 700 }\n");
    assert_eq!(
        e,
        "invalid caller script: step 1: listen.silence_ms (700) must be less than max_ms (500)"
    );
    let e = error("[[step]]\nsay_ms = 10\n[[step]]\ndtmf = \"1x\"\n");
    assert!(e.contains("step 2") && e.contains("'x'"), "{e}");
    let e = error("[[step]]\nhangup = true\n[[step]]\nsay_ms = 10\n");
    assert!(e.contains("step 2") && e.contains("after a hangup"), "{e}");
    let e = error("[[step]]\nsay_ms = 0\n");
    assert!(e.contains("say_ms must be greater than 0"), "{e}");
    let e = error("[[step]]\npause_ms = 99999999\n");
    assert!(e.contains("longer than"), "{e}");
    assert!(matches!(
        CallerScript::from_toml_str(""),
        Err(ScriptError::Empty)
    ));
    let e = CallerScript::from_file("/nonexistent/caller.toml")
        .expect_err("missing file")
        .to_string();
    assert!(e.contains("/nonexistent/caller.toml"), "{e}");
}
