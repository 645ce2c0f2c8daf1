//! Arbitrary bytes and mutated valid job files never make the parser panic: every input ends in a
//! plan or in diagnostics. Runs in-process on the library, bounded by proptest's case count.

use ohrun::diagnostic::Source;
use ohrun::job::{PlanOptions, plan_text};
use proptest::prelude::*;

fn check(text: String) {
    let opts = PlanOptions { vars: vec!["x=1".into(), "=".into()], max_runs: 1000, ..Default::default() };
    let source = Source { name: "fuzz.yaml".into(), text };
    if let Err(err) = plan_text(source, std::path::Path::new("."), &opts) {
        for report in &err.reports {
            // Rendering must not panic either, whatever the spans.
            let _ = report.render(ohrun::style::Style::plain());
        }
    }
}

const SEED: &str = include_str!("../../jobs/multi-repo.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn mutated_valid_files(edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..6, "[ -~\t\n{}\\[\\]:#&*!|>%@`'\"-]{0,6}"), 1..8)) {
        let mut text: Vec<char> = SEED.chars().collect();
        for (at, kind, piece) in edits {
            let i = at.index(text.len().max(1));
            match kind {
                0 => { text.splice(i..i, piece.chars()); }
                1 => { let end = (i + piece.len().max(1)).min(text.len()); text.drain(i..end); }
                2 => { let end = (i + 3).min(text.len()); text.splice(i..end, piece.chars()); }
                3 => { if let Some(c) = text.get_mut(i) { *c = '\t'; } }
                4 => { text.splice(i..i, "{{ nope }}".chars()); }
                _ => { let line: String = text.iter().collect::<String>().lines().nth(i % 20).unwrap_or("").to_string(); text.extend(format!("\n{line}").chars()); }
            }
        }
        check(text.into_iter().collect());
    }
}
