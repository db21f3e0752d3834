//! A scoring answer as the service sent it: the body's own bytes, never parsed into numbers and printed
//! again (which would change digits and key order), and re-indented only when asked.

use std::io::Write;

/// The body as UTF-8 text when it is one JSON value.
pub fn json_text(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(text)
}

/// Writes `body` to standard output as it came, re-indented when `pretty` and it is JSON, ending in one
/// newline. A closed standard output (`| head`) ends quietly.
pub fn print(body: &[u8], pretty: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = match json_text(body).filter(|_| pretty) {
        Some(text) => writeln!(out, "{}", indent(text)),
        None => out.write_all(body).and_then(|()| match body.last() {
            Some(b'\n') => Ok(()),
            _ => out.write_all(b"\n"),
        }),
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// JSON text re-indented by two spaces, token by token: every number, string and key stays exactly as
/// written and in its place. `text` must be valid JSON.
pub fn indent(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on one line.
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().unwrap_or_default());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indenting_keeps_every_number_and_key_as_written() {
        let body = r#"{"z": [0.058086369974305996, 189.82200622558594, 1e400, -0], "a": {"s": "x, \"y\": [z]"}, "e": [], "o": { }}"#;
        let pretty = indent(body);
        assert_eq!(
            pretty,
            "{\n  \"z\": [\n    0.058086369974305996,\n    189.82200622558594,\n    1e400,\n    -0\n  ],\n  \"a\": {\n    \"s\": \"x, \\\"y\\\": [z]\"\n  },\n  \"e\": [],\n  \"o\": {}\n}"
        );
        // The same value, the same text once the whitespace is gone.
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squeeze(&pretty), squeeze(body));
        assert_eq!(json_text(pretty.as_bytes()), Some(pretty.as_str()));
        assert_eq!(json_text(b"not json"), None);
        assert_eq!(indent("[1,2]"), "[\n  1,\n  2\n]");
        assert_eq!(indent("\"plain\""), "\"plain\"");
    }
}
