//! Text helpers the standard library has only in releases newer than the crate's `rust-version`.

/// The largest index ≤ `at` that starts a character of `s` (std's `str::floor_char_boundary`, stable
/// only from Rust 1.91).
pub fn floor_char_boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_cuts_inside_a_character() {
        assert_eq!(super::floor_char_boundary("aé", 2), 1);
        assert_eq!(super::floor_char_boundary("aé", 3), 3);
        assert_eq!(super::floor_char_boundary("aé", 99), 3);
    }
}
