//! Label selectors: which devices a group holds, by their Hello labels.
//!
//! A selector is a comma-separated list of requirements, all of which must
//! hold (the syntax of Kubernetes label selectors):
//!
//! | requirement | holds when the device's labels… |
//! |---|---|
//! | `key=value` (or `key==value`) | have `key` equal to `value` |
//! | `key!=value` | do not have `key` equal to `value` (missing counts) |
//! | `key in (a,b)` | have `key` equal to one of the values |
//! | `key notin (a,b)` | do not have `key` equal to any of them (missing counts) |
//! | `key` | have `key` |
//! | `!key` | do not have `key` |
//!
//! Keys and values are runs of any characters but whitespace and
//! `=!,()`; whitespace between tokens is ignored. Example:
//! `customer=acme, line in (3,4), !decommissioned`.

use std::collections::BTreeMap;
use std::fmt;

use crate::store::StrMap;

/// Longest selector text accepted.
pub const MAX_SELECTOR_LEN: usize = 1024;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`
    Eq(String, String),
    /// `key!=value`
    NotEq(String, String),
    /// `key in (a,b)`
    In(String, Vec<String>),
    /// `key notin (a,b)`
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    NotExists(String),
}

/// What a selector reads: a device's labels, as the registry keeps them
/// ([`StrMap`]) or as a Hello or an enrollment carries them.
pub trait Labels {
    /// The value of label `key`.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for StrMap {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Requirement {
    fn matches(&self, labels: &(impl Labels + ?Sized)) -> bool {
        let has = |vs: &[String], x: &str| vs.iter().any(|v| v == x);
        match self {
            Requirement::Eq(k, v) => labels.label(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => labels.label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => labels.label(k).is_some_and(|x| has(vs, x)),
            Requirement::NotIn(k, vs) => !labels.label(k).is_some_and(|x| has(vs, x)),
            Requirement::Exists(k) => labels.label(k).is_some(),
            Requirement::NotExists(k) => labels.label(k).is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Eq(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEq(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::NotExists(k) => write!(f, "!{k}"),
        }
    }
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses selector text. The error says where and what was expected.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError {
                text: text.chars().take(60).collect(),
                column: MAX_SELECTOR_LEN,
                message: format!("longer than {MAX_SELECTOR_LEN} bytes"),
            });
        }
        Parser::new(text).selector()
    }

    /// True when the labels satisfy every requirement.
    pub fn matches(&self, labels: &(impl Labels + ?Sized)) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, SelectorError> {
        Self::parse(s)
    }
}

/// A selector that does not parse: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {text:?}, at column {column}: {message}; write e.g. `customer=acme,line in (3,4),!retired`")]
pub struct SelectorError {
    /// The selector text (clipped).
    pub text: String,
    /// 1-based character column of the problem.
    pub column: usize,
    /// What was wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Eq,
    NotEq,
    Bang,
    Comma,
    Open,
    Close,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "{w:?}"),
            Tok::Eq => f.write_str("`=`"),
            Tok::NotEq => f.write_str("`!=`"),
            Tok::Bang => f.write_str("`!`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Open => f.write_str("`(`"),
            Tok::Close => f.write_str("`)`"),
            Tok::End => f.write_str("the end"),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
    /// Column where the last token returned by `next` started.
    tok_col: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            chars: text.chars().collect(),
            pos: 0,
            tok_col: 1,
        }
    }

    fn err(&self, column: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            text: self.text.chars().take(120).collect(),
            column,
            message: message.into(),
        }
    }

    fn is_word_char(c: char) -> bool {
        !(c.is_whitespace() || matches!(c, '=' | '!' | ',' | '(' | ')'))
    }

    fn next(&mut self) -> Tok {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
        self.tok_col = self.pos + 1;
        let Some(&c) = self.chars.get(self.pos) else {
            return Tok::End;
        };
        self.pos += 1;
        match c {
            '=' => {
                if self.chars.get(self.pos) == Some(&'=') {
                    self.pos += 1;
                }
                Tok::Eq
            }
            '!' => {
                if self.chars.get(self.pos) == Some(&'=') {
                    self.pos += 1;
                    Tok::NotEq
                } else {
                    Tok::Bang
                }
            }
            ',' => Tok::Comma,
            '(' => Tok::Open,
            ')' => Tok::Close,
            _ => {
                let start = self.pos - 1;
                while self.pos < self.chars.len() && Self::is_word_char(self.chars[self.pos]) {
                    self.pos += 1;
                }
                Tok::Word(self.chars[start..self.pos].iter().collect())
            }
        }
    }

    fn peek(&mut self) -> (Tok, usize) {
        let (pos, col) = (self.pos, self.tok_col);
        let t = self.next();
        let c = self.tok_col;
        self.pos = pos;
        self.tok_col = col;
        (t, c)
    }

    fn word(&mut self, what: &str) -> Result<String, SelectorError> {
        match self.next() {
            Tok::Word(w) => Ok(w),
            other => Err(self.err(self.tok_col, format!("expected {what}, found {other}"))),
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().0 == Tok::End {
            return Err(self.err(1, "the selector is empty"));
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                Tok::Comma => continue,
                Tok::End => break,
                other => {
                    return Err(self.err(
                        self.tok_col,
                        format!("expected `,` or the end, found {other}"),
                    ))
                }
            }
        }
        Ok(Selector { requirements })
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek().0 == Tok::Bang {
            self.next();
            return Ok(Requirement::NotExists(self.word("a label key after `!`")?));
        }
        let key = self.word("a label key")?;
        let (t, _) = self.peek();
        match t {
            Tok::Eq => {
                self.next();
                Ok(Requirement::Eq(key, self.word("a value after `=`")?))
            }
            Tok::NotEq => {
                self.next();
                Ok(Requirement::NotEq(key, self.word("a value after `!=`")?))
            }
            Tok::Word(w) if w == "in" || w == "notin" => {
                self.next();
                let values = self.list(&w)?;
                Ok(if w == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                })
            }
            Tok::Comma | Tok::End => Ok(Requirement::Exists(key)),
            other => {
                self.next();
                Err(self.err(
                    self.tok_col,
                    format!("expected `=`, `!=`, `in`, `notin`, `,` or the end after {key:?}, found {other}"),
                ))
            }
        }
    }

    fn list(&mut self, op: &str) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Tok::Open => {}
            other => {
                return Err(self.err(
                    self.tok_col,
                    format!("expected `(` after `{op}`, found {other}"),
                ))
            }
        }
        let mut values = vec![self.word("a value in the list")?];
        loop {
            match self.next() {
                Tok::Comma => values.push(self.word("a value after `,`")?),
                Tok::Close => return Ok(values),
                other => {
                    return Err(self.err(
                        self.tok_col,
                        format!("expected `,` or `)` in the list, found {other}"),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::labels;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn equality_and_conjunction() {
        let s = sel("customer=acme,line=3");
        assert!(s.matches(&labels(&[
            ("customer", "acme"),
            ("line", "3"),
            ("site", "x")
        ])));
        assert!(!s.matches(&labels(&[("customer", "acme"), ("line", "4")])));
        assert!(!s.matches(&labels(&[("customer", "acme")])));
        assert_eq!(sel("customer==acme"), sel("customer=acme"));
    }

    #[test]
    fn inequality_counts_a_missing_label_as_different() {
        let s = sel("customer!=acme");
        assert!(s.matches(&labels(&[("customer", "globex")])));
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("customer", "acme")])));
    }

    #[test]
    fn set_membership() {
        let s = sel("line in (3, 4)");
        assert!(s.matches(&labels(&[("line", "4")])));
        assert!(!s.matches(&labels(&[("line", "5")])));
        assert!(!s.matches(&labels(&[])));
        let s = sel("line notin (3,4)");
        assert!(s.matches(&labels(&[("line", "5")])));
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("line", "3")])));
    }

    #[test]
    fn existence() {
        let s = sel("hw_rev, !retired");
        assert!(s.matches(&labels(&[("hw_rev", "b")])));
        assert!(!s.matches(&labels(&[("hw_rev", "b"), ("retired", "yes")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn whitespace_is_free_and_display_normalizes() {
        let s = sel("  customer = acme ,line in(3,4) , !x ");
        assert_eq!(s.to_string(), "customer=acme,line in (3,4),!x");
        assert_eq!(sel(&s.to_string()), s);
        assert_eq!(s.requirements().len(), 3);
    }

    #[test]
    fn values_may_hold_dots_slashes_and_colons() {
        let s = sel("site=eu-west/dc.1:a");
        assert!(s.matches(&labels(&[("site", "eu-west/dc.1:a")])));
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            ("", 1, "empty"),
            ("   ", 1, "empty"),
            ("customer=", 10, "a value after `=`"),
            ("=acme", 1, "a label key"),
            ("a=b,", 5, "a label key"),
            ("a=b c=d", 5, "expected `,` or the end"),
            ("line in 3", 9, "expected `(`"),
            ("line in (3,", 12, "a value after `,`"),
            ("line in (3 4)", 12, "expected `,` or `)`"),
            ("line in ()", 10, "a value in the list"),
            ("!", 2, "a label key after `!`"),
            ("a (b)", 3, "expected `=`"),
        ];
        for (text, column, needle) in cases {
            let e = Selector::parse(text).expect_err(text);
            assert_eq!(e.column, column, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
        let long = "a=b,".repeat(300);
        assert!(Selector::parse(&long)
            .unwrap_err()
            .message
            .contains("longer"));
    }
}
