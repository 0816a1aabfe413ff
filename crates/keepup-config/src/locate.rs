//! Finds the line of any value in the file by its path (`lb.frontend[1].bind`),
//! so checks on plain (unspanned) sections such as `[lb]` and `[timing]`
//! still report `file:line:`. The file is parsed a second time by the toml
//! crate's spanned document parser; nothing here parses TOML by hand.

use std::borrow::Cow;
use toml::de::{DeTable, DeValue};

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A table key.
    Key(Cow<'static, str>),
    /// An element of an array (of tables).
    Index(usize),
}

impl From<&'static str> for Step {
    fn from(k: &'static str) -> Step {
        Step::Key(Cow::Borrowed(k))
    }
}

impl From<usize> for Step {
    fn from(i: usize) -> Step {
        Step::Index(i)
    }
}

/// A path into the document, e.g. `["lb", "frontend", 1, "bind"]`.
pub type Path = Vec<Step>;

/// Builds a [`Path`] from keys and indexes: `path!["lb", "pool", 0, "backend", 2]`.
#[macro_export]
macro_rules! path {
    ($($s:expr),* $(,)?) => { vec![$($crate::locate::Step::from($s)),*] };
}

/// Byte offset of the deepest value along `path` that the file spells out
/// (a default that is not written falls back to its table), or `None`
/// when even the first step is absent.
pub fn offset_of(text: &str, path: &[Step]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<usize> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&toml::Spanned<DeValue<'_>>> = None;
    for step in path {
        let next = match (step, table, value) {
            (Step::Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_ref())
                .map(|(key, v)| (key.span().start, v)),
            (Step::Index(i), _, Some(v)) => match v.get_ref() {
                DeValue::Array(a) => a.get(*i).map(|e| (e.span().start, e)),
                _ => None,
            },
            _ => None,
        };
        let Some((start, v)) = next else { break };
        best = Some(start);
        value = Some(v);
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[timing]\nheartbeat_ms = 100\n\n[lb]\n[[lb.frontend]]\nname = \"a\"\nbind = \"x\"\n\n[[lb.frontend]]\nname = \"b\"\n\n[[lb.pool]]\nname = \"p\"\n[[lb.pool.backend]]\nname = \"w1\"\naddress = \"bad\"\n";

    fn line(path: Path) -> Option<usize> {
        offset_of(TEXT, &path).map(|o| crate::line_of(TEXT, o))
    }

    #[test]
    fn paths_find_their_lines() {
        assert_eq!(line(path!["timing", "heartbeat_ms"]), Some(2));
        // A default that is not written: the table's own line.
        assert_eq!(line(path!["timing", "dead_ms"]), Some(1));
        assert_eq!(line(path!["lb", "frontend", 0, "bind"]), Some(7));
        assert_eq!(line(path!["lb", "frontend", 1, "bind"]), Some(9));
        assert_eq!(
            line(path!["lb", "pool", 0, "backend", 0, "address"]),
            Some(16)
        );
        assert_eq!(line(path!["database"]), None);
    }
}
