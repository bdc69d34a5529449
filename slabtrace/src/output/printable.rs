//! Text from outside made safe to print. Cgroup names, pod names, OOM victims' `comm` (any
//! process can set its own) and CRI metadata are chosen by tenants; written raw to a terminal,
//! an escape sequence in one can retitle the window, move the cursor over other rows or hide
//! text, and a newline forges a row or a log line. Every text sink (the table, `top`, the log
//! lines) prints them through [`printable`]; JSON and the metrics have their own escaping.

use std::{borrow::Cow, fmt::Write as _};

/// `s` with every control character (C0, DEL, C1: ESC, BEL, CR, LF, TAB…) and every Unicode
/// bidirectional override written as a visible escape (`\x1b`, `\u{202e}`), and the backslash
/// doubled so an escape can't be faked; unchanged (and not copied) when there is none.
#[must_use]
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is escaped by [`printable`]. The backslash only matters when something else is
/// escaped: a name with a backslash and nothing else prints as it is.
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        let cases = [
            ("web-0", "web-0"),
            ("/kubepods/pod-ü/日本", "/kubepods/pod-ü/日本"),
            ("a\\b", "a\\b"),
            ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
            ("row\nforged row", "row\\x0aforged row"),
            ("tab\tcr\r", "tab\\x09cr\\x0d"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("abc\u{202e}txt.exe", "abc\\u{202e}txt.exe"),
            ("fake \\x1b\x1b", "fake \\\\x1b\\x1b"),
        ];
        for (input, output) in cases {
            assert_eq!(printable(input), output, "{input:?}");
        }
    }

    #[test]
    fn nothing_printable_is_copied() {
        assert!(matches!(printable("dentry"), Cow::Borrowed("dentry")));
    }

    #[test]
    fn no_output_has_a_control_character() {
        // Every char the escaping can meet, one at a time and in a run.
        let all: String = (0..0x3000u32).filter_map(char::from_u32).collect();
        let out = printable(&all);
        assert!(!out.chars().any(needs_escape), "{out:?}");
        for c in all.chars() {
            let s = c.to_string();
            assert!(!printable(&s).chars().any(needs_escape), "{c:?}");
        }
    }
}
