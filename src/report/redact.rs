//! Secret values never reach a log, a report or the console: every text ohrun writes passes here.

use std::borrow::Cow;

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

pub const MASK: &str = "***";

impl Redactor {
    /// Adds a secret value; values shorter than 4 characters are not treated as secrets (they would
    /// mask ordinary text everywhere).
    pub fn add(&mut self, value: &str) {
        if value.len() >= 4 && !self.secrets.iter().any(|s| s == value) {
            self.secrets.push(value.to_string());
            // Longest first, so a secret containing another is masked whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), MASK);
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_every_occurrence() {
        let mut r = super::Redactor::default();
        r.add("sk-abcdef");
        r.add("ab");
        assert_eq!(r.apply("key=sk-abcdef, again sk-abcdef; ab"), "key=***, again ***; ab");
    }
}
