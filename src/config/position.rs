//! Where each YAML node sits in its file, so every validation problem can name
//! `file:line:column`. serde gives us the *path* of a problem (`connections[1].secrets.id`);
//! this index turns the path into a position.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column (both 1-based) of each node, keyed by its path.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    by_path: HashMap<String, (usize, usize)>,
}

impl Positions {
    /// Indexes `text`. A text the YAML parser rejects yields an empty index (serde reports
    /// the syntax error with its own position).
    pub fn index(text: &str) -> Positions {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Positions::default();
        }
        Positions {
            by_path: builder.by_path,
        }
    }

    /// Position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(position) = self.by_path.get(path) {
                return Some(*position);
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }
}

/// The path one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// Joins a child onto a path the way [`crate::config`] formats paths.
pub fn child_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a sequence index onto a path.
pub fn child_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        /// Where the mapping started, while its position is not yet recorded: the parser
        /// marks a block mapping at its first `:`, so a mapping without a key of its own
        /// (a sequence item, the root) is placed at its first key instead.
        start: Option<(usize, usize)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    by_path: HashMap<String, (usize, usize)>,
}

impl Builder {
    /// The path of the node that starts now, or None when the node is a mapping key.
    fn node_path(&mut self, event: &Event) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = child_index(path, *next);
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, .. }) => match key.take() {
                Some(k) => Some(child_key(path, &k)),
                None => {
                    // This node is a key. Scalar keys name their value; others are ignored.
                    *key = Some(match event {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => String::from("?"),
                    });
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let position = (mark.line(), mark.col() + 1);
        match event {
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    path,
                    start: Some(start),
                    ..
                }) = self.stack.pop()
                {
                    // An empty mapping: its start is all we have.
                    self.by_path.entry(path).or_insert(start);
                }
            }
            Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                let path = self.node_path(&event);
                // A key records its position under the path of its value, so a problem with a
                // value (or an unknown key) points at the key's line.
                let recorded = match (&path, self.stack.last_mut()) {
                    (Some(p), _) => Some(p.clone()),
                    (
                        None,
                        Some(Frame::Map {
                            path,
                            key: Some(k),
                            start,
                        }),
                    ) => {
                        // The first key also places a mapping not yet placed.
                        if start.take().is_some() {
                            self.by_path.entry(path.clone()).or_insert(position);
                        }
                        Some(child_key(path, k))
                    }
                    (None, _) => None,
                };
                let own_map = matches!(event, Event::MappingStart(..)) && path.is_some();
                if let Some(recorded) = recorded {
                    if own_map && !self.by_path.contains_key(&recorded) {
                        // Placed at its first key (or its start, if it has none).
                        self.stack.push(Frame::Map {
                            path: recorded,
                            key: None,
                            start: Some(position),
                        });
                        return;
                    }
                    self.by_path.entry(recorded).or_insert(position);
                }
                match event {
                    Event::MappingStart(..) => self.stack.push(Frame::Map {
                        path: path.unwrap_or_default(),
                        key: None,
                        start: None,
                    }),
                    Event::SequenceStart(..) => self.stack.push(Frame::Seq {
                        path: path.unwrap_or_default(),
                        next: 0,
                    }),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_values_and_sequence_items() {
        let text =
            "proxy:\n  listen: nowhere\nconnections:\n  - key: a\n    secrets:\n      id: x\n";
        let p = Positions::index(text);
        assert_eq!(p.find("proxy.listen"), Some((2, 3)));
        assert_eq!(p.find("connections[0].key"), Some((4, 5)));
        assert_eq!(p.find("connections[0].secrets.id"), Some((6, 7)));
        // unknown paths fall back to the nearest ancestor
        assert_eq!(
            p.find("connections[0].secrets.nope"),
            p.find("connections[0].secrets")
        );
    }

    #[test]
    fn a_mapping_without_a_key_of_its_own_is_placed_at_its_first_key() {
        let text = "connections:\n  - key: a\n    x: 1\n  - { key: b }\n  - {}\n";
        let p = Positions::index(text);
        assert_eq!(p.find("connections[0]"), Some((2, 5)));
        assert_eq!(p.find("connections[1]"), Some((4, 7)));
        assert_eq!(p.find("connections[2]"), Some((5, 5)));
        assert_eq!(p.find(""), Some((1, 1)));
        // a mapping that is a key's value is placed at that key
        let p = Positions::index("proxy:\n  listen: x\n");
        assert_eq!(p.find("proxy"), Some((1, 1)));
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2]"), "a.b");
        assert_eq!(parent("a.b"), "a");
        assert_eq!(parent("a"), "");
    }
}
