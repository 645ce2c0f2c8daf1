//! junit.xml: one testsuite per job. A run without checks is one testcase (its name the run id, its
//! classname the job); a run with checks (`verify:`, `steps[].checks`) is one testcase per check, whose
//! classname is the run id and whose name is the check's, so a CI test view lists which check failed in
//! which run. A failed required check is a `<failure>` naming the check, with its output tail; a check
//! that could not run is an `<error>` (a verifier error, never a failed task); a failed optional check
//! passes, saying so in its `<system-out>` (the run's verdict does not count it). A run that ended for a
//! reason its checks do not show (its agent failed, the infrastructure did) keeps its own testcase too.
//! Text passes through quick-junit's `XmlString`, which drops what XML cannot hold (ANSI escapes, most
//! control characters).

use super::scores::CheckBrief;
use super::summary::{RunStatus, RunSummary, Summary};
use indexmap::IndexMap;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

impl Summary {
    /// The JUnit XML of the summary (see the module's comment), valid for the Jenkins JUnit schema.
    pub fn junit(&self) -> Result<String, quick_junit::SerializeError> {
        let mut suites: IndexMap<&str, TestSuite> = IndexMap::new();
        for r in &self.runs {
            let suite = suites.entry(r.job.as_str()).or_insert_with(|| TestSuite::new(r.job.as_str()));
            if r.checks.is_empty() || !explained_by_checks(r) {
                suite.add_test_case(run_case(r));
            }
            suite.add_test_cases(r.checks.iter().map(|c| check_case(r, c)));
        }
        let mut report = Report::new("ohrun");
        report.add_test_suites(suites.into_values());
        report.set_time(std::time::Duration::from_millis(self.totals.duration_ms));
        Ok(without_testsuites_skipped(report.to_string()?))
    }
}

/// The run succeeded, or ended because of its checks: their testcases tell all of it.
fn explained_by_checks(r: &RunSummary) -> bool {
    r.status == RunStatus::Succeeded || matches!(r.end_reason.as_deref(), Some("checks" | "verifier_error"))
}

/// The run's own testcase; a failure's text is its end reason and message.
fn run_case(r: &RunSummary) -> TestCase {
    let mut status = match r.status {
        RunStatus::Succeeded => TestCaseStatus::success(),
        RunStatus::Failed | RunStatus::Budget => TestCaseStatus::non_success(NonSuccessKind::Failure),
        RunStatus::Pending | RunStatus::NotStarted => TestCaseStatus::skipped(),
        _ => TestCaseStatus::non_success(NonSuccessKind::Error),
    };
    if r.status != RunStatus::Succeeded {
        let why = r.end_reason.as_deref().unwrap_or(r.status.as_str());
        let text = match &r.message {
            Some(m) => format!("{why}: {m}"),
            None => why.to_string(),
        };
        // The schema gives <skipped> no attributes: its reason is its text.
        if matches!(r.status, RunStatus::Pending | RunStatus::NotStarted) {
            status.set_description(text);
        } else {
            status.set_message(text);
            status.set_type(r.status.as_str());
        }
    }
    let mut case = TestCase::new(super::run_label(&r.id, r.trial), status);
    case.set_classname(r.job.as_str());
    if let Some(ms) = r.duration_ms {
        case.set_time(std::time::Duration::from_millis(ms));
    }
    if let Some(path) = &r.report {
        case.set_system_out(format!("report: {path}\ncost: ${}\nattempts: {}", r.cost, r.attempts));
    }
    case
}

/// The testcase of one check of a run: classname the run id, name the check's (and its trial's).
fn check_case(r: &RunSummary, c: &CheckBrief) -> TestCase {
    let detail = check_detail(c);
    let mut status = match c.state() {
        "error" => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            let why = c.why.as_deref().unwrap_or("the check could not run");
            s.set_message(format!("check `{}` could not run: {why}", c.name)).set_type("verifier_error");
            s
        }
        "failed" => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(format!("check `{}` failed{}", c.name, outcome(c))).set_type("check");
            s
        }
        _ => TestCaseStatus::success(),
    };
    if !detail.is_empty() {
        status.set_description(detail.clone());
    }
    let name = match r.trial {
        Some(t) => format!("{} (trial {t})", c.name),
        None => c.name.clone(),
    };
    let mut case = TestCase::new(name, status);
    case.set_classname(r.id.as_str());
    let mut out = Vec::new();
    if c.state() == "failed (optional)" {
        out.push(format!("optional check failed{}; the verdict does not count it", outcome(c)));
        out.extend((!detail.is_empty()).then_some(detail));
    }
    if !c.passed {
        out.extend(r.report.as_ref().map(|p| format!("report: {p}")));
    }
    if !out.is_empty() {
        case.set_system_out(out.join("\n"));
    }
    case
}

/// `: exit 1, value 0.40` — what a failed check came to.
fn outcome(c: &CheckBrief) -> String {
    let parts: Vec<String> = [c.exit_code.map(|e| format!("exit {e}")), c.value.map(|v| format!("value {v:.2}"))]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() { String::new() } else { format!(": {}", parts.join(", ")) }
}

/// A failed check's text: its explanation (a judge's, a `reward.json`'s), then its output tail.
fn check_detail(c: &CheckBrief) -> String {
    let explanation = c.why.as_ref().filter(|_| !c.error).map(|w| format!("explanation: {w}"));
    let tail = c.output_tail.as_ref().map(|t| format!("output (last lines):\n{t}"));
    [explanation, tail].into_iter().flatten().collect::<Vec<_>>().join("\n\n")
}

/// quick-junit writes a `skipped` count on `<testsuites>`, which the Jenkins JUnit schema it targets
/// (https://llg.cubic.org/docs/junit/) does not allow there; each `<testsuite>` keeps its own.
fn without_testsuites_skipped(xml: String) -> String {
    let Some(start) = xml.find("<testsuites") else { return xml };
    let end = xml[start..].find('>').map_or(xml.len(), |e| start + e);
    let tag = &xml[start..end];
    let Some(at) = tag.find(" skipped=\"") else { return xml };
    let close = tag[at + 10..].find('"').map_or(tag.len(), |c| at + 10 + c + 1);
    format!("{}{}{}", &xml[..start + at], &tag[close..], &xml[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::report::summary::tests::run;

    fn check(name: &str, passed: bool, required: bool, error: Option<&str>) -> CheckBrief {
        CheckBrief {
            name: name.into(),
            passed,
            value: error.is_none().then_some(if passed { 1.0 } else { 0.0 }),
            error: error.is_some(),
            required,
            exit_code: (!passed && error.is_none()).then_some(1),
            why: error.map(str::to_string),
            output_tail: (!passed).then(|| format!("{name} said \u{1b}[31mno\u{1b}[0m <&>\u{0}")),
        }
    }

    #[test]
    fn junit_has_a_case_per_run_and_no_testsuites_skipped_count() {
        let s = Summary::new(vec![
            run("a", RunStatus::Succeeded, None),
            run("b", RunStatus::Failed, Some("setup")),
            run("c", RunStatus::NotStarted, Some("not_started")),
        ]);
        let xml = s.junit().unwrap();
        let testsuites = xml.lines().find(|l| l.contains("<testsuites")).unwrap();
        assert!(!testsuites.contains("skipped="), "{testsuites}");
        assert!(testsuites.contains("tests=\"3\"") && testsuites.contains("failures=\"1\""), "{testsuites}");
        assert!(xml.contains("<testsuite name=\"j\" tests=\"3\" skipped=\"1\""), "{xml}");
        assert!(xml.contains("<failure message=\"setup: setup &lt;&amp;&gt; happened\" type=\"failed\""), "{xml}");
        assert!(xml.contains("<skipped>not_started: not_started &lt;&amp;&gt; happened</skipped>"), "{xml}");
    }

    #[test]
    fn a_verified_run_has_a_case_per_check_named_by_run_and_check() {
        let mut failed = run("b", RunStatus::Failed, Some("checks"));
        failed.checks = vec![check("builds", true, true, None), check("tests pass", false, true, None)];
        let mut errored = run("c", RunStatus::Errored, Some("verifier_error"));
        errored.checks = vec![check("tests pass", false, true, Some("timed out after 10m"))];
        let mut passed = run("a", RunStatus::Succeeded, None);
        passed.checks = vec![check("tests pass", true, true, None), check("changelog", false, false, None)];
        let xml = Summary::new(vec![passed, failed, errored]).junit().unwrap();
        let testsuites = xml.lines().find(|l| l.contains("<testsuites")).unwrap();
        assert!(testsuites.contains("tests=\"5\" failures=\"1\" errors=\"1\""), "{xml}");
        assert!(xml.contains("<testcase name=\"tests pass\" classname=\"a\""), "{xml}");
        assert!(xml.contains("<testcase name=\"builds\" classname=\"b\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"check `tests pass` failed: exit 1, value 0.00\" type=\"check\">"),
            "{xml}"
        );
        // The tail, escaped, its ANSI colours and NUL (which XML cannot hold) dropped.
        assert!(xml.contains("output (last lines):\ntests pass said no &lt;&amp;&gt;</failure>"), "{xml}");
        assert!(
            xml.contains(
                "<error message=\"check `tests pass` could not run: timed out after 10m\" type=\"verifier_error\""
            ),
            "{xml}"
        );
        assert!(xml.contains("optional check failed: exit 1, value 0.00; the verdict does not count it"), "{xml}");
        assert!(!xml.contains("<testcase name=\"a\"") && !xml.contains("<testcase name=\"b\""), "no run case: {xml}");
    }

    #[test]
    fn a_run_that_failed_for_another_reason_keeps_its_own_case() {
        let mut r = run("b", RunStatus::Failed, Some("error"));
        r.checks = vec![check("step one wrote it", true, true, None)];
        r.trial = Some(2);
        let xml = Summary::new(vec![r]).junit().unwrap();
        assert!(xml.contains("<testcase name=\"b#2\" classname=\"j\">"), "{xml}");
        assert!(xml.contains("<testcase name=\"step one wrote it (trial 2)\" classname=\"b\"/>"), "{xml}");
    }

    #[test]
    fn removing_the_count_leaves_everything_else() {
        let xml =
            "<?xml?>\n<testsuites name=\"x\" tests=\"1\" skipped=\"12\" failures=\"0\">\n<testsuite skipped=\"1\"/>";
        assert_eq!(
            without_testsuites_skipped(xml.into()),
            "<?xml?>\n<testsuites name=\"x\" tests=\"1\" failures=\"0\">\n<testsuite skipped=\"1\"/>"
        );
    }
}
