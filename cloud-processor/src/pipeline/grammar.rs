//! JSON's structure, written once: what may come next outside a token, and
//! what each byte there does. Two machines step through it byte by byte:
//! the walk that finds where a bad record ends (`reader/framing/recover.rs`, lenient
//! about tokens) and the push parser for records over the window
//! (`stream/streamer.rs`, strict). The window's scanner (`json.rs`) is a hand-written
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
pub enum Action {
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
pub fn action(expect: Expect, b: u8, inside: Option<Container>) -> Action {
    use Expect::*;
    match (expect, b) {
        (Value | ValueOrClose, b'{') => Action::Open(Container::Object),
        (Value | ValueOrClose, b'[') => Action::Open(Container::Array),
        (Value | ValueOrClose, b'"') => Action::String,
        (ValueOrClose, b']') => Action::Close,
        (Value | ValueOrClose, b'}' | b']' | b',' | b':') => Action::Unexpected(EXPECTED_VALUE),
        (Value | ValueOrClose, _) => Action::Scalar,
        (KeyOrClose, b'}') => Action::Close,
        (Key | KeyOrClose, b'"') => Action::Key,
        (Key, _) => Action::Unexpected(KEY_AFTER_COMMA),
        (KeyOrClose, _) => Action::Unexpected(KEY_OR_CLOSE),
        (Colon, b':') => Action::Colon,
        (Colon, _) => Action::Unexpected(COLON),
        (CommaOrClose, b',') => match inside {
            Some(c) => Action::Comma(c),
            None => Action::Unexpected(AFTER_VALUE),
        },
        (CommaOrClose, b'}') if inside == Some(Container::Object) => Action::Close,
        (CommaOrClose, b']') if inside == Some(Container::Array) => Action::Close,
        (CommaOrClose, _) => Action::Unexpected(match inside {
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
                match action(expect, b, stack.last().copied()) {
                    Action::Open(c) => {
                        stack.push(c);
                        expect = c.first();
                    }
                    Action::String | Action::Key => {
                        let end = i + 1 + text[i + 1..].iter().position(|&c| c == b'"').unwrap();
                        i = end;
                        expect = if expect == Expect::Key || expect == Expect::KeyOrClose {
                            Expect::Colon
                        } else {
                            Expect::CommaOrClose
                        };
                    }
                    Action::Scalar => {
                        while i + 1 < text.len() && !is_structural(text[i + 1]) {
                            i += 1;
                        }
                        expect = Expect::CommaOrClose;
                    }
                    Action::Colon => expect = Expect::Value,
                    Action::Comma(c) => expect = c.after_comma(),
                    Action::Close => {
                        stack.pop();
                        expect = Expect::CommaOrClose;
                    }
                    Action::Unexpected(why) => {
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
            action(Expect::KeyOrClose, b'1', obj),
            Action::Unexpected(KEY_OR_CLOSE)
        );
        assert_eq!(
            action(Expect::Key, b'}', obj),
            Action::Unexpected(KEY_AFTER_COMMA)
        );
        assert_eq!(action(Expect::Colon, b',', obj), Action::Unexpected(COLON));
        assert_eq!(
            action(Expect::CommaOrClose, b']', obj),
            Action::Unexpected("expected `,` or `}` in an object")
        );
        assert_eq!(
            action(Expect::CommaOrClose, b'}', arr),
            Action::Unexpected("expected `,` or `]` in an array")
        );
        assert_eq!(
            action(Expect::Value, b']', arr),
            Action::Unexpected(EXPECTED_VALUE)
        );
        assert_eq!(action(Expect::ValueOrClose, b']', arr), Action::Close);
        assert_eq!(
            action(Expect::CommaOrClose, b',', None),
            Action::Unexpected(AFTER_VALUE)
        );
        // The texts are the ones people see.
        assert_eq!(KEY_OR_CLOSE, "expected a string key or `}`");
        assert_eq!(ARRAY_COMMA, "expected `,` or `]` in an array");
    }
}
