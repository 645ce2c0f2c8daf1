//! Checks junit.xml files against the Jenkins JUnit schema quick-junit targets
//! (tests/fixtures/jenkins-junit.xsd). No XSD validator is at hand on every machine (xmllint is not), so
//! this reads the schema itself and checks the subset of XML Schema it uses: global elements that are
//! `xs:string` or a complex type with a sequence of element references (minOccurs/maxOccurs), attributes
//! (required or optional; no others allowed), and mixed content.

use crate::support::repo_root;
use quick_xml::events::{BytesStart, Event};
use std::collections::HashMap;

/// An XML element with what the checks need.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
    text: String,
}

fn node(e: &BytesStart) -> Result<Node, String> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|e| e.to_string())?.into_owned();
        attrs.push((String::from_utf8_lossy(a.key.as_ref()).into_owned(), value));
    }
    Ok(Node { name: String::from_utf8_lossy(e.name().as_ref()).into_owned(), attrs, ..Node::default() })
}

/// The document's root element.
fn parse(xml: &str) -> Result<Node, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack = vec![Node::default()];
    loop {
        match reader.read_event().map_err(|e| format!("not well-formed: {e}"))? {
            Event::Start(e) => stack.push(node(&e)?),
            Event::Empty(e) => {
                let n = node(&e)?;
                stack.last_mut().unwrap().children.push(n);
            }
            Event::End(_) => {
                let n = stack.pop().unwrap();
                stack.last_mut().ok_or("unbalanced end tag")?.children.push(n);
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| e.to_string())?;
                stack.last_mut().unwrap().text.push_str(&text);
            }
            Event::CData(t) => stack.last_mut().unwrap().text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(_) => stack.last_mut().unwrap().text.push('&'),
            Event::Eof => break,
            _ => {}
        }
    }
    let mut document = stack.pop().filter(|_| stack.is_empty()).ok_or("unclosed elements")?;
    match document.children.len() {
        1 => Ok(document.children.remove(0)),
        n => Err(format!("{n} root elements")),
    }
}

fn attr<'a>(n: &'a Node, name: &str) -> Option<&'a str> {
    n.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// One global element declaration of the schema.
#[derive(Debug, Default)]
struct Decl {
    /// `type="xs:string"`: text only.
    simple: bool,
    mixed: bool,
    /// (name, required)
    attributes: Vec<(String, bool)>,
    /// (element, minOccurs, maxOccurs; None: unbounded)
    sequence: Vec<(String, usize, Option<usize>)>,
}

fn schema() -> HashMap<String, Decl> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/jenkins-junit.xsd")).unwrap();
    let root = parse(&text).expect("the schema parses");
    let mut decls = HashMap::new();
    for el in root.children.iter().filter(|c| c.name == "xs:element") {
        let mut d = Decl { simple: attr(el, "type") == Some("xs:string"), ..Decl::default() };
        for ct in el.children.iter().filter(|c| c.name == "xs:complexType") {
            d.mixed = attr(ct, "mixed") == Some("true");
            for part in &ct.children {
                match part.name.as_str() {
                    "xs:attribute" => {
                        d.attributes.push((attr(part, "name").unwrap().into(), attr(part, "use") == Some("required")))
                    }
                    "xs:sequence" => {
                        for r in &part.children {
                            let min = attr(r, "minOccurs").map_or(1, |m| m.parse().unwrap());
                            let max = match attr(r, "maxOccurs") {
                                Some("unbounded") => None,
                                Some(m) => Some(m.parse().unwrap()),
                                None => Some(1),
                            };
                            d.sequence.push((attr(r, "ref").unwrap().into(), min, max));
                        }
                    }
                    other => panic!("the checker does not know {other}"),
                }
            }
        }
        decls.insert(attr(el, "name").unwrap().to_string(), d);
    }
    decls
}

fn check(n: &Node, decls: &HashMap<String, Decl>, path: &str, errors: &mut Vec<String>) {
    let path = format!("{path}/{}", n.name);
    let Some(d) = decls.get(&n.name) else {
        errors.push(format!("{path}: no such element in the schema"));
        return;
    };
    for (k, _) in &n.attrs {
        if !d.attributes.iter().any(|(a, _)| a == k) {
            errors.push(format!("{path}: attribute `{k}` is not allowed"));
        }
    }
    for (a, required) in &d.attributes {
        if *required && attr(n, a).is_none() {
            errors.push(format!("{path}: attribute `{a}` is required"));
        }
    }
    if !d.simple && !d.mixed && !n.text.trim().is_empty() {
        errors.push(format!("{path}: text is not allowed here"));
    }
    let mut rest = n.children.as_slice();
    for (name, min, max) in &d.sequence {
        let count = rest.iter().take_while(|c| &c.name == name).count();
        let taken = max.map_or(count, |m| count.min(m));
        if taken < *min {
            errors.push(format!("{path}: expected at least {min} <{name}>, found {taken}"));
        }
        rest = &rest[taken..];
    }
    if let Some(extra) = rest.first() {
        errors.push(format!("{path}: <{}> is not allowed here", extra.name));
    }
    for c in &n.children {
        check(c, decls, &path, errors);
    }
}

/// Everything in `xml` that the schema does not allow.
pub fn schema_errors(xml: &str) -> Vec<String> {
    match parse(xml) {
        Ok(root) => {
            let mut errors = Vec::new();
            check(&root, &schema(), "", &mut errors);
            errors
        }
        Err(e) => vec![e],
    }
}

pub fn assert_valid_junit(xml: &str) {
    let errors = schema_errors(xml);
    assert!(errors.is_empty(), "junit.xml does not match the Jenkins JUnit schema: {errors:#?}\n{xml}");
}

#[test]
fn the_checker_accepts_the_schemas_own_shape_and_sees_each_kind_of_violation() {
    let good = "<?xml version=\"1.0\"?>\n<testsuites name=\"n\" tests=\"2\">\n<testsuite name=\"s\" tests=\"2\" skipped=\"1\">\n\
        <testcase name=\"a\" time=\"1.5\"><failure message=\"m\" type=\"t\">why &amp; how</failure><system-out>out</system-out></testcase>\n\
        <testcase name=\"b\"><skipped>not run</skipped></testcase>\n</testsuite>\n</testsuites>\n";
    assert_eq!(schema_errors(good), Vec::<String>::new());
    let bad = [
        ("<testsuites skipped=\"0\"/>", "attribute `skipped` is not allowed"),
        ("<testsuites><testsuite tests=\"1\"/></testsuites>", "attribute `name` is required"),
        (
            "<testsuites><testsuite name=\"s\" tests=\"0\"><bogus/></testsuite></testsuites>",
            "<bogus> is not allowed here",
        ),
        (
            "<testsuites><testsuite name=\"s\" tests=\"1\"><testcase name=\"a\"><skipped message=\"m\"/></testcase></testsuite></testsuites>",
            "/testsuites/testsuite/testcase/skipped: attribute `message` is not allowed",
        ),
        (
            "<testsuites><testsuite name=\"s\" tests=\"1\"><testcase name=\"a\"><system-out/><failure/></testcase></testsuite></testsuites>",
            "<failure> is not allowed here",
        ),
        ("<testsuites>text</testsuites>", "text is not allowed here"),
        ("<testsuites><testsuite>", "unclosed"),
    ];
    for (xml, want) in bad {
        let errors = schema_errors(xml);
        assert!(errors.iter().any(|e| e.contains(want)), "{xml}: expected `{want}` in {errors:?}");
    }
}

/// A summary with checks (as `ohrun merge` reads it): one testcase per (run, check), a failed check a
/// `<failure>`, a check that could not run an `<error>`, a failed optional check a pass that says so, and
/// a run that failed before its checks could tell keeps its own testcase — all valid for the schema.
#[test]
fn a_summary_with_checks_gives_a_valid_junit_with_a_case_per_run_and_check() {
    use crate::support::Ohrun;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("shard");
    std::fs::create_dir(&shard).unwrap();
    let tokens = json!({"prompt": 0, "completion": 0, "cache_read": 0, "cache_write": 0, "reasoning": 0});
    let run = |id: &str, status: &str, why: &str, verdict: &str, checks: serde_json::Value| {
        json!({"id": id, "index": 1, "job": "j", "job_file": "j.yaml", "matrix": null, "status": status,
               "end_reason": why, "message": format!("{why} <&>"), "attempts": 1, "cost": 0.0, "tokens": tokens,
               "llm_calls": 0, "duration_ms": 1000, "report": format!("{id}/run.json"), "verdict": verdict,
               "checks": checks})
    };
    let runs = [
        run(
            "failed",
            "failed",
            "checks",
            "failed",
            json!([
            {"name": "tests", "passed": false, "value": 0.0, "exit_code": 1, "output_tail": "1 failed\u{1b}[0m <b>"},
            {"name": "lint", "passed": false, "value": 0.0, "required": false, "exit_code": 2}]),
        ),
        run(
            "timed-out",
            "errored",
            "verifier_error",
            "error",
            json!([
            {"name": "tests", "passed": false, "value": null, "error": true, "why": "timed out after 10m"}]),
        ),
        run("agent-error", "failed", "error", "failed", json!([{"name": "step check", "passed": true, "value": 1.0}])),
    ];
    let summary = json!({"format": 1, "ohrun_version": "0.1.0", "updated_at": "2026-12-01T00:00:00Z", "runs": runs,
        "totals": {"runs": 3, "by_status": {}, "cost": 0.0, "tokens": tokens, "llm_calls": 0, "duration_ms": 1000}});
    std::fs::write(shard.join("summary.json"), summary.to_string()).unwrap();
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .args(["merge", "shard", "--out", "merged"])
        .output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    let xml = std::fs::read_to_string(dir.path().join("merged/junit.xml")).unwrap();
    assert_valid_junit(&xml);
    let root = parse(&xml).unwrap();
    let cases: Vec<&Node> = root.children.iter().flat_map(|s| &s.children).filter(|c| c.name == "testcase").collect();
    let described: Vec<(&str, &str, Option<&str>)> = cases
        .iter()
        .map(|c| (attr(c, "classname").unwrap(), attr(c, "name").unwrap(), c.children.first().map(|e| e.name.as_str())))
        .collect();
    assert_eq!(
        described,
        [
            ("failed", "tests", Some("failure")),
            ("failed", "lint", Some("system-out")),
            ("timed-out", "tests", Some("error")),
            ("j", "agent-error", Some("failure")),
            ("agent-error", "step check", None),
        ],
        "{xml}"
    );
    let failure = &cases[0].children[0];
    assert_eq!(attr(failure, "message"), Some("check `tests` failed: exit 1, value 0.00"));
    assert!(xml.contains(">output (last lines):\n1 failed &lt;b&gt;</failure>"), "escaped, no colour code: {xml}");
    assert!(cases[1].children[0].text.starts_with("optional check failed: exit 2"), "{xml}");
    assert_eq!(attr(&cases[2].children[0], "message"), Some("check `tests` could not run: timed out after 10m"));
    assert_eq!(attr(&cases[3].children[0], "message"), Some("error: error <&>"));
}
