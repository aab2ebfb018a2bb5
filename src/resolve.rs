//! The default hierarchy: which sets apply to a recipient (preferences.md §4.2), the deep
//! merge with admin locks (§4.3), and provenance.
//!
//! The merge is lazy: a [`Stack`] holds references to its layers, and [`Node::child`] walks
//! them top-down, so evaluation reads only the few nodes it needs and learns which layer
//! decided each value without building a merged copy. [`Stack::effective`] materialises the
//! same walk for reads, so reads and evaluation cannot disagree.
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
enum Member<'a> {
    Null,
    Obj(Obj<'a>),
    Leaf(Leaf<'a>),
}

impl<'a> Obj<'a> {
    fn get(self, key: &str) -> Option<Member<'a>> {
        static TRUE: Value = Value::Bool(true);
        static FALSE: Value = Value::Bool(false);
        Some(match self {
            Obj::Json(map) => match map.get(key)? {
                Value::Null => Member::Null,
                Value::Object(child) => Member::Obj(Obj::Json(child)),
                leaf => Member::Leaf(Leaf::Value(leaf)),
            },
            Obj::Compact(obj) => match obj.get(key)? {
                compact::Item::Bool(b) => Member::Leaf(Leaf::Value(if b { &TRUE } else { &FALSE })),
                compact::Item::Obj(child) => Member::Obj(Obj::Compact(child)),
                compact::Item::Json(text) => Member::Leaf(Leaf::Json(text)),
            },
        })
    }

    fn keys(self) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match self {
            Obj::Json(map) => Box::new(map.keys().map(String::as_str)),
            Obj::Compact(obj) => Box::new(obj.keys()),
        }
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

    fn materialise(&self) -> Map<String, Value> {
        let mut out = Map::new();
        // Keys in the order of the lowest layer first, so a read looks like the defaults
        // with the recipient's additions.
        for (_, map) in self.iter().rev() {
            for key in map.keys() {
                if out.contains_key(key) {
                    continue;
                }
                let value = match Node::Object(*self).child(key) {
                    Node::Absent => continue,
                    Node::Leaf(leaf, _) => leaf.to_value().into_owned(),
                    Node::Object(parts) => Value::Object(parts.materialise()),
                };
                out.insert(key.to_string(), value);
            }
        }
        out
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
}
