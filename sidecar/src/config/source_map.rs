//! A map between field paths (`upstreams[0].nodes[1].port`) and the lines and
//! columns they were written at.
//!
//! serde gives a parse error a line but no field path, and a semantic error
//! found after parsing has a path but no line. Rather than wrap every config
//! field in `serde_saphyr::Spanned`, which would leak into the types the rest
//! of the sidecar uses, we read the text a second time, only when there is an
//! error to report, into a bare tree of `Spanned` nodes and record where each
//! key and value starts. That answers both questions:
//!
//! - [`SourceMap::path_at`]: the innermost path written at or before a
//!   position (for parse errors). serde-saphyr places a type error on the
//!   key of the field being read, and an unknown, missing or repeated field
//!   on the mapping: at a key, the caller says which of the two it means;
//! - [`SourceMap::locate`]: where a path, or its nearest written ancestor, is
//!   (for semantic errors). A path names the canonical field (`upstream`,
//!   `uris`, `discovery[0]`); when the user wrote the APISIX spelling
//!   (`upstream_id`, `uri`, a top-level `discovery_type`), the lookup finds
//!   that and reports the path as written.
//!
//! When the text is not even valid YAML the map is absent and errors carry
//! the parser's position alone.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

/// Where each key and value of a YAML document starts.
#[derive(Debug, Default)]
pub(super) struct SourceMap {
    /// Positions in document order: `(line, column, path, key)`. A value's
    /// entry names the value; a key's names the mapping it belongs to, and
    /// carries the path of the field it starts.
    entries: Vec<(u64, u64, String, Option<String>)>,
    /// Every written path with the position to report for it: the value of a
    /// scalar, the key of a mapping or list.
    paths: HashMap<String, Position>,
}

/// A line and column, both 1-based.
pub(super) type Position = (u64, u64);

/// One YAML node, reduced to its shape.
enum Node {
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// A mapping key as text (`?` for a key that is itself a list or mapping).
struct Key(String);

/// Reads any YAML node into a [`Node`].
struct NodeVisitor;

// === impl SourceMap ===

impl SourceMap {
    /// Reads `text` as untyped YAML; `None` if it is not valid YAML.
    pub(super) fn parse(text: &str) -> Option<Self> {
        let options = serde_saphyr::options! { with_snippet: false };
        let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options).ok()?;
        let mut map = SourceMap::default();
        map.walk(&root, None, String::new());
        // Stable: a mapping's own entry stays before its first key's.
        map.entries.sort_by_key(|(line, col, _, _)| (*line, *col));
        Some(map)
    }

    /// The innermost path written at or before `pos`; `""` is the root. At a
    /// key, the field the key starts if `field_at_key`, else its mapping.
    pub(super) fn path_at(&self, pos: Position, field_at_key: bool) -> Option<&str> {
        let after = self.entries.partition_point(|(l, c, _, _)| (*l, *c) <= pos);
        let (line, col, path, key) = self.entries.get(after.checked_sub(1)?)?;
        match key {
            Some(field) if field_at_key && (*line, *col) == pos => Some(field),
            _ => Some(path),
        }
    }

    /// Where `path` is written: `(path as written, position)`. When the path
    /// itself is absent (a defaulted field), the position is that of its
    /// nearest written ancestor.
    pub(super) fn locate(&self, path: &str) -> Option<(String, Position)> {
        let written = as_written(path);
        let candidates = [path.to_owned(), written];
        // Take the spelling whose written ancestor is deepest; on a tie, the
        // APISIX spelling, which is the one a user who wrote neither knows.
        let mut best: Option<(usize, &String, Position)> = None;
        for candidate in &candidates {
            if let Some((depth, pos)) = self.deepest_ancestor(candidate)
                && best.is_none_or(|(d, _, _)| depth >= d)
            {
                best = Some((depth, candidate, pos));
            }
        }
        best.map(|(_, path, pos)| (path.clone(), pos))
    }

    /// The segment count and position of the deepest written prefix of `path`.
    fn deepest_ancestor(&self, path: &str) -> Option<(usize, Position)> {
        let mut prefix = path;
        loop {
            if let Some(pos) = self.paths.get(prefix) {
                return Some((segments(prefix), *pos));
            }
            prefix = parent(prefix)?;
        }
    }

    fn walk(&mut self, node: &Spanned<Node>, key: Option<Location>, path: String) {
        let at = node.referenced;
        self.entry(at, path.clone(), None);
        let shown = match (&node.value, key) {
            (Node::Map(_) | Node::Seq(_), Some(key)) => key,
            _ => at,
        };
        if shown.line() > 0 {
            self.paths
                .insert(path.clone(), (shown.line(), shown.column()));
        }
        match &node.value {
            Node::Map(entries) => {
                for (k, v) in entries {
                    let child = if path.is_empty() {
                        k.value.0.clone()
                    } else {
                        format!("{path}.{}", k.value.0)
                    };
                    self.entry(k.referenced, path.clone(), Some(child.clone()));
                    self.walk(v, Some(k.referenced), child);
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, None, format!("{path}[{i}]"));
                }
            }
            Node::Scalar => {}
        }
    }

    fn entry(&mut self, at: Location, path: String, key: Option<String>) {
        if at.line() > 0 {
            self.entries.push((at.line(), at.column(), path, key));
        }
    }
}

/// `path` with canonical field names replaced by the APISIX spellings a user
/// may have written instead.
fn as_written(path: &str) -> String {
    let route = path.starts_with("routes[");
    let upstream = path.starts_with("upstreams[");
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('.') {
        let name = segment.split('[').next().unwrap_or(segment);
        match name {
            // A top-level `discovery_type`/`service_name` is the first source.
            "discovery" if upstream && segment == "discovery[0]" => {}
            "upstream" if route => out.push("upstream_id"),
            "uris" if route => out.push("uri"),
            "hosts" if route => out.push("host"),
            _ => out.push(segment),
        }
    }
    out.join(".")
}

/// The path one level up: `a.b[0]` → `a.b` → `a` → `""`; `None` above the root.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = match (path.rfind('.'), path.rfind('[')) {
        (Some(dot), Some(bracket)) => dot.max(bracket),
        (Some(i), None) | (None, Some(i)) => i,
        (None, None) => 0,
    };
    Some(&path[..cut])
}

/// How many steps `path` is below the root.
fn segments(path: &str) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.matches(['.', '[']).count()
    }
}

// === impl Node ===

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
}

// === impl Key ===

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("~".to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Key("?".to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Key("?".to_owned()))
            }
        }

        d.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
routes:
  - name: api
    upstream_id: web
upstreams:
  - name: web
    discovery_type: file
    nodes: {\"a:1\": 1}
    checks:
      active: {type: tcp}
";

    #[test]
    fn locates_written_paths() {
        let map = SourceMap::parse(YAML).expect("valid YAML");
        assert_eq!(
            map.locate("routes[0].name"),
            Some(("routes[0].name".into(), (2, 11)))
        );
        // A mapping value is reported at its key.
        assert_eq!(
            map.locate("upstreams[0].checks"),
            Some(("upstreams[0].checks".into(), (8, 5)))
        );
    }

    #[test]
    fn locates_apisix_spellings_and_ancestors() {
        let map = SourceMap::parse(YAML).expect("valid YAML");
        let (path, pos) = map.locate("routes[0].upstream").expect("found");
        assert_eq!((path.as_str(), pos), ("routes[0].upstream_id", (3, 18)));
        let (path, pos) = map
            .locate("upstreams[0].discovery[0].discovery_type")
            .expect("found");
        assert_eq!(
            (path.as_str(), pos),
            ("upstreams[0].discovery_type", (6, 21))
        );
        // Not written at all: the nearest ancestor's position.
        let (path, pos) = map.locate("upstreams[0].nodes[0].port").expect("found");
        assert_eq!((path.as_str(), pos), ("upstreams[0].nodes[0].port", (7, 5)));
    }

    #[test]
    fn finds_the_path_at_a_position() {
        let map = SourceMap::parse(YAML).expect("valid YAML");
        // On a key: the mapping it belongs to, or the field it starts.
        assert_eq!(map.path_at((3, 5), false), Some("routes[0]"));
        assert_eq!(map.path_at((3, 5), true), Some("routes[0].upstream_id"));
        // On a value.
        assert_eq!(
            map.path_at((9, 22), true),
            Some("upstreams[0].checks.active.type")
        );
        assert_eq!(map.path_at((1, 1), false), Some(""));
    }

    #[test]
    fn invalid_yaml_has_no_map() {
        assert!(SourceMap::parse("a: [1").is_none());
    }
}
