//! Host data in text output — process names, paths, anything a user or program chose — made
//! safe for a terminal: control characters (C0, DEL, C1, which carry escape sequences, bells,
//! line breaks) become visible escapes, invalid UTF-8 the replacement character, so a name
//! can neither drive the terminal nor forge a line of output.
use std::io::Write as _;

/// Appends `s` with every control character escaped (`\n`, `\t`, `\x1b`, `\u{9b}` …) and a
/// literal backslash doubled only where it could be mistaken for one of those escapes.
pub fn push_escaped(buf: &mut Vec<u8>, s: &[u8]) {
    // Fast path: printable ASCII.
    if s.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
        buf.extend_from_slice(s);
        return;
    }
    for ch in String::from_utf8_lossy(s).chars() {
        match ch {
            '\\' => buf.extend_from_slice(b"\\\\"),
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(buf, "\\x{:02x}", c as u32);
            }
            c if ('\u{80}'..='\u{9f}').contains(&c) => {
                let _ = write!(buf, "\\u{{{:x}}}", c as u32);
            }
            c => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
}

/// [`push_escaped`] into a new string.
pub fn escaped(s: &[u8]) -> String {
    let mut v = Vec::with_capacity(s.len());
    push_escaped(&mut v, s);
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_pass() {
        assert_eq!(escaped(b"nginx"), "nginx");
        assert_eq!(
            escaped(b"\x1b[2J\x07evil\nline"),
            "\\x1b[2J\\x07evil\\nline"
        );
        assert_eq!(escaped("a\u{9b}31m".as_bytes()), "a\\u{9b}31m");
        assert_eq!(escaped(b"a\\b\x7f"), "a\\\\b\\x7f");
        assert_eq!(escaped(b"\xff\xfe"), "\u{fffd}\u{fffd}");
        assert_eq!(escaped("größe".as_bytes()), "größe");
        for out in [
            escaped(b"\x1b\x07\r\n\t\x00\x9b"),
            escaped("\u{85}".as_bytes()),
        ] {
            assert!(out.chars().all(|c| !c.is_control()), "{out:?}");
        }
    }
}
