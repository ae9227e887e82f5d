//! JSON's structure, written once: what may come next outside a token, and
//! what each byte there does. Two machines step through it byte by byte:
//! the walk that finds where a bad record ends (`reader/recover.rs`, lenient
//! about tokens) and the push parser for records over the window
//! (`stream.rs`, strict). The window's scanner (`json.rs`) is a hand-written
//! descent for speed; the fuzz targets and property tests hold all three to
//! the same verdicts.

/// What the grammar expects next, outside a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A value: after `:` or `,` in an array, and at the start.
    Value,
    /// A value or `]`: just after `[`.
    ValueOrClose,
    /// A key: after `,` in an object.
    Key,
    /// A key or `}`: just after `{`.
    KeyOrClose,
    /// `:` after a key.
    Colon,
    /// `,` or the innermost container's closer, after a value.
    CommaOrClose,
}

/// The kind of a container that is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Object,
    Array,
}

impl Container {
    /// What comes first inside a container just opened.
    pub fn first(self) -> Expect {
        match self {
            Self::Object => Expect::KeyOrClose,
            Self::Array => Expect::ValueOrClose,
        }
    }

    /// What comes after a `,` inside it.
    pub fn after_comma(self) -> Expect {
        match self {
            Self::Object => Expect::Key,
            Self::Array => Expect::Value,
        }
    }
}

/// What a byte outside any token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `{` or `[` opens a container where a value may be.
    Open(Container),
    /// `"` starts a string value.
    String,
    /// Any other byte where a value may be: a number or literal starts (or,
    /// for a lenient reader, a bad token).
    Scalar,
    /// `"` starts a key.
    Key,
    /// `:` after a key: a value follows.
    Colon,
    /// `,` after a value inside `Container`: see [`Container::after_comma`].
    Comma(Container),
    /// The innermost container's closer.
    Close,
    /// The byte may not stand here; the reason says what was expected.
    Unexpected(&'static str),
}

/// Why a byte may not stand where it stands: the texts every machine
/// reports, so they report the same thing.
pub mod reason {
    pub const EXPECTED_VALUE: &str = "expected a JSON value";
    pub const KEY_OR_CLOSE: &str = "expected a string key or `}`";
    pub const KEY_AFTER_COMMA: &str = "expected a string key after `,`";
    pub const COLON: &str = "expected `:` after an object key";
    pub const OBJECT_COMMA: &str = "expected `,` or `}` in an object";
    pub const ARRAY_COMMA: &str = "expected `,` or `]` in an array";
    pub const AFTER_VALUE: &str = "text after the value";
}

use reason::*;

/// What byte `b` does where `expect` holds, `inside` the innermost open
/// container (`None` at the top level). Whitespace is the caller's to skip.
pub fn step(expect: Expect, b: u8, inside: Option<Container>) -> Step {
    use Expect::*;
    match (expect, b) {
        (Value | ValueOrClose, b'{') => Step::Open(Container::Object),
        (Value | ValueOrClose, b'[') => Step::Open(Container::Array),
        (Value | ValueOrClose, b'"') => Step::String,
        (ValueOrClose, b']') => Step::Close,
        (Value | ValueOrClose, b'}' | b']' | b',' | b':') => Step::Unexpected(EXPECTED_VALUE),
        (Value | ValueOrClose, _) => Step::Scalar,
        (KeyOrClose, b'}') => Step::Close,
        (Key | KeyOrClose, b'"') => Step::Key,
        (Key, _) => Step::Unexpected(KEY_AFTER_COMMA),
        (KeyOrClose, _) => Step::Unexpected(KEY_OR_CLOSE),
        (Colon, b':') => Step::Colon,
        (Colon, _) => Step::Unexpected(COLON),
        (CommaOrClose, b',') => match inside {
            Some(c) => Step::Comma(c),
            None => Step::Unexpected(AFTER_VALUE),
        },
        (CommaOrClose, b'}') if inside == Some(Container::Object) => Step::Close,
        (CommaOrClose, b']') if inside == Some(Container::Array) => Step::Close,
        (CommaOrClose, _) => Step::Unexpected(match inside {
            Some(Container::Array) => ARRAY_COMMA,
            Some(Container::Object) => OBJECT_COMMA,
            None => AFTER_VALUE,
        }),
    }
}

/// Whether `b` is one of JSON's structural bytes (or a quote), which end a
/// bare word in a lenient reader.
pub fn is_structural(b: u8) -> bool {
    matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

#[cfg(test)]
mod tests {
    use super::reason::*;
    use super::*;

    /// Every (state, byte, container) either steps as JSON says or is
    /// unexpected with a reason; a small grammar walked over valid text
    /// never meets an unexpected byte.
    #[test]
    fn valid_text_steps_through_without_an_unexpected_byte() {
        for text in [
            &br#"{"a":[1,{"b":[]},"x"],"c":{}}"#[..],
            br#"[[],{},"s",-1.5e3,true]"#,
            br#"{}"#,
        ] {
            let mut stack: Vec<Container> = Vec::new();
            let mut expect = Expect::Value;
            let mut i = 0;
            while i < text.len() {
                let b = text[i];
                match step(expect, b, stack.last().copied()) {
                    Step::Open(c) => {
                        stack.push(c);
                        expect = c.first();
                    }
                    Step::String | Step::Key => {
                        let end = i + 1 + text[i + 1..].iter().position(|&c| c == b'"').unwrap();
                        i = end;
                        expect = if expect == Expect::Key || expect == Expect::KeyOrClose {
                            Expect::Colon
                        } else {
                            Expect::CommaOrClose
                        };
                    }
                    Step::Scalar => {
                        while i + 1 < text.len() && !is_structural(text[i + 1]) {
                            i += 1;
                        }
                        expect = Expect::CommaOrClose;
                    }
                    Step::Colon => expect = Expect::Value,
                    Step::Comma(c) => expect = c.after_comma(),
                    Step::Close => {
                        stack.pop();
                        expect = Expect::CommaOrClose;
                    }
                    Step::Unexpected(why) => {
                        panic!("{why} at {i} of {}", String::from_utf8_lossy(text))
                    }
                }
                i += 1;
            }
            assert!(stack.is_empty());
        }
    }

    #[test]
    fn misplaced_bytes_say_what_was_expected() {
        let obj = Some(Container::Object);
        let arr = Some(Container::Array);
        assert_eq!(
            step(Expect::KeyOrClose, b'1', obj),
            Step::Unexpected(KEY_OR_CLOSE)
        );
        assert_eq!(
            step(Expect::Key, b'}', obj),
            Step::Unexpected(KEY_AFTER_COMMA)
        );
        assert_eq!(step(Expect::Colon, b',', obj), Step::Unexpected(COLON));
        assert_eq!(
            step(Expect::CommaOrClose, b']', obj),
            Step::Unexpected("expected `,` or `}` in an object")
        );
        assert_eq!(
            step(Expect::CommaOrClose, b'}', arr),
            Step::Unexpected("expected `,` or `]` in an array")
        );
        assert_eq!(
            step(Expect::Value, b']', arr),
            Step::Unexpected(EXPECTED_VALUE)
        );
        assert_eq!(step(Expect::ValueOrClose, b']', arr), Step::Close);
        assert_eq!(
            step(Expect::CommaOrClose, b',', None),
            Step::Unexpected(AFTER_VALUE)
        );
        // The texts are the ones people see.
        assert_eq!(KEY_OR_CLOSE, "expected a string key or `}`");
        assert_eq!(ARRAY_COMMA, "expected `,` or `]` in an array");
    }
}
