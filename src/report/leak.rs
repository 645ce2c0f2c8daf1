//! The second net behind the redactor: after a run (and after a batch's rollups) every file ohrun wrote is
//! searched for every registered secret in every form the redactor knows (as written, JSON-escaped,
//! base64, URL-encoded). A hit names the file and the byte offset, never the value. Nothing is found
//! unless the redactor missed something — a secret learned only after text with it was written, or a
//! fault — and then the run fails (`secret_leak`) instead of passing with a key in its evidence.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a secret was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Leak {
    pub file: String,
    /// Byte offset of the first occurrence in the file.
    pub offset: usize,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.file, self.offset)
    }
}

/// Files a scan passes over (artifacts apart): the agent's own workspace (what the agent writes there is its business,
/// like the repository it works on), and the key file of a kept local server (the key, on purpose, 0600).
/// Artifacts (`artifacts/`) are the sandbox's files: the text ones are scanned, listed by run.json.
const NOT_OHRUNS: [&str; 3] = ["workspace", "agent-server.key", super::repo::ARTIFACTS_DIR];

/// Every file under `dir` that ohrun wrote (recursively, passing over what is not ohrun's).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if NOT_OHRUNS.iter().any(|n| entry.file_name() == *n) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(files_under(&path)),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
    files.sort();
    files
}

/// The first occurrence of any registered secret form in each of `files`.
pub fn scan(files: &[PathBuf]) -> Vec<Leak> {
    let parts: Vec<(PathBuf, usize)> = files.iter().map(|f| (f.clone(), 0)).collect();
    scan_from(&parts)
}

/// The same, each file read from a byte offset on (a file ohrun only appended to, such as the GitHub
/// step summary that the workflow's own steps write too).
pub fn scan_from(files: &[(PathBuf, usize)]) -> Vec<Leak> {
    let mut forms = super::redact::registered();
    if forms.is_empty() {
        return Vec::new();
    }
    // report.html embeds its data with `</` and `<!` escaped as `\u003c/`, `\u003c!` (so no text ends the
    // script element): a secret holding either is searched in that form too.
    let embedded: Vec<String> = forms
        .iter()
        .filter(|f| f.contains("</") || f.contains("<!"))
        .map(|f| f.replace("</", "\\u003c/").replace("<!", "\\u003c!"))
        .collect();
    forms.extend(embedded);
    let finders: Vec<memchr::memmem::Finder> =
        forms.iter().map(|f| memchr::memmem::Finder::new(f.as_bytes())).collect();
    files
        .iter()
        .filter_map(|(file, from)| {
            let bytes = std::fs::read(file).ok()?;
            let tail = bytes.get(*from..)?;
            let offset = from + finders.iter().filter_map(|f| f.find(tail)).min()?;
            Some(Leak { file: file.display().to_string(), offset })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_registered_secret_in_any_form_but_not_in_the_workspace() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        super::super::redact::register("leak-scan-secret-0123456789");
        let encoded = base64::engine::general_purpose::STANDARD.encode("x leak-scan-secret-0123456789\n");
        std::fs::write(dir.path().join("clean.json"), "nothing here").unwrap();
        std::fs::write(dir.path().join("events.jsonl"), format!("{{\"out\": \"{encoded}\"}}")).unwrap();
        std::fs::create_dir(dir.path().join("workspace")).unwrap();
        std::fs::write(dir.path().join("workspace/notes"), "leak-scan-secret-0123456789").unwrap();
        let leaks = scan(&files_under(dir.path()));
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert!(leaks[0].file.ends_with("events.jsonl") && leaks[0].offset > 9, "{leaks:?}");
    }

    #[test]
    fn a_file_ohrun_appended_to_is_scanned_from_where_its_part_begins() {
        let dir = tempfile::tempdir().unwrap();
        super::super::redact::register("appended-secret-value-42");
        let file = dir.path().join("step-summary.md");
        std::fs::write(&file, "the workflow wrote appended-secret-value-42 itself\n").unwrap();
        let ours = std::fs::metadata(&file).unwrap().len() as usize;
        std::fs::write(&file, "the workflow wrote appended-secret-value-42 itself\n| run | ok |\n").unwrap();
        assert!(scan_from(&[(file.clone(), ours)]).is_empty());
        assert_eq!(scan_from(&[(file, 0)]).len(), 1);
    }

    #[test]
    fn a_secret_that_ends_a_script_element_is_found_as_report_html_embeds_it() {
        let dir = tempfile::tempdir().unwrap();
        super::super::redact::register("html-secret</script>42");
        let page = dir.path().join("report.html");
        std::fs::write(&page, r#"<script type="application/json">{"k":"html-secret\u003c/script>42"}</script>"#)
            .unwrap();
        assert_eq!(scan(&[page]).len(), 1);
    }
}
