//! The one choke point for secrets: every byte ohrun writes — console lines, tracing logs, `--json` on
//! stdout, run.json, events.jsonl, the copied agent-server log — passes through [`apply`]. Values are
//! registered process-wide as soon as they are resolved (a key, a `secrets:` value, a forwarded or
//! referenced environment variable), so a text written later can never miss one. Each value is matched
//! as written and in the forms programs commonly re-encode it to (see [`forms`]). All forms of all
//! secrets are found in one pass (Aho-Corasick, overlapping matches) and the union of their spans is
//! masked, so two secrets that overlap in a text leave nothing of either. `leak.rs` scans what was
//! written for the same forms, as a second net.
//!
//! Text is redacted before it is cut anywhere: a secret across a cut would otherwise leave its prefix.

use aho_corasick::AhoCorasick;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use std::borrow::Cow;
use std::sync::RwLock;

pub const MASK: &str = "***";

/// Values shorter than this are not treated as secrets: they would mask ordinary text everywhere.
const MIN_LEN: usize = 4;

/// The shortest base64 fragment masked: a shorter one would match ordinary text.
const MIN_BASE64_LEN: usize = 8;

/// Every registered form and the automaton that finds them all at once.
struct Registry {
    /// The values registered as given: a value seen before is not encoded again (a batch registers the
    /// same keys once per run).
    values: Vec<String>,
    forms: Vec<String>,
    matcher: Option<AhoCorasick>,
    /// The longest form, in bytes: how much text a line-buffered writer must hold back.
    longest: usize,
}

static REGISTRY: RwLock<Registry> =
    RwLock::new(Registry { values: Vec::new(), forms: Vec::new(), matcher: None, longest: 0 });

/// Registers a secret value, and the forms it takes when a program re-encodes it, for every later write.
pub fn register(value: &str) {
    if value.len() < MIN_LEN || REGISTRY.read().unwrap_or_else(|e| e.into_inner()).values.iter().any(|v| v == value) {
        return;
    }
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if reg.values.iter().any(|v| v == value) {
        return;
    }
    reg.values.push(value.to_string());
    let before = reg.forms.len();
    for form in forms(value) {
        if form.len() >= MIN_LEN && !reg.forms.contains(&form) {
            reg.forms.push(form);
        }
    }
    if reg.forms.len() == before {
        return;
    }
    // Rebuilt only when a form is new: a batch registers the same keys once per run.
    reg.matcher = AhoCorasick::new(&reg.forms).ok();
    reg.longest = reg.forms.iter().map(String::len).max().unwrap_or(0);
}

/// Every registered form of every secret, longest first (for the leak scan).
pub fn registered() -> Vec<String> {
    let mut forms = REGISTRY.read().unwrap_or_else(|e| e.into_inner()).forms.clone();
    forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
    forms
}

/// A value as written and as programs re-encode it: JSON-escaped once and twice (a `json.dumps` output
/// stored again inside JSON), also with non-ASCII as `\uXXXX` (Python's default); URL-encoded the ways
/// common libraries do it (see [`URL_ENCODINGS`]), with upper- and lower-case hex; and base64 (standard
/// and URL-safe alphabets) at each of the three byte alignments.
fn forms(value: &str) -> Vec<String> {
    let mut all = vec![value.to_string()];
    for once in [json_escaped(value), json_ascii_escaped(value)] {
        all.push(json_escaped(&once));
        all.push(once);
    }
    for (set, space_as_plus) in URL_ENCODINGS {
        let mut encoded = percent_encoding::utf8_percent_encode(value, set).to_string();
        if space_as_plus {
            encoded = encoded.replace("%20", "+");
        }
        all.push(lower_hex(&encoded));
        all.push(encoded);
    }
    for alphabet in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        let cores = (0..3).map(|shift| base64_core(value.as_bytes(), shift, alphabet));
        all.extend(cores.filter(|c| c.len() >= MIN_BASE64_LEN));
    }
    all.sort();
    all.dedup();
    all
}

/// The inside of a JSON string literal holding `value`.
fn json_escaped(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default().to_string()
}

/// The same with every non-ASCII character as `\uXXXX` (surrogate pairs beyond the BMP), as Python's
/// `json.dumps` writes by default.
fn json_ascii_escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in json_escaped(value).chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The characters each common URL encoder leaves as they are, and whether it writes a space as `+`.
const URL_ENCODINGS: [(&AsciiSet, bool); 6] = [
    // RFC 3986 unreserved only (Python's `quote(s, safe='')`, Go's `url.PathEscape` minus a few).
    (UNRESERVED, false),
    // Python's `urllib.parse.quote` default (`safe='/'`).
    (&UNRESERVED.remove(b'/'), false),
    // Python's `quote_plus` / `urlencode`.
    (UNRESERVED, true),
    // application/x-www-form-urlencoded as browsers, the url crate and Go's `QueryEscape` write it.
    (&NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_'), true),
    // JavaScript's `encodeURIComponent`.
    (&UNRESERVED.remove(b'!').remove(b'*').remove(b'\'').remove(b'(').remove(b')'), false),
    // JavaScript's `encodeURI`.
    (
        &UNRESERVED
            .remove(b'!')
            .remove(b'*')
            .remove(b'\'')
            .remove(b'(')
            .remove(b')')
            .remove(b';')
            .remove(b',')
            .remove(b'/')
            .remove(b'?')
            .remove(b':')
            .remove(b'@')
            .remove(b'&')
            .remove(b'=')
            .remove(b'+')
            .remove(b'$')
            .remove(b'#'),
        false,
    ),
];

/// What a URL encoder escapes at the least: everything but the unreserved characters (RFC 3986).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `%2F` → `%2f`: some encoders write lower-case hex digits.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// The base64 characters that depend on `value`'s bytes alone when it starts `shift` bytes into the
/// encoded data: the same whatever comes before or after it (`echo $KEY | base64`, a key inside a
/// base64-encoded header or file).
fn base64_core(value: &[u8], shift: usize, alphabet: &GeneralPurpose) -> String {
    use base64::Engine;
    let mut data = vec![0u8; shift];
    data.extend_from_slice(value);
    let encoded = alphabet.encode(&data);
    // Character i holds bits 6i..6i+6 of the data; keep those inside the value's bits.
    let (first_bit, end_bit) = (8 * shift, 8 * (shift + value.len()));
    let first = first_bit.div_ceil(6);
    let last = (end_bit / 6).min(encoded.len()); // exclusive: characters with 6i + 6 <= end_bit
    encoded.get(first..last).unwrap_or_default().to_string()
}

/// The byte ranges of `text` that hold a registered form — also across the line breaks of wrapped base64
/// (`base64` wraps at 76 columns, PEM at 64) — overlapping and touching ones merged.
fn spans(matcher: &AhoCorasick, text: &[u8]) -> Vec<(usize, usize)> {
    let mut found: Vec<(usize, usize)> = matcher.find_overlapping_iter(text).map(|m| (m.start(), m.end())).collect();
    found.extend(wrapped_spans(matcher, text));
    found.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
    for (start, end) in found {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The shortest line width taken for wrapped base64.
const MIN_WRAP: usize = 40;

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// Matches inside blocks of wrapped base64: runs of lines of one width (at least `MIN_WRAP`), each all
/// base64, the last no longer than the others. Each block is searched with its line breaks taken out, and a
/// match is mapped back to the bytes it covers (line breaks included).
fn wrapped_spans(matcher: &AhoCorasick, text: &[u8]) -> Vec<(usize, usize)> {
    let mut lines: Vec<(usize, usize)> = Vec::new(); // (start, end without the line break)
    let mut at = 0;
    for line in text.split(|b| *b == b'\n') {
        let end = at + line.len() - usize::from(line.ends_with(b"\r"));
        lines.push((at, end));
        at += line.len() + 1;
    }
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let width = lines[i].1 - lines[i].0;
        let full = |&(s, e): &(usize, usize)| e - s == width && text[s..e].iter().all(|b| is_base64(*b));
        if width < MIN_WRAP || !full(&lines[i]) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < lines.len() && full(&lines[j]) {
            j += 1;
        }
        // The block's last line may be shorter.
        if j < lines.len()
            && (1..width).contains(&(lines[j].1 - lines[j].0))
            && text[lines[j].0..lines[j].1].iter().all(|b| is_base64(*b))
        {
            j += 1;
        }
        if j - i >= 2 {
            found.extend(block_spans(matcher, text, &lines[i..j]));
        }
        i = j;
    }
    found
}

/// The matches in one block of wrapped lines, as byte ranges of `text`.
fn block_spans(matcher: &AhoCorasick, text: &[u8], lines: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut joined = Vec::new();
    let mut origin = Vec::new(); // the byte of `text` each byte of `joined` came from
    for &(s, e) in lines {
        joined.extend_from_slice(&text[s..e]);
        origin.extend(s..e);
    }
    matcher
        .find_overlapping_iter(&joined)
        .filter(|m| m.end() > m.start())
        .map(|m| (origin[m.start()], origin[m.end() - 1] + 1))
        .collect()
}

/// `text` with each span replaced by the mask.
fn masked(text: &[u8], spans: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for &(start, end) in spans {
        out.extend_from_slice(&text[at..start]);
        out.extend_from_slice(MASK.as_bytes());
        at = end;
    }
    out.extend_from_slice(&text[at..]);
    out
}

/// `text` with every registered secret masked.
pub fn apply(text: &str) -> Cow<'_, str> {
    if disabled_for_tests() {
        return Cow::Borrowed(text);
    }
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    let Some(matcher) = &reg.matcher else { return Cow::Borrowed(text) };
    let spans = spans(matcher, text.as_bytes());
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    // A form is whole UTF-8, so every match starts and ends on a character boundary of `text`.
    Cow::Owned(String::from_utf8(masked(text.as_bytes(), &spans)).unwrap_or_default())
}

/// The first line of `text`, redacted first: a secret spanning lines would otherwise leave its first line.
pub fn first_line(text: &str) -> String {
    apply(text).lines().next().unwrap_or_default().to_string()
}

/// `bytes` (any data, not only UTF-8: a patch) with every registered secret masked.
pub fn apply_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    if disabled_for_tests() {
        return Cow::Borrowed(bytes);
    }
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    let Some(matcher) = &reg.matcher else { return Cow::Borrowed(bytes) };
    let spans = spans(matcher, bytes);
    if spans.is_empty() { Cow::Borrowed(bytes) } else { Cow::Owned(masked(bytes, &spans)) }
}

/// `text` redacted, then cut to at most `max_chars` characters (with `…` when cut): the order matters.
pub fn cut(text: &str, max_chars: usize) -> String {
    let clean = apply(text);
    match clean.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean.into_owned(),
    }
}

/// How many lines the longest registered form spans: how many more lines a tail must hold before it is
/// redacted and cut, so that a multi-line secret across the cut is seen whole.
pub fn max_lines() -> usize {
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    reg.forms.iter().map(|f| f.matches('\n').count() + 1).max().unwrap_or(1)
}

/// How far past a cut a text must reach for [`head`] to see a secret across the cut whole.
pub fn longest() -> usize {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner()).longest
}

/// About the first `max_bytes` of `text`, redacted, and whether anything was cut. The cut falls on a
/// character boundary and never inside a secret; when `text` is longer than `max_bytes` it should reach
/// [`longest`] bytes past it, so that a secret across the cut is seen whole (and masked, not cut).
pub fn head(text: &str, max_bytes: usize) -> (Cow<'_, str>, bool) {
    if text.len() <= max_bytes {
        return (apply(text), false);
    }
    let mut cut = crate::text::floor_char_boundary(text, max_bytes);
    if !disabled_for_tests() {
        let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
        if let Some(matcher) = &reg.matcher
            && let Some(&(start, _)) = spans(matcher, text.as_bytes()).iter().find(|&&(s, e)| s < cut && cut < e)
        {
            cut = start;
        }
    }
    (Cow::Owned(apply(&text[..cut]).into_owned()), true)
}

/// Redaction switched off for the rest of the process: only the tests' own `ohrun-unredacted` binary
/// (built with the `test-hooks` feature, which only the tests' dev-dependency on ohrun turns on) calls
/// this, so that the secrets tests can prove they would see a leak. `ohrun` itself never does, in any build.
#[cfg(feature = "test-hooks")]
pub fn switch_off_for_tests() {
    UNREDACTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[cfg(feature = "test-hooks")]
static UNREDACTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn disabled_for_tests() -> bool {
    #[cfg(feature = "test-hooks")]
    {
        UNREDACTED.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(feature = "test-hooks"))]
    false
}

/// A writer that masks secrets before passing text on (for the tracing subscriber and the agent-server's
/// log). It passes on whole lines, and holds back the last `longest form − 1` bytes: a secret split across
/// two writes, or spanning lines (a PEM key), is still seen whole.
pub struct RedactingWriter<W: std::io::Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: std::io::Write> RedactingWriter<W> {
    pub fn new(inner: W) -> Self {
        RedactingWriter { inner, pending: Vec::new() }
    }

    fn write_out(&mut self, all: bool) -> std::io::Result<()> {
        let (cut, out) = {
            let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
            let found = match (&reg.matcher, disabled_for_tests()) {
                (Some(m), false) => spans(m, &self.pending),
                _ => Vec::new(),
            };
            let cut = if all { self.pending.len() } else { safe_cut(&self.pending, reg.longest, &found) };
            let inside: Vec<(usize, usize)> = found.into_iter().filter(|s| s.1 <= cut).collect();
            (cut, masked(&self.pending[..cut], &inside))
        };
        if cut == 0 {
            return Ok(());
        }
        self.pending.drain(..cut);
        self.inner.write_all(&out)
    }
}

/// Where `pending` may be cut: after a newline, early enough that any secret starting before the cut
/// ends inside `pending` (so it was found), and never inside a found span.
fn safe_cut(pending: &[u8], longest: usize, spans: &[(usize, usize)]) -> usize {
    let limit = pending.len().saturating_sub(longest.saturating_sub(1));
    let line_end = |before: usize| pending[..before].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut cut = line_end(limit);
    while let Some(&(start, _)) = spans.iter().find(|&&(start, end)| start < cut && cut < end) {
        cut = line_end(start);
    }
    cut
}

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.write_out(false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_out(true)?;
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The secret of issue L's probe: a quote, a backslash, a space, a slash, `&` and `=`.
    const PROBE: &str = "sk-pr\"obe\\SEC RET/456&x=y";

    #[test]
    fn masks_every_occurrence_and_the_json_escaped_form() {
        register("sk-abcdef");
        register("ab");
        register("pa\"ss\\word");
        assert_eq!(apply("key=sk-abcdef, again sk-abcdef; ab"), "key=***, again ***; ab");
        let json = serde_json::to_string(&serde_json::json!({"v": "pa\"ss\\word"})).unwrap();
        assert_eq!(apply(&json), r#"{"v":"***"}"#);
    }

    #[test]
    fn the_probe_secret_is_masked_in_every_common_encoding() {
        use base64::Engine;
        register(PROBE);
        let once = serde_json::to_string(PROBE).unwrap();
        let twice = serde_json::to_string(&once).unwrap();
        let encoded = [
            // Python: quote (keeps `/`), quote(safe=''), quote_plus, urlencode.
            "sk-pr%22obe%5CSEC%20RET/456%26x%3Dy".to_string(),
            "sk-pr%22obe%5CSEC%20RET%2F456%26x%3Dy".to_string(),
            "sk-pr%22obe%5CSEC+RET%2F456%26x%3Dy".to_string(),
            "sk-pr%22obe%5csec+ret%2f456%26x%3dy".replace("sec+ret", "SEC+RET"),
            // JavaScript: encodeURIComponent, encodeURI.
            "sk-pr%22obe%5CSEC%20RET%2F456%26x%3Dy".to_string(),
            "sk-pr%22obe%5CSEC%20RET/456&x=y".to_string(),
            once.clone(),
            twice.clone(),
        ];
        for text in encoded {
            let masked = apply(&format!("before {text} after")).into_owned();
            assert!(masked.contains(MASK) && !masked.contains("obe") && !masked.contains("456"), "{text} → {masked}");
        }
        for prefix in ["", "x", "xy"] {
            for engine in [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE] {
                let b64 = engine.encode(format!("{prefix}{PROBE}\n"));
                let masked = apply(&b64);
                assert!(masked.contains(MASK) && masked.len() < b64.len() - 20, "{prefix:?}: {b64} → {masked}");
            }
        }
    }

    #[test]
    fn base64_wrapped_at_any_column_is_masked_across_its_line_breaks() {
        use base64::Engine;
        let key = "sk-ant-api03-wrapped-base64-secret-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789";
        register(key);
        for prefix in ["", "x", "some text before it: "] {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{key}\n"));
            for width in [76, 64] {
                let wrapped: Vec<String> =
                    encoded.as_bytes().chunks(width).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
                let text = format!("out:\n{}\ndone\n", wrapped.join("\n"));
                let masked = apply(&text);
                // What is left of the encoded lines is at most the few characters that also depend on
                // what is around the key.
                let left: usize = masked.lines().filter(|l| l.len() > 8 && !l.contains(MASK)).map(str::len).sum();
                assert!(masked.contains(MASK) && left == 0, "{prefix:?} at {width}:\n{text}\n→\n{masked}");
            }
        }
    }

    #[test]
    fn non_ascii_secrets_are_masked_as_python_json_writes_them() {
        register("clé-secrète-😀-42");
        let python = r#"{"k": "cl\u00e9-secr\u00e8te-\ud83d\ude00-42"}"#;
        assert_eq!(apply(python), r#"{"k": "***"}"#);
    }

    #[test]
    fn overlapping_secrets_leave_nothing_of_either() {
        register("overlap-AAAA-BBBB");
        register("BBBB-CCCC-overlap");
        assert_eq!(apply("x overlap-AAAA-BBBB-CCCC-overlap y"), "x *** y");
    }

    #[test]
    fn a_cut_never_leaves_the_prefix_of_a_secret() {
        register("cut-secret-0123456789");
        let text = format!("{}cut-secret-0123456789", "a".repeat(10));
        assert_eq!(cut(&text, 15), "aaaaaaaaaa***");
        assert_eq!(cut(&text, 5), "aaaaa…");
    }

    #[test]
    fn a_head_never_cuts_inside_a_secret() {
        register("head-secret-0123456789");
        let text = format!("{}head-secret-0123456789 and more", "a".repeat(10));
        assert_eq!(head(&text, 15), (Cow::Borrowed("aaaaaaaaaa"), true));
        assert_eq!(head(&text, 41), (Cow::Borrowed("aaaaaaaaaa*** and more"), false));
    }

    #[test]
    fn a_secret_split_across_writes_is_still_masked() {
        register("split-secret-value");
        let mut out = Vec::new();
        {
            let mut w = RedactingWriter::new(&mut out);
            w.write_all(b"one split-sec").unwrap();
            w.write_all(b"ret-value two\nthree").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "one *** two\nthree");
    }

    #[test]
    fn a_multi_line_secret_written_line_by_line_is_masked() {
        let pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END KEY-----";
        register(pem);
        let mut out = Vec::new();
        {
            let mut w = RedactingWriter::new(&mut out);
            w.write_all(b"log: key follows\n").unwrap();
            for line in pem.lines() {
                w.write_all(format!("{line}\n").as_bytes()).unwrap();
            }
            w.write_all(b"done\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "log: key follows\n***\ndone\n");
    }
}
