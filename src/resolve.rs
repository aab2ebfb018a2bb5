//! The default hierarchy: which sets apply to a recipient (preferences.md §4.2), the deep
//! merge with admin locks (§4.3), and provenance.
//!
//! The merge is lazy: a [`Stack`] holds references to its layers, and [`Node::child`] walks
//! them top-down, so evaluation reads only the few nodes it needs and learns which layer
//! decided each value without building a merged copy. [`Stack::effective`] materialises the
//! same walk for reads, and [`Stack::write_response`] writes it as JSON text, so reads and
//! evaluation cannot disagree.
//!
//! This module does no I/O.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

use crate::model::compact::{self, CompactSet};
use crate::model::{DEFAULT_SET, PreferenceSet, STRATEGY_KEY};

/// Which layer a value came from, as named in reasons (`recipient:default`,
/// `recipient:acme`, `tenant:acme`, `environment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerId<'a> {
    Environment,
    Tenant(&'a str),
    Recipient(&'a str),
}

impl fmt::Display for LayerId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerId::Environment => f.write_str("environment"),
            LayerId::Tenant(id) => write!(f, "tenant:{id}"),
            LayerId::Recipient(set) => write!(f, "recipient:{set}"),
        }
    }
}

/// Everything the hierarchy may draw from for one recipient and one request.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    pub environment: &'a PreferenceSet,
    /// The tenant of the request and its default (stored `settings.preference_set`, else
    /// the config template, else none).
    pub tenant: Option<(&'a str, Option<&'a PreferenceSet>)>,
    /// The recipient's `default` set.
    pub recipient_default: Option<SetRef<'a>>,
    /// The recipient's set for the request's tenant.
    pub recipient_tenant: Option<SetRef<'a>>,
}

/// A set in either of its forms: as `serde_json` holds it (the config's, a tenant's), or
/// compact (a recipient's, as the read cache keeps it: `model::compact`).
#[derive(Clone, Copy, Debug)]
pub enum SetRef<'a> {
    Json(&'a PreferenceSet),
    Compact(&'a CompactSet),
}

impl<'a> From<&'a PreferenceSet> for SetRef<'a> {
    fn from(set: &'a PreferenceSet) -> SetRef<'a> {
        SetRef::Json(set)
    }
}

impl<'a> From<&'a CompactSet> for SetRef<'a> {
    fn from(set: &'a CompactSet) -> SetRef<'a> {
        SetRef::Compact(set)
    }
}

impl<'a> SetRef<'a> {
    fn root(self) -> Obj<'a> {
        match self {
            SetRef::Json(set) => Obj::Json(set.as_map()),
            SetRef::Compact(set) => Obj::Compact(set.root()),
        }
    }

    pub fn contains_key(self, key: &str) -> bool {
        self.root().get(key).is_some()
    }

    /// The set as `serde_json` holds it (a copy of a compact one).
    pub fn to_set(self) -> Cow<'a, PreferenceSet> {
        match self {
            SetRef::Json(set) => Cow::Borrowed(set),
            SetRef::Compact(set) => Cow::Owned(set.to_set()),
        }
    }
}

/// An object of one layer, in either form.
#[derive(Clone, Copy, Debug)]
enum Obj<'a> {
    Json(&'a Map<String, Value>),
    Compact(compact::Obj<'a>),
}

/// A member of an [`Obj`].
#[derive(Clone, Copy)]
enum Member<'a> {
    Null,
    Obj(Obj<'a>),
    Leaf(Leaf<'a>),
}

impl<'a> Member<'a> {
    fn of_value(value: &'a Value) -> Member<'a> {
        match value {
            Value::Null => Member::Null,
            Value::Object(child) => Member::Obj(Obj::Json(child)),
            leaf => Member::Leaf(Leaf::Value(leaf)),
        }
    }

    fn of_item(item: compact::Item<'a>) -> Member<'a> {
        static TRUE: Value = Value::Bool(true);
        static FALSE: Value = Value::Bool(false);
        match item {
            compact::Item::Bool(b) => Member::Leaf(Leaf::Value(if b { &TRUE } else { &FALSE })),
            compact::Item::Obj(child) => Member::Obj(Obj::Compact(child)),
            compact::Item::Json(text) => Member::Leaf(Leaf::Json(text)),
        }
    }
}

impl<'a> Obj<'a> {
    fn get(self, key: &str) -> Option<Member<'a>> {
        Some(match self {
            Obj::Json(map) => Member::of_value(map.get(key)?),
            Obj::Compact(obj) => Member::of_item(obj.get(key)?),
        })
    }

    fn members(self) -> Members<'a> {
        match self {
            Obj::Json(map) => Members::Json(map.iter()),
            Obj::Compact(obj) => Members::Compact(obj.members()),
        }
    }

    /// Writes this object as JSON text, as the merge of it alone materialises it: the
    /// layer as it is, without the `null`s a merge drops (a valid set has none) and with no
    /// lock to apply (a lock in the highest layer locks nothing). Most merged nodes come from
    /// one layer, and this skips the look-ups of [`Node::child`] for them.
    fn write_json(self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (key, member) in self.members() {
            if let Member::Null = member {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, key);
            out.push(b':');
            match member {
                Member::Obj(obj) => obj.write_json(out),
                Member::Leaf(leaf) => leaf.write_json(out),
                Member::Null => {}
            }
        }
        out.push(b'}');
    }

    fn is_locked(self) -> bool {
        match self {
            Obj::Json(map) => map.get(STRATEGY_KEY).and_then(Value::as_str) == Some("replace"),
            Obj::Compact(obj) => matches!(
                obj.get(STRATEGY_KEY),
                Some(compact::Item::Json("\"replace\""))
            ),
        }
    }
}

/// The members of an [`Obj`], in key order: both forms keep an object's keys sorted
/// (serde_json's map is a B-tree; a compact set sorts them as it does), which [`Merged`]
/// relies on.
enum Members<'a> {
    Json(serde_json::map::Iter<'a>),
    Compact(compact::Members<'a>),
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, Member<'a>);

    fn next(&mut self) -> Option<(&'a str, Member<'a>)> {
        match self {
            Members::Json(members) => members
                .next()
                .map(|(key, value)| (key.as_str(), Member::of_value(value))),
            Members::Compact(members) => members
                .next()
                .map(|(key, item)| (key, Member::of_item(item))),
        }
    }
}

/// A non-object value of the hierarchy: borrowed, or (from a compact set) JSON text that
/// is parsed when read, which only condition lists and locks are.
#[derive(Clone, Copy, Debug)]
pub enum Leaf<'a> {
    Value(&'a Value),
    Json(&'a str),
}

impl<'a> Leaf<'a> {
    /// Whether this is `false`, the one leaf that denies.
    pub fn is_false(self) -> bool {
        matches!(self, Leaf::Value(Value::Bool(false)))
    }

    pub fn to_value(self) -> Cow<'a, Value> {
        match self {
            Leaf::Value(value) => Cow::Borrowed(value),
            // Written by `serde_json` from a valid set's value: it parses back.
            Leaf::Json(text) => Cow::Owned(serde_json::from_str(text).unwrap_or(Value::Null)),
        }
    }

    /// Writes the value as JSON text. A compact set's text was written by serde_json from
    /// the value, so it is copied: parsing it and writing it again gives the same bytes.
    fn write_json(self, out: &mut Vec<u8>) {
        match self {
            Leaf::Value(Value::Bool(b)) => write_bool(out, *b),
            // Writing to a `Vec` cannot fail.
            Leaf::Value(value) => {
                let _ = serde_json::to_writer(&mut *out, value);
            }
            Leaf::Json(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
}

fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it (only `"`, `\` and control
/// characters are): copied when nothing in it needs escaping, as set keys nearly never do.
/// The writers of answers use it too (`api::evaluate`).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// At most three layers: environment, tenant default, recipient.
const MAX_LAYERS: usize = 3;

/// The layers that apply, lowest first.
#[derive(Clone, Copy, Debug)]
pub struct Stack<'a> {
    layers: [Option<(LayerId<'a>, SetRef<'a>)>; MAX_LAYERS],
    /// The layers §4.2 looked at, lowest first, and whether each had a set: what a reason
    /// says was considered. With a tenant that has neither a default nor a recipient set,
    /// the fallback looks at four.
    consulted: [Option<(LayerId<'a>, bool)>; MAX_LAYERS + 1],
}

impl<'a> Stack<'a> {
    /// The hierarchy of §4.2: with tenant T, `env ⊕ tenant_default(T) ⊕ recipient[T]` when
    /// either of the last two exists, otherwise (and with no tenant) `env ⊕ recipient["default"]`.
    pub fn for_recipient(sources: &Sources<'a>) -> Stack<'a> {
        let env = Some((LayerId::Environment, SetRef::Json(sources.environment)));
        let default = (
            LayerId::Recipient(DEFAULT_SET),
            sources.recipient_default.is_some(),
        );
        if let Some((tenant, tenant_default)) = sources.tenant {
            let tenant_layer = (LayerId::Tenant(tenant), tenant_default.is_some());
            let recipient_layer = (
                LayerId::Recipient(tenant),
                sources.recipient_tenant.is_some(),
            );
            if tenant_default.is_some() || sources.recipient_tenant.is_some() {
                return Stack {
                    layers: [
                        env,
                        tenant_default.map(|s| (LayerId::Tenant(tenant), SetRef::Json(s))),
                        sources
                            .recipient_tenant
                            .map(|s| (LayerId::Recipient(tenant), s)),
                    ],
                    consulted: [
                        Some((LayerId::Environment, true)),
                        Some(tenant_layer),
                        Some(recipient_layer),
                        None,
                    ],
                };
            }
            return Stack {
                layers: Stack::default_layers(env, sources),
                consulted: [
                    Some((LayerId::Environment, true)),
                    Some(tenant_layer),
                    Some(recipient_layer),
                    Some(default),
                ],
            };
        }
        Stack {
            layers: Stack::default_layers(env, sources),
            consulted: [
                Some((LayerId::Environment, true)),
                Some(default),
                None,
                None,
            ],
        }
    }

    /// `env ⊕ recipient["default"]`.
    fn default_layers(
        env: Option<(LayerId<'a>, SetRef<'a>)>,
        sources: &Sources<'a>,
    ) -> [Option<(LayerId<'a>, SetRef<'a>)>; MAX_LAYERS] {
        [
            env,
            sources
                .recipient_default
                .map(|s| (LayerId::Recipient(DEFAULT_SET), s)),
            None,
        ]
    }

    /// The layers the hierarchy looked at, lowest first, as reasons name them; one that had
    /// no set is marked `(none)`: `["environment", "tenant:acme", "recipient:acme (none)"]`.
    pub fn considered(&self) -> Vec<String> {
        self.consulted
            .iter()
            .flatten()
            .map(|(layer, present)| match present {
                true => layer.to_string(),
                false => format!("{layer} (none)"),
            })
            .collect()
    }

    /// Any layers, lowest first; `tenants.get` uses it for `env ⊕ tenant default`.
    pub fn from_layers(layers: &[(LayerId<'a>, SetRef<'a>)]) -> Stack<'a> {
        let mut stack = Stack {
            layers: [None; MAX_LAYERS],
            consulted: [None; MAX_LAYERS + 1],
        };
        for ((slot, consulted), layer) in stack
            .layers
            .iter_mut()
            .zip(stack.consulted.iter_mut())
            .zip(layers)
        {
            *slot = Some(*layer);
            *consulted = Some((layer.0, true));
        }
        stack
    }

    /// The merged root object.
    pub fn root(&self) -> Node<'a> {
        let mut parts = Parts::default();
        // Top-down: the highest layer first.
        for (id, set) in self.layers.iter().rev().flatten() {
            parts.push(*id, set.root());
        }
        Node::Object(parts)
    }

    /// The effective set: the deep merge of all layers with locks applied, locked nodes
    /// keeping their `__strategy__` marker.
    pub fn effective(&self) -> PreferenceSet {
        match self.root() {
            Node::Object(parts) => PreferenceSet::from_valid(parts.materialise()),
            _ => PreferenceSet::empty(),
        }
    }

    /// The effective set in the response shape, as JSON text appended to `out`: byte for
    /// byte what serde_json writes for `self.effective().into_response(id)`, without
    /// building either (`getPreferences` renders a cached recipient on every call rather
    /// than keep a rendered copy per entry: issue 17.7).
    pub fn write_response(&self, id: &str, out: &mut Vec<u8>) {
        let mut sections = match self.root() {
            Node::Object(parts) => Some(parts.members().peekable()),
            _ => None,
        };
        out.push(b'{');
        for (i, key) in PreferenceSet::RESPONSE_KEYS.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, key);
            out.push(b':');
            match key {
                PreferenceSet::TYPENAME_KEY => write_str(out, PreferenceSet::TYPENAME),
                PreferenceSet::ID_KEY => write_str(out, id),
                // Both in key order: a set's members are sections, so each is this one or
                // a later one (anything else, which a valid set does not have, is passed).
                section => {
                    let mut node = Node::Absent;
                    while let Some((key, next)) = sections
                        .as_mut()
                        .and_then(|s| s.next_if(|(key, _)| *key <= section))
                    {
                        if key == section {
                            node = next;
                        }
                    }
                    node.write_json(out);
                }
            }
        }
        out.push(b'}');
    }
}

/// The objects that contribute to one merged node, top-down.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parts<'a> {
    items: [Option<(LayerId<'a>, Obj<'a>)>; MAX_LAYERS],
    len: usize,
}

impl<'a> Parts<'a> {
    fn push(&mut self, id: LayerId<'a>, map: Obj<'a>) {
        if self.len < MAX_LAYERS {
            self.items[self.len] = Some((id, map));
            self.len += 1;
        }
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = (LayerId<'a>, Obj<'a>)> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }

    /// The merged members, in key order.
    fn members(&self) -> Merged<'a> {
        let mut layers = [None, None, None];
        for (slot, (_, obj)) in layers.iter_mut().zip(self.iter()) {
            *slot = Some(obj.members().peekable());
        }
        Merged {
            parts: *self,
            layers,
        }
    }

    fn materialise(&self) -> Map<String, Value> {
        self.members()
            .map(|(key, node)| {
                let value = match node {
                    Node::Object(parts) => Value::Object(parts.materialise()),
                    Node::Leaf(leaf, _) => leaf.to_value().into_owned(),
                    // Never yielded.
                    Node::Absent => Value::Null,
                };
                (key.to_string(), value)
            })
            .collect()
    }

    /// Writes the merged object as JSON text: what serde_json writes for
    /// [`Parts::materialise`]'s map, whose B-tree orders the members as [`Merged`] does.
    fn write_json(&self, out: &mut Vec<u8>) {
        if let (1, Some((_, obj))) = (self.len, self.items[0]) {
            return obj.write_json(out);
        }
        out.push(b'{');
        for (i, (key, node)) in self.members().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, key);
            out.push(b':');
            node.write_json(out);
        }
        out.push(b'}');
    }
}

/// The members of a merged object ([`Parts::members`]), in key order, each as
/// [`Node::child`] merges it, absent ones left out. Each layer's members are sorted
/// ([`Members`]), so their union is a merge of the layers; a member only one layer has is
/// that layer's (which is what `child` would find, without its look-ups).
struct Merged<'a> {
    parts: Parts<'a>,
    layers: [Option<std::iter::Peekable<Members<'a>>>; MAX_LAYERS],
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a str, Node<'a>);

    fn next(&mut self) -> Option<(&'a str, Node<'a>)> {
        loop {
            let key = self
                .layers
                .iter_mut()
                .flatten()
                .filter_map(|layer| layer.peek().map(|(key, _)| *key))
                .min()?;
            let mut found = None;
            let mut count = 0;
            for (i, layer) in self.layers.iter_mut().enumerate() {
                if let Some((_, member)) = layer.as_mut().and_then(|l| l.next_if(|m| m.0 == key)) {
                    found = self.parts.items[i].map(|(id, _)| (id, member));
                    count += 1;
                }
            }
            let node = match (count, found) {
                (1, Some((_, Member::Null))) | (_, None) => continue,
                (1, Some((id, Member::Leaf(leaf)))) => Node::Leaf(leaf, id),
                (1, Some((id, Member::Obj(obj)))) => {
                    let mut parts = Parts::default();
                    parts.push(id, obj);
                    Node::Object(parts)
                }
                _ => Node::Object(self.parts).child(key),
            };
            if !node.is_absent() {
                return Some((key, node));
            }
        }
    }
}

/// One node of the merged hierarchy.
#[derive(Clone, Copy, Debug)]
pub enum Node<'a> {
    /// No layer sets this node.
    Absent,
    /// A non-object value and the layer it came from.
    Leaf(Leaf<'a>, LayerId<'a>),
    /// An object merged from one or more layers.
    Object(Parts<'a>),
}

impl<'a> Node<'a> {
    /// The merged child `key` of this node.
    ///
    /// A child locked with `__strategy__: "replace"` in some layer takes nothing from the
    /// layers above that layer (the lowest lock wins, since it was applied first). Then,
    /// top-down: the first layer that sets the child decides if its value is not an object;
    /// otherwise the objects of consecutive layers merge, down to the first non-object,
    /// which they replaced.
    pub fn child(&self, key: &str) -> Node<'a> {
        let Node::Object(parts) = self else {
            return Node::Absent;
        };
        // One lookup per layer: the lock scan and the merge read the same values.
        let mut found: [Option<(LayerId<'a>, Member<'a>)>; MAX_LAYERS] = [None, None, None];
        for (slot, (id, map)) in found.iter_mut().zip(parts.iter()) {
            *slot = map.get(key).map(|value| (id, value));
        }
        let found = &found[..parts.len];
        // A lock in the highest layer locks nothing, so it is not looked for.
        let lowest_lock = found
            .iter()
            .skip(1)
            .rposition(|item| matches!(item, Some((_, Member::Obj(obj))) if obj.is_locked()))
            .map_or(0, |i| i + 1);
        let mut merged = Parts::default();
        for (id, value) in found[lowest_lock..].iter().flatten() {
            match value {
                Member::Null => continue,
                Member::Obj(child) => merged.push(*id, *child),
                Member::Leaf(leaf) if merged.len == 0 => return Node::Leaf(*leaf, *id),
                Member::Leaf(_) => break,
            }
        }
        if merged.len == 0 {
            Node::Absent
        } else {
            Node::Object(merged)
        }
    }

    /// The layer that set this node: for an object, the highest contributing layer.
    pub fn layer(&self) -> Option<LayerId<'a>> {
        match self {
            Node::Absent => None,
            Node::Leaf(_, id) => Some(*id),
            Node::Object(parts) => parts.iter().next().map(|(id, _)| id),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Node::Absent)
    }

    /// Writes the merged value as JSON text; `null` when absent.
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Node::Absent => out.extend_from_slice(b"null"),
            Node::Leaf(leaf, _) => leaf.write_json(out),
            Node::Object(parts) => parts.write_json(out),
        }
    }
}
