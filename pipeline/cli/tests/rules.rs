//! `haechi rules check` and `haechi rules backtest` through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::root;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn haechi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_haechi"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run haechi")
}

#[test]
fn the_committed_rules_pass_their_own_check() {
    let o = haechi(&["rules", "check", "rules", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["keywords"].as_u64().unwrap() > 300);
}

#[test]
fn broken_packs_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("a.toml"),
        r#"[pack]
id = "a"

[[rule]]
id = "a.one"
kind = "prepayment"
weight = 1.0
keywords = ["선입금"]
match = ["선입금 부탁"]
no_match = ["선입금 부탁해요"]

[[rule]]
id = "a.empty"
kind = "prepayment"
weight = 1.0

[[rule]]
id = "a.badregex"
kind = "prepayment"
weight = 1.0
regex = ['(unclosed']
"#,
    )
    .unwrap();
    std::fs::write(
        d.join("b.toml"),
        r#"[pack]
id = "b"

[[rule]]
id = "a.one"
kind = "prepayment"
weight = 1.0
keywords = ["입금"]
"#,
    )
    .unwrap();
    let o = haechi(&["rules", "check", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let a = d.join("a.toml").display().to_string();
    let b = d.join("b.toml").display().to_string();
    assert!(
        err.contains(&format!("{a}:13: rule `a.empty` is empty")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{a}:21: rule `a.badregex`: bad regex")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{b}:5: duplicate rule id `a.one` (first defined at {a}:5)"
        )),
        "{err}"
    );

    // Fix the structure: now the failing example is what is left.
    std::fs::write(d.join("b.toml"), "[pack]\nid = \"b\"\n").unwrap();
    let text = std::fs::read_to_string(d.join("a.toml")).unwrap();
    let fixed = text
        .split("[[rule]]\nid = \"a.empty\"")
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(d.join("a.toml"), fixed).unwrap();
    let o = haechi(&["rules", "check", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{a}:10: rule `a.one` should not match but does: \"선입금 부탁해요\""
        )),
        "{err}"
    );
}

#[test]
fn backtest_shows_what_a_rule_change_flips() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("rules");
    // Copy the rules and silence the counterfeit pack.
    copy_dir(&root().join("rules"), &new);
    std::fs::remove_file(new.join("ko/counterfeit.toml")).unwrap();
    let o = haechi(&[
        "rules",
        "backtest",
        "--old",
        "rules",
        "--new",
        new.to_str().unwrap(),
        "fixtures/handpicked.jsonl",
        "--json",
        "--limit",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_ne!(b["old_version"], b["new_version"]);
    let unflagged = b["newly_unflagged"].as_u64().unwrap();
    assert!(unflagged >= 1, "{b}");
    // Fewer flags can still flag something new: listings let through now
    // feed the usual prices that too-cheap detection compares against.
    assert!(b["newly_flagged"].as_u64().unwrap() < unflagged, "{b}");
    let ex = &b["newly_unflagged_examples"][0];
    assert!(
        ex["label"]
            .as_str()
            .unwrap()
            .starts_with("fraud/counterfeit"),
        "{ex}"
    );
    assert!(ex["reasons_removed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().starts_with("ko.counterfeit")));
    assert!(b["new_eval"]["recall"].as_f64().unwrap() < b["old_eval"]["recall"].as_f64().unwrap());
    assert!(b["newly_unflagged_examples"].as_array().unwrap().len() <= 3);

    // The same rules on both sides change nothing.
    let o = haechi(&[
        "rules",
        "backtest",
        "--old",
        "rules",
        "--new",
        "rules",
        "fixtures/handpicked.jsonl",
        "--json",
    ]);
    let b: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["flipped"], 0);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}
