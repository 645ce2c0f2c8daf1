//! compare.html: the comparison as one offline page in report.html's style — the `--json` document
//! embedded as JSON (every `</` and `<!` escaped), drawn by a small vanilla script (`page.js`) that only
//! makes text nodes, under a Content-Security-Policy that forbids every request.

use super::Comparison;
use crate::report::html::{CSP_FILE, HTML_FILE as RUN_PAGE, document, encode_path};
use crate::report::writer::{relative, write_atomic};
use serde_json::json;
use std::path::{Path, PathBuf};

const JS: &str = include_str!("page.js");

/// Writes compare.html into `out`. `base` and `new` are the batch directories the comparison read: a
/// run's row links to its report.html when that page is there.
pub fn write(out: &Path, c: &Comparison, base: &Path, new: &Path) -> std::io::Result<PathBuf> {
    let path = out.join(super::HTML_FILE);
    write_atomic(&path, &page(out, c, base, new))?;
    Ok(path)
}

pub fn page(out: &Path, c: &Comparison, base: &Path, new: &Path) -> String {
    let link = |dir: &Path, report: Option<&String>| {
        let page = batch_dir(dir).join(report?).with_file_name(RUN_PAGE);
        page.is_file().then(|| encode_path(&relative(&page, out).to_string_lossy()))
    };
    // [BASE's page, NEW's page] per entry of `runs`.
    let links: Vec<[Option<String>; 2]> = c
        .runs
        .iter()
        .map(|e| {
            [
                link(base, e.base.as_ref().and_then(|s| s.report.as_ref())),
                link(new, e.new.as_ref().and_then(|s| s.report.as_ref())),
            ]
        })
        .collect();
    let data = json!({ "page": "compare", "comparison": c, "links": links });
    let title = format!("{} → {} · ohrun compare", c.base.dir, c.new.dir);
    document(&title, &data, CSP_FILE, JS, "`ohrun compare --json` prints the same data")
}

/// The directory of a batch named by its directory or its summary.json.
pub fn batch_dir(path: &Path) -> &Path {
    if path.is_file() { path.parent().unwrap_or(Path::new(".")) } else { path }
}
