//! Terminal colours, decided once: on only for a terminal, and never when NO_COLOR is set.

use std::io::IsTerminal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn plain() -> Self {
        Style { color: false }
    }

    /// Colour for stderr when it is a terminal and `NO_COLOR` is unset or empty (https://no-color.org).
    pub fn for_stderr() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style { color: !no_color && std::io::stderr().is_terminal() }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    pub fn error(&self, t: &str) -> String {
        self.paint("1;31", t)
    }
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2;34", t)
    }
    pub fn hint(&self, t: &str) -> String {
        self.paint("1;36", t)
    }
    pub fn ok(&self, t: &str) -> String {
        self.paint("1;32", t)
    }
}
