//! A valid preference set in a fraction of the memory of its `serde_json` form, for the
//! read cache (issue 17.7: four times the recipients in the same `read_cache_mb`).
//!
//! A parsed `serde_json` object is a B-tree whose every node is a fixed 632 bytes, however
//! few keys it holds, and each key and string is an allocation of its own: a typical stored
//! set of 170 bytes of text took 1.3–4.9 KB parsed. Here the members of all the set's
//! objects are one boxed slice of 24-byte members, each object's contiguous and sorted as
//! `serde_json`'s map sorts them (so a look-up is a binary search and a materialised copy
//! keeps the order); keys are shared through an [`Interner`] (workflow, category and channel
//! keys repeat across recipients); booleans are inline; anything else a valid set holds (a
//! condition list, a lock's `"replace"`) is kept as its JSON text, parsed by whoever reads
//! it (`resolve::Leaf`): evaluation reads only the few nodes a workflow needs, and condition
//! lists are the rare ones.

use std::borrow::Borrow;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::model::PreferenceSet;

/// A valid preference set, compact: see the module docs. Made from a [`PreferenceSet`] and
/// turned back into one without loss.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactSet(Box<Inner>);

#[derive(Clone, Debug, PartialEq)]
struct Inner {
    /// The members of every object, each object's contiguous and in key order, the root's
    /// first.
    members: Box<[Member]>,
    /// The JSON text of the values that are neither booleans nor objects.
    texts: Box<[Box<str>]>,
    /// How many members the root has.
    root_len: u32,
}

/// A key and its value: 24 bytes (a thin shared key and a 12-byte slot).
#[derive(Clone, Debug, PartialEq)]
struct Member {
    key: Key,
    value: Slot,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    Bool(bool),
    /// An object: its members are `members[start..start + len]`.
    Obj {
        start: u32,
        len: u32,
    },
    /// `texts[i]`.
    Json(u32),
}

/// A shared key: a thin pointer (an `Arc<str>` would be twice the size in every member).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key(Arc<String>);

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that the interner is searched by `&str`.
        self.0.as_str().hash(state);
    }
}

/// An object of a compact set.
#[derive(Clone, Copy, Debug)]
pub struct Obj<'a> {
    set: &'a Inner,
    members: &'a [Member],
}

/// One member's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Item<'a> {
    Bool(bool),
    Obj(Obj<'a>),
    /// Any other value, as its JSON text (as `serde_json` writes it).
    Json(&'a str),
}

impl PartialEq for Obj<'_> {
    fn eq(&self, other: &Obj<'_>) -> bool {
        self.to_map() == other.to_map()
    }
}

impl CompactSet {
    pub fn new(set: &PreferenceSet, keys: &Interner) -> CompactSet {
        let mut keys = keys.lock();
        let mut members = Vec::new();
        let mut texts = Vec::new();
        // Breadth first: an object's members are laid out together, and its children's
        // after them, each object's place known when its parent's slot is written.
        let mut queue = VecDeque::from([set.as_map()]);
        let mut next = set.as_map().len();
        while let Some(map) = queue.pop_front() {
            for (key, value) in map {
                let slot = match value {
                    Value::Bool(b) => Slot::Bool(*b),
                    Value::Object(child) => {
                        let slot = Slot::Obj {
                            start: index(next),
                            len: index(child.len()),
                        };
                        next += child.len();
                        queue.push_back(child);
                        slot
                    }
                    other => {
                        texts.push(other.to_string().into_boxed_str());
                        Slot::Json(index(texts.len() - 1))
                    }
                };
                members.push(Member {
                    key: keys.intern(key),
                    value: slot,
                });
            }
        }
        CompactSet(Box::new(Inner {
            members: members.into_boxed_slice(),
            texts: texts.into_boxed_slice(),
            root_len: index(set.as_map().len()),
        }))
    }

    pub fn root(&self) -> Obj<'_> {
        let set = &*self.0;
        Obj {
            set,
            members: set.members.get(..set.root_len as usize).unwrap_or_default(),
        }
    }

    /// The set as `serde_json` holds it, for the code that needs a [`PreferenceSet`].
    pub fn to_set(&self) -> PreferenceSet {
        PreferenceSet::from_valid(self.root().to_map())
    }

    /// The length of the set's JSON text as `serde_json` writes it (keys are counted
    /// unescaped).
    pub fn text_len(&self) -> usize {
        self.root().text_len()
    }

    /// The bytes this set's allocations take from the allocator (shared keys excepted: they
    /// are counted once, by the interner), as [`allocated`] rounds them.
    pub fn heap_bytes(&self) -> usize {
        let set = &*self.0;
        allocated(std::mem::size_of::<Inner>())
            + allocated(std::mem::size_of_val::<[Member]>(&set.members))
            + allocated(std::mem::size_of_val::<[Box<str>]>(&set.texts))
            + set.texts.iter().map(|t| allocated(t.len())).sum::<usize>()
    }
}

/// A position in a set's members or texts. A set is at most a few hundred KiB of text, so
/// far fewer than 2^32 members.
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'a> Obj<'a> {
    /// The value of member `key`.
    pub fn get(self, key: &str) -> Option<Item<'a>> {
        let i = self
            .members
            .binary_search_by(|m| m.key.0.as_str().cmp(key))
            .ok()?;
        Some(self.item(&self.members[i]))
    }

    fn item(self, member: &'a Member) -> Item<'a> {
        let set = self.set;
        match member.value {
            Slot::Bool(b) => Item::Bool(b),
            Slot::Obj { start, len } => {
                let (start, len) = (start as usize, len as usize);
                Item::Obj(Obj {
                    set,
                    members: set.members.get(start..start + len).unwrap_or_default(),
                })
            }
            Slot::Json(i) => Item::Json(set.texts.get(i as usize).map_or("null", |t| t)),
        }
    }

    /// The members, in key order.
    pub fn members(self) -> Members<'a> {
        Members {
            obj: self,
            members: self.members.iter(),
        }
    }

    /// The member keys, in order.
    pub fn keys(self) -> impl Iterator<Item = &'a str> {
        self.members.iter().map(|m| m.key.0.as_str())
    }

    pub fn to_map(self) -> Map<String, Value> {
        self.members
            .iter()
            .map(|m| (m.key.0.to_string(), self.item(m).to_value()))
            .collect()
    }

    fn text_len(self) -> usize {
        // `{}`, a comma between members, and `"key":` before each value.
        let members: usize = self
            .members
            .iter()
            .map(|m| {
                m.key.0.len()
                    + 3
                    + match self.item(m) {
                        Item::Bool(true) => 4,
                        Item::Bool(false) => 5,
                        Item::Obj(obj) => obj.text_len(),
                        Item::Json(text) => text.len(),
                    }
            })
            .sum();
        2 + members + self.members.len().saturating_sub(1)
    }
}

/// The members of an [`Obj`], keys and values, in key order: a type that can be named, so
/// that a walk over several objects' members keeps them without boxing.
#[derive(Clone, Debug)]
pub struct Members<'a> {
    obj: Obj<'a>,
    members: std::slice::Iter<'a, Member>,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, Item<'a>);

    fn next(&mut self) -> Option<(&'a str, Item<'a>)> {
        let member = self.members.next()?;
        Some((member.key.0.as_str(), self.obj.item(member)))
    }
}

impl Item<'_> {
    pub fn to_value(self) -> Value {
        match self {
            Item::Bool(b) => Value::Bool(b),
            Item::Obj(obj) => Value::Object(obj.to_map()),
            // The text was written by `serde_json` from a value: it parses back.
            Item::Json(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        }
    }
}

/// Shares equal keys between compact sets. Keys no set holds any more are dropped when the
/// interner has doubled since it last looked, so keys that are written once (a channel id
/// of a single recipient) do not pile up.
#[derive(Default)]
pub struct Interner(Mutex<Keys>);

#[derive(Default)]
struct Keys {
    set: HashSet<Key>,
    /// The size at which unshared keys are dropped next.
    sweep_at: usize,
}

/// The interner's size below which it is never swept.
const MIN_SWEEP: usize = 4096;

impl Interner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        // Keys are inserted whole: a panic elsewhere cannot leave the set inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys it holds now (for tests).
    pub fn len(&self) -> usize {
        self.lock().set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Keys {
    fn intern(&mut self, key: &str) -> Key {
        if let Some(shared) = self.set.get(key) {
            return shared.clone();
        }
        if self.set.len() >= self.sweep_at.max(MIN_SWEEP) {
            self.set.retain(|k| Arc::strong_count(&k.0) > 1);
            self.sweep_at = self.set.len() * 2;
        }
        let shared = Key(Arc::new(key.to_string()));
        self.set.insert(shared.clone());
        shared
    }
}

/// The bytes the allocator hands out for a request of `n` (mimalloc's size classes: steps
/// of 8 bytes up to 64, then four classes per doubling: 80, 96, 112, 128, 160, ...), so
/// that sizes computed from lengths are what the memory really holds.
pub fn allocated(n: usize) -> usize {
    match n {
        0 => 0,
        1..=64 => n.next_multiple_of(8),
        _ => n.next_multiple_of(n.next_power_of_two() / 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SetKind;

    fn set(value: Value) -> PreferenceSet {
        PreferenceSet::parse(&value, SetKind::Default, "preferences").unwrap()
    }

    #[test]
    fn a_compact_set_turns_back_into_the_same_set() {
        let keys = Interner::default();
        let original = set(serde_json::json!({
            "channel_types": { "email": true, "push": false },
            "commercial_subscribed": false,
            "workflows": {
                "alert-fired": { "conditions": [
                    { "variable": "recipient.muted_alert_ids", "operator": "not_contains",
                      "argument": "data.alert_id" }
                ] },
                "security-notice": { "__strategy__": "replace", "channel_types": { "email": true } },
                "comment-reply": true,
            },
        }));
        let compact = CompactSet::new(&original, &keys);
        assert_eq!(compact.to_set(), original);
        assert_eq!(compact.text_len(), original.to_value().to_string().len());
        let workflows = match compact.root().get("workflows") {
            Some(Item::Obj(obj)) => obj,
            other => panic!("workflows: {other:?}"),
        };
        assert_eq!(
            compact.root().get("commercial_subscribed"),
            Some(Item::Bool(false))
        );
        let notice = match workflows.get("security-notice") {
            Some(Item::Obj(obj)) => obj,
            other => panic!("security-notice: {other:?}"),
        };
        assert_eq!(notice.get("__strategy__"), Some(Item::Json("\"replace\"")));
        assert_eq!(
            workflows.keys().collect::<Vec<_>>(),
            ["alert-fired", "comment-reply", "security-notice"]
        );
        assert_eq!(workflows.get("comment-reply"), Some(Item::Bool(true)));
        assert_eq!(workflows.get("missing"), None);
    }

    #[test]
    fn equal_keys_are_shared_and_unshared_ones_swept() {
        let keys = Interner::default();
        let a = CompactSet::new(
            &set(serde_json::json!({ "channel_types": { "email": true } })),
            &keys,
        );
        let b = CompactSet::new(
            &set(serde_json::json!({ "channel_types": { "email": false } })),
            &keys,
        );
        assert_eq!(keys.len(), 2);
        let key = |s: &CompactSet| Arc::as_ptr(&s.0.members[0].key.0);
        assert_eq!(key(&a), key(&b));
        drop((a, b));
        // Past the sweep threshold, keys no set holds are dropped.
        for i in 0..=MIN_SWEEP {
            let channel = format!("c{i}");
            CompactSet::new(
                &set(serde_json::json!({ "channels": { channel: true } })),
                &keys,
            );
        }
        assert!(keys.len() <= MIN_SWEEP, "{} keys kept", keys.len());
    }

    #[test]
    fn a_member_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<Member>(), 24);
    }

    #[test]
    fn allocated_sizes_round_up_to_the_size_classes() {
        let cases = [
            (0, 0),
            (1, 8),
            (24, 24),
            (65, 80),
            (129, 160),
            (200, 224),
            (1000, 1024),
        ];
        for (n, size) in cases {
            assert_eq!(allocated(n), size, "allocated({n})");
        }
    }
}
