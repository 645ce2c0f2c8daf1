//! Bad job files and the exact messages ohrun prints for them. Each `tests/golden/NAME.yaml` has its
//! expected stderr in `NAME.stderr`; `OHRUN_BLESS=1 cargo test golden` rewrites them after review.
//! A first line `# args: ...` adds command-line arguments.

use crate::support::{Ohrun, repo_root};

#[test]
fn every_bad_input_gets_an_exact_message_and_exit_2() {
    let dir = repo_root().join("tests/golden");
    let bless = std::env::var_os("OHRUN_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "at least 15 kinds of bad input");
    let mut failures = Vec::new();
    for case in &cases {
        let rel = case.strip_prefix(repo_root()).unwrap();
        let text = std::fs::read_to_string(case).unwrap();
        let extra: Vec<String> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# args: "))
            .map(|a| a.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let out = Ohrun::new().args(["validate".to_string(), rel.display().to_string()]).args(extra).output();
        assert_eq!(out.code, 2, "{}: exit code\n{}", rel.display(), out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        let expected_path = case.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &out.stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != out.stderr {
            failures.push(format!("=== {}\n--- expected\n{expected}--- got\n{}", rel.display(), out.stderr));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches (OHRUN_BLESS=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_error_points_at_a_line_and_column() {
    for entry in std::fs::read_dir(repo_root().join("tests/golden")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "stderr") {
            let text = std::fs::read_to_string(&path).unwrap();
            for block in text.split("\nerror: ").filter(|b| !b.contains(" errors in ")) {
                assert!(block.contains(":") && block.contains("-->"), "{}: {block}", path.display());
                let location = block.lines().find(|l| l.trim_start().starts_with("-->")).unwrap();
                let parts: Vec<&str> = location.rsplitn(3, ':').collect();
                assert!(
                    parts.len() == 3 && parts[0].parse::<usize>().is_ok() && parts[1].parse::<usize>().is_ok(),
                    "{}: no line:col in {location}",
                    path.display()
                );
                assert!(block.contains("hint:"), "{}: no hint in {block}", path.display());
            }
        }
    }
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let out = Ohrun::new().args(["validate", "--json", "tests/golden/unknown-sandbox-key.yaml"]).output();
    assert_eq!(out.code, 2);
    let v = out.json();
    let err = &v[0]["errors"][0];
    assert_eq!(err["line"], 5);
    assert_eq!(err["column"], 3);
    assert_eq!(err["hint"], "did you mean `init_timeout`?");
}

/// A literal key in a job file is refused, and the line the error shows is masked by the diagnostic
/// itself (the redactor never learns a literal, so it is not what is tested here): the masked line and
/// its marker are there, the key is not.
#[test]
fn a_literal_key_in_a_job_file_is_shown_masked_in_the_error() {
    let out = Ohrun::new().args(["validate", "tests/golden/literal-secret.yaml"]).output();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("6 |   api_key: ********************"), "the line is shown, masked:\n{}", out.stderr);
    assert!(!out.stderr.contains("sk-live"), "{}", out.stderr);
}
