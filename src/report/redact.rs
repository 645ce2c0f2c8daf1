//! The one choke point for secrets: every byte ohrun writes — console lines, tracing logs, `--json` on
//! stdout, run.json, events.jsonl, the copied agent-server log — passes through [`apply`]. Values are
//! registered process-wide as soon as they are resolved (a key, a `secrets:` value, a forwarded or
//! referenced environment variable), so a text written later can never miss one. Each value is matched
//! as written and in the forms a program commonly re-encodes it to: JSON-escaped (a value with a quote
//! or a backslash looks different inside run.json), base64 (`echo $KEY | base64`, at every alignment)
//! and URL-encoded. `leak.rs` scans what was written for the same forms, as a second net.

use std::borrow::Cow;
use std::sync::RwLock;

pub const MASK: &str = "***";

/// Values shorter than this are not treated as secrets: they would mask ordinary text everywhere.
const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value, and the forms it takes when a program re-encodes it (JSON-escaped, base64
/// at each of the three byte alignments, URL-encoded), for every later write.
pub fn register(value: &str) {
    if value.len() < MIN_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for v in forms(value) {
        if v.len() >= MIN_LEN && !secrets.contains(&v) {
            secrets.push(v);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Every registered form of every secret, longest first (for the leak scan).
pub fn registered() -> Vec<String> {
    SECRETS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A value as written, JSON-escaped, URL-encoded, and in base64 (standard and URL-safe alphabets).
fn forms(value: &str) -> Vec<String> {
    let escaped = serde_json::to_string(value).unwrap_or_default().trim_matches('"').to_string();
    let url = percent_encoding::utf8_percent_encode(value, URL_ENCODED).to_string();
    let mut all = vec![value.to_string(), escaped, url];
    for alphabet in
        [&base64::engine::general_purpose::STANDARD_NO_PAD, &base64::engine::general_purpose::URL_SAFE_NO_PAD]
    {
        // A short fragment of base64 would match ordinary text: only long ones are worth masking.
        let cores = (0..3).map(|shift| base64_core(value.as_bytes(), shift, alphabet));
        all.extend(cores.filter(|c| c.len() >= MIN_BASE64_LEN));
    }
    all
}

/// What a URL encoder escapes: everything but the unreserved characters (RFC 3986).
const URL_ENCODED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The shortest base64 fragment masked.
const MIN_BASE64_LEN: usize = 8;

/// The base64 characters that depend on `value`'s bytes alone when it starts `shift` bytes into the
/// encoded data: the same whatever comes before or after it (`echo $KEY | base64`, a key inside a
/// base64-encoded header or file).
fn base64_core(value: &[u8], shift: usize, alphabet: &base64::engine::GeneralPurpose) -> String {
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

/// `text` with every registered secret masked.
pub fn apply(text: &str) -> Cow<'_, str> {
    if disabled_for_tests() {
        return Cow::Borrowed(text);
    }
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), MASK);
    }
    Cow::Owned(out)
}

/// Debug builds only: `OHRUN_TEST_UNREDACTED=1` switches redaction off, so that the secrets tests can
/// prove they would see a leak. Release builds have no such switch.
fn disabled_for_tests() -> bool {
    #[cfg(debug_assertions)]
    {
        static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OFF.get_or_init(|| std::env::var("OHRUN_TEST_UNREDACTED").is_ok_and(|v| v == "1"))
    }
    #[cfg(not(debug_assertions))]
    false
}

/// A writer that masks secrets line by line before passing text on (for the tracing subscriber and the
/// agent-server's log). Text is held until a newline, so a secret split across two writes is still seen
/// whole.
pub struct RedactingWriter<W: std::io::Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: std::io::Write> RedactingWriter<W> {
    pub fn new(inner: W) -> Self {
        RedactingWriter { inner, pending: Vec::new() }
    }

    fn write_lines(&mut self, all: bool) -> std::io::Result<()> {
        let cut =
            if all { self.pending.len() } else { self.pending.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) };
        if cut == 0 {
            return Ok(());
        }
        let chunk: Vec<u8> = self.pending.drain(..cut).collect();
        let text = String::from_utf8_lossy(&chunk);
        self.inner.write_all(apply(&text).as_bytes())
    }
}

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.write_lines(false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_lines(true)?;
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
    fn base64_and_url_encoded_forms_are_masked_at_any_alignment() {
        use base64::Engine;
        let key = "sk-b64-secret/with+odd?chars";
        register(key);
        for prefix in ["", "x", "xy", "xyz"] {
            for engine in [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE] {
                let encoded = engine.encode(format!("{prefix}{key}\n"));
                let masked = apply(&encoded);
                assert!(masked.contains(MASK) && masked.len() < encoded.len() - 20, "{prefix:?}: {encoded} → {masked}");
            }
        }
        let url = percent_encoding::utf8_percent_encode(key, URL_ENCODED).to_string();
        assert_eq!(apply(&format!("?token={url}&x=1")), "?token=***&x=1");
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
}
