//! Keeps credentials out of what redial prints.
//!
//! A target such as `https://user:token@host/` carries its secret in the
//! URI's userinfo, and `http::Uri`'s `Debug` prints it as it is. Whatever
//! redial prints of a target (the layer's `Debug`, a connection's `Debug`, a
//! name taken from the target) goes through [`Redacted`], which replaces the
//! userinfo of every `scheme://userinfo@host` it finds with `***` and leaves
//! everything else alone, so the host and port still say which peer it is.

use std::{borrow::Cow, fmt};

/// Formats a value with its `Debug`, userinfo replaced by `***`.
pub(crate) struct Redacted<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: fmt::Debug + ?Sized> fmt::Debug for Redacted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&format!("{:?}", self.0)))
    }
}

/// `text` with the userinfo of every `scheme://userinfo@host` replaced by
/// `***`.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends where the path, query or fragment starts, or
        // where the surrounding text resumes: a quote, a backslash or white
        // space, none of which a URI holds unescaped. Userinfo may hold
        // almost any other punctuation (`;`, `,`, `'`, `)`), so nothing else
        // ends it; where that takes in text after the URI, more is redacted,
        // never less.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\\') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn userinfo_is_replaced_and_the_host_kept() {
        assert_eq!(
            redact("https://user:token@db.example:5432/path?q=1"),
            "https://***@db.example:5432/path?q=1"
        );
        assert_eq!(redact("\"http://u@h\""), "\"http://***@h\"");
        assert_eq!(
            redact("Target { a: \"grpc://a:b@x\", b: http://c:d@y/ }"),
            "Target { a: \"grpc://***@x\", b: http://***@y/ }"
        );
    }

    #[test]
    fn userinfo_with_punctuation_is_replaced_whole() {
        for secret in ["abc;def", "p,w", "it's", "se)cret", "a}b]c>d", "x=y&z!"] {
            let text = format!("(http://user:{secret}@db:5432/)");
            let redacted = redact(&text);
            assert_eq!(redacted, "(http://***@db:5432/)", "{secret}");
        }
    }

    #[test]
    fn text_without_userinfo_is_unchanged() {
        for text in [
            "127.0.0.1:4000",
            "http://host/a@b",
            "http://host?mail=a@b",
            "user@host",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}
