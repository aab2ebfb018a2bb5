//! Evaluation: may this recipient get this workflow on this channel? (preferences.md §5, §6)
//!
//! [`decide`] is pure and total: it takes values (including `now`), reads the merged
//! hierarchy lazily through a [`Stack`], and returns a [`Decision`] with its reason. It never
//! panics and never fails; a condition whose dynamic argument cannot be read is false, and
//! its reason says why.
//!
//! This module does no I/O.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::condition::{
    Condition, Key, Operator, equal, list, number, split_variable, text, timestamp, utc_day,
};
use crate::model::{Channel, DEFAULT_SET, Workflow};
use crate::resolve::{LayerId, Node, SetRef, Stack};

/// A recipient, actor or other entity whose properties conditions can read.
#[derive(Clone, Copy, Debug)]
pub struct Entity<'a> {
    pub id: &'a str,
    pub collection: Option<&'a str>,
    /// A JSON object (anything else reads as having no properties).
    pub properties: Properties<'a>,
    /// When prefsd first stored it and last changed it (RFC 3339); `None` when it is not
    /// stored.
    pub created_at: Option<&'a str>,
    pub updated_at: Option<&'a str>,
}

/// An entity's properties: parsed, or JSON text parsed into the cell the first time a
/// condition reads them (the read cache keeps properties as text: most evaluations read
/// none, and parsing them on every one would cost more than the rest of a cached call).
#[derive(Clone, Copy, Debug)]
pub enum Properties<'a> {
    Parsed(&'a Value),
    Text(&'a str, &'a OnceCell<Value>),
}

impl<'a> Properties<'a> {
    pub fn get(self) -> &'a Value {
        match self {
            Properties::Parsed(value) => value,
            // The text is an object `serde_json` wrote: it parses back.
            Properties::Text(text, cell) => {
                cell.get_or_init(|| serde_json::from_str(text).unwrap_or(Value::Null))
            }
        }
    }
}

/// What conditions can see, besides the preferences.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub recipient: Entity<'a>,
    pub actor: Option<Entity<'a>>,
    pub data: &'a Value,
    /// `{ id, name, properties, settings }`, or `null` without a tenant.
    pub tenant: &'a Value,
    pub vars: &'a Value,
    /// [`Workflow::to_value`] of the workflow being decided.
    pub workflow: &'a Value,
    /// The `run` object of the evaluation (Knock's `run.total_activities` and friends of a
    /// batched run), or `null` without one: every `run.*` path then reads as `""`.
    pub run: &'a Value,
    /// The keys of the audiences the recipient is a member of.
    pub audiences: &'a [Arc<str>],
    pub now: Timestamp,
    /// The work the call may still do comparing lists; see [`Budget`].
    pub budget: &'a Budget,
}

/// How much list work one call may do, in list items read (each item of both lists of a
/// `contains`-family condition, each time it is evaluated), and whether its caller is
/// gone. Shared by every decision of a call (atomics: a large call decides on several
/// threads). Once it is spent or cancelled, list conditions fail at once with an error
/// reason, and the caller is expected to refuse the whole call ([`Budget::spent`]): a
/// decision made after that is not an answer.
#[derive(Debug)]
pub struct Budget {
    left: AtomicU64,
    /// Set by a charge the budget could not pay, or by [`Budget::cancel`].
    stopped: AtomicBool,
}

impl Budget {
    pub fn new(items: u64) -> Budget {
        Budget {
            left: AtomicU64::new(items),
            stopped: AtomicBool::new(false),
        }
    }

    /// A budget that never runs out (tests, benchmarks, tools).
    pub fn unlimited() -> &'static Budget {
        static UNLIMITED: Budget = Budget {
            left: AtomicU64::new(u64::MAX),
            stopped: AtomicBool::new(false),
        };
        &UNLIMITED
    }

    /// Takes `items` from the budget; false when it does not hold them (or was cancelled).
    fn charge(&self, items: usize) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        let items = u64::try_from(items).unwrap_or(u64::MAX);
        let paid = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(items)
            })
            .is_ok();
        if !paid {
            self.stopped.store(true, Ordering::Relaxed);
        }
        paid
    }

    /// Whether a decision made with this budget may have been cut short: a list condition
    /// could not be paid for, or the caller went away.
    pub fn spent(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops the work: every list condition evaluated from now on fails at once.
    pub fn cancel(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// The answer for one (recipient, channel).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub send: bool,
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    OptedIn,
    OptedOut,
    ConditionFailed,
    CommercialUnsubscribed,
    OverridePreferences,
}

impl ReasonCode {
    /// Every code (tests walk them all).
    pub const ALL: [ReasonCode; 5] = [
        ReasonCode::OptedIn,
        ReasonCode::OptedOut,
        ReasonCode::ConditionFailed,
        ReasonCode::CommercialUnsubscribed,
        ReasonCode::OverridePreferences,
    ];

    /// The wire name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::OptedIn => "opted_in",
            ReasonCode::OptedOut => "opted_out",
            ReasonCode::ConditionFailed => "condition_failed",
            ReasonCode::CommercialUnsubscribed => "commercial_unsubscribed",
            ReasonCode::OverridePreferences => "override_preferences",
        }
    }
}

/// Why a decision came out as it did: which path of the effective set decided, from which
/// layer, the failing condition with its resolved values, and the layers the hierarchy
/// looked at (`Stack::considered`; none for `override_preferences`, which looks at none),
/// so that an `opted_in` says which sets it did not find an opt-out in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub path: Option<String>,
    pub layer: Option<String>,
    pub condition: Option<Value>,
    /// Shared by the decisions of one recipient: made once per recipient, not per channel.
    #[serde(serialize_with = "strings")]
    pub considered: Arc<[String]>,
}

fn strings<S: serde::Serializer>(list: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter())
}

impl Decision {
    fn send(code: ReasonCode) -> Decision {
        Decision {
            send: true,
            reason: Reason {
                code,
                path: None,
                layer: None,
                condition: None,
                considered: Arc::default(),
            },
        }
    }
}

/// Decides one workflow on one channel for one recipient (preferences.md §5).
///
/// `stack` is the recipient's hierarchy (`Stack::for_recipient`); `recipient_default` is the
/// recipient's own `default` set, which alone decides `commercial_subscribed` when it sets it.
pub fn decide(
    workflow: &Workflow,
    channel: &Channel,
    stack: &Stack<'_>,
    recipient_default: Option<SetRef<'_>>,
    ctx: &Context<'_>,
) -> Decision {
    let mut decisions = decide_channels(
        workflow,
        std::slice::from_ref(channel),
        stack,
        recipient_default,
        ctx,
    );
    decisions
        .pop()
        .unwrap_or_else(|| Decision::send(ReasonCode::OptedIn))
}

/// [`decide`] for several channels at once, in their order: the same answers, with the work
/// that does not depend on the channel (the commercial check, finding each scope in the
/// hierarchy, the scopes' own conditions) done once instead of once per channel.
pub fn decide_channels(
    workflow: &Workflow,
    channels: &[Channel],
    stack: &Stack<'_>,
    recipient_default: Option<SetRef<'_>>,
    ctx: &Context<'_>,
) -> Vec<Decision> {
    let all = |d: Decision| vec![d; channels.len()];
    if workflow.override_preferences {
        return all(Decision::send(ReasonCode::OverridePreferences));
    }
    let considered: Arc<[String]> = stack.considered().into();
    let root = stack.root();
    if workflow.commercial {
        // Read through a one-layer stack so that `{conditions}` is an object node whose
        // conditions are evaluated, not a leaf that `setting_allows` would take as allowing.
        let own = recipient_default
            .filter(|set| set.contains_key("commercial_subscribed"))
            .map(|set| {
                Stack::from_layers(&[(LayerId::Recipient(DEFAULT_SET), set)])
                    .root()
                    .child("commercial_subscribed")
            });
        let setting = own.unwrap_or_else(|| root.child("commercial_subscribed"));
        if let Err(denial) = setting_allows(&setting, ctx) {
            let mut decision = denial.into_decision(
                ReasonCode::CommercialUnsubscribed,
                "commercial_subscribed".into(),
            );
            decision.reason.considered = Arc::clone(&considered);
            return all(decision);
        }
    }
    // The scopes in the order §5 checks them: the top level, the workflow, its categories.
    let workflows = root.child("workflows");
    let categories = root.child("categories");
    let mut scopes = Vec::with_capacity(2 + workflow.categories.len());
    scopes.push(Scope::new(root, ("", ""), ctx));
    scopes.push(Scope::new(
        workflows.child(&workflow.key),
        ("workflows", &workflow.key),
        ctx,
    ));
    for category in &workflow.categories {
        scopes.push(Scope::new(
            categories.child(category),
            ("categories", category),
            ctx,
        ));
    }
    scopes.retain(|s| !s.allows_everything());
    channels
        .iter()
        .map(|channel| {
            let mut decision = scopes
                .iter()
                .find_map(|scope| scope.allows(channel, ctx).err())
                .unwrap_or_else(|| Decision::send(ReasonCode::OptedIn));
            decision.reason.considered = Arc::clone(&considered);
            decision
        })
        .collect()
}

/// Why a setting did not allow: the layer that set it and the failing condition, if any.
struct Denial {
    layer: Option<String>,
    condition: Option<Value>,
}

impl Denial {
    fn into_decision(self, code_if_false: ReasonCode, path: String) -> Decision {
        let code = if self.condition.is_some() && code_if_false == ReasonCode::OptedOut {
            ReasonCode::ConditionFailed
        } else {
            code_if_false
        };
        Decision {
            send: false,
            reason: Reason {
                code,
                path: Some(path),
                layer: self.layer,
                condition: self.condition,
                considered: Arc::default(),
            },
        }
    }
}

/// One scope of §5 with what does not depend on the channel worked out: a denial for every
/// channel (a `false`, or the scope's own conditions failing), or the nodes that hold its
/// per-channel settings.
struct Scope<'a, 'n> {
    name: (&'n str, &'n str),
    kind: ScopeKind<'a>,
}

enum ScopeKind<'a> {
    /// Absent or `true`: no channel is denied here.
    AllowsAll,
    /// Every channel is denied, for this reason.
    DeniesAll(Decision),
    /// An object: its `channels` and `channel_types` decide per channel.
    PerChannel {
        channels: Node<'a>,
        channel_types: Node<'a>,
    },
}

impl<'a, 'n> Scope<'a, 'n> {
    fn new(node: Node<'a>, name: (&'n str, &'n str), ctx: &Context<'_>) -> Scope<'a, 'n> {
        let path = || {
            if name.0.is_empty() {
                String::new()
            } else {
                format!("{}.{}", name.0, name.1)
            }
        };
        let kind = match node {
            Node::Absent => ScopeKind::AllowsAll,
            Node::Leaf(leaf, layer) if leaf.is_false() => ScopeKind::DeniesAll(
                Denial {
                    layer: Some(layer.to_string()),
                    condition: None,
                }
                .into_decision(ReasonCode::OptedOut, path()),
            ),
            Node::Leaf(..) => ScopeKind::AllowsAll,
            Node::Object(_) => {
                // The top level has no conditions of its own; `conditions` there is not a
                // key a valid set can hold, so reading it is harmless.
                match node.child("conditions") {
                    Node::Leaf(conditions, layer) => match all_hold(&conditions.to_value(), ctx) {
                        Err(condition) => ScopeKind::DeniesAll(
                            Denial {
                                layer: Some(layer.to_string()),
                                condition: Some(condition),
                            }
                            .into_decision(ReasonCode::ConditionFailed, path()),
                        ),
                        Ok(()) => ScopeKind::PerChannel {
                            channels: node.child("channels"),
                            channel_types: node.child("channel_types"),
                        },
                    },
                    _ => ScopeKind::PerChannel {
                        channels: node.child("channels"),
                        channel_types: node.child("channel_types"),
                    },
                }
            }
        };
        Scope { name, kind }
    }

    fn allows_everything(&self) -> bool {
        matches!(self.kind, ScopeKind::AllowsAll)
    }

    /// `scope_allows` of §5 for one channel: a channel id beats its channel type.
    fn allows(&self, channel: &Channel, ctx: &Context<'_>) -> Result<(), Decision> {
        let (channels, channel_types) = match &self.kind {
            ScopeKind::AllowsAll => return Ok(()),
            ScopeKind::DeniesAll(decision) => return Err(decision.clone()),
            ScopeKind::PerChannel {
                channels,
                channel_types,
            } => (channels, channel_types),
        };
        let (section, key) = self.name;
        let sub = |child: &str| {
            if section.is_empty() {
                child.to_string()
            } else {
                format!("{section}.{key}.{child}")
            }
        };
        if let Some(id) = &channel.id {
            let node = channels.child(id);
            if !node.is_absent() {
                return setting_allows(&node, ctx).map_err(|d| {
                    d.into_decision(ReasonCode::OptedOut, sub(&format!("channels.{id}")))
                });
            }
        }
        let kind = channel.channel_type.as_str();
        let node = channel_types.child(kind);
        setting_allows(&node, ctx).map_err(|d| {
            d.into_decision(ReasonCode::OptedOut, sub(&format!("channel_types.{kind}")))
        })
    }
}

/// `setting_allows` of §5: absent allows, a bool is itself, `{conditions}` must all hold.
fn setting_allows(node: &Node<'_>, ctx: &Context<'_>) -> Result<(), Denial> {
    match node {
        Node::Absent => Ok(()),
        Node::Leaf(leaf, layer) if leaf.is_false() => Err(Denial {
            layer: Some(layer.to_string()),
            condition: None,
        }),
        Node::Leaf(..) => Ok(()),
        Node::Object(_) => match node.child("conditions") {
            Node::Leaf(conditions, layer) => {
                all_hold(&conditions.to_value(), ctx).map_err(|condition| Denial {
                    layer: Some(layer.to_string()),
                    condition: Some(condition),
                })
            }
            _ => Ok(()),
        },
    }
}

/// Checks a list of conditions (ANDed); on failure, returns the failing condition with its
/// resolved values.
fn all_hold(conditions: &Value, ctx: &Context<'_>) -> Result<(), Value> {
    let Value::Array(list) = conditions else {
        return Ok(());
    };
    for source in list {
        let condition = match Condition::from_value(source) {
            Ok(c) => c,
            Err(message) => return Err(describe(source, None, None, Some(message))),
        };
        let outcome = evaluate_condition(&condition, ctx);
        if !matches!(outcome.result, Ok(true)) {
            // Resolved values are copied only for the reason of a failure.
            let variable = outcome
                .variable
                .map_or(Value::String(String::new()), Cow::into_owned);
            return Err(describe(
                source,
                Some(variable),
                Some(outcome.argument.into_owned()),
                outcome.result.err(),
            ));
        }
    }
    Ok(())
}

fn describe(
    source: &Value,
    variable: Option<Value>,
    argument: Option<Value>,
    error: Option<String>,
) -> Value {
    let mut out = source.as_object().cloned().unwrap_or_default();
    out.insert("resolved_variable".into(), variable.unwrap_or(Value::Null));
    out.insert("resolved_argument".into(), argument.unwrap_or(Value::Null));
    if let Some(error) = error {
        out.insert("error".into(), Value::String(error));
    }
    Value::Object(out)
}

struct Outcome<'v> {
    result: Result<bool, String>,
    variable: Option<Cow<'v, Value>>,
    argument: Cow<'v, Value>,
}

/// Evaluates one condition. `Err` means the argument could not be read; the caller treats
/// it as false.
fn evaluate_condition<'v>(condition: &Condition<'v>, ctx: &Context<'v>) -> Outcome<'v> {
    let variable = resolve(condition.variable, ctx);
    let argument = argument_value(condition.argument, ctx);
    let result = holds(
        condition.operator,
        variable.as_deref(),
        &argument,
        condition.argument,
        ctx,
    );
    Outcome {
        result,
        variable,
        argument,
    }
}

static EMPTY: Value = Value::String(String::new());

fn holds(
    op: Operator,
    variable: Option<&Value>,
    argument: &Value,
    written: &Value,
    ctx: &Context<'_>,
) -> Result<bool, String> {
    use Operator::*;
    // A path with no value reads as "" (§6.1); only `exists` and `empty` look closer.
    let var = variable.unwrap_or(&EMPTY);
    let unreadable = |what: &str| {
        format!(
            "argument {} resolved to {}, which is not {what}",
            written,
            serde_json::to_string(argument).unwrap_or_default()
        )
    };
    Ok(match op {
        EqualTo => equal(var, argument),
        NotEqualTo => !equal(var, argument),
        GreaterThan | LessThan | GreaterThanOrEqualTo | LessThanOrEqualTo => {
            let Some(y) = number(argument) else {
                return Err(unreadable("a number"));
            };
            let Some(x) = number(var) else {
                return Ok(false);
            };
            match op {
                GreaterThan => x > y,
                LessThan => x < y,
                GreaterThanOrEqualTo => x >= y,
                _ => x <= y,
            }
        }
        Contains => contains(var, argument, ctx.budget)?,
        NotContains => !contains(var, argument, ctx.budget)?,
        ContainsAll | NotContainsAll => {
            let Some(wanted) = list(argument) else {
                return Err(unreadable("a list"));
            };
            let all = match var {
                Value::Array(have) => {
                    charge(ctx.budget, have.len() + wanted.len())?;
                    includes_all(have, &wanted)
                }
                _ => false,
            };
            if op == ContainsAll { all } else { !all }
        }
        Empty => is_empty(variable),
        NotEmpty => !is_empty(variable),
        Exists => variable.is_some_and(|v| !v.is_null()),
        NotExists => variable.is_none_or(Value::is_null),
        IsTimestamp => timestamp(var, None).is_some(),
        IsNotTimestamp => timestamp(var, None).is_none(),
        IsTimestampBefore
        | IsTimestampOnOrAfter
        | IsTimestampBeforeDate
        | IsTimestampOnOrAfterDate => {
            let Some(at) = timestamp(argument, Some(ctx.now)) else {
                return Err(unreadable("a timestamp"));
            };
            let Some(t) = timestamp(var, None) else {
                return Ok(false);
            };
            match op {
                IsTimestampBefore => t < at,
                IsTimestampOnOrAfter => t >= at,
                IsTimestampBeforeDate => utc_day(t) < utc_day(at),
                _ => utc_day(t) >= utc_day(at),
            }
        }
        IsTimestampBetween => {
            let range = list(argument).filter(|l| l.len() == 2);
            let bounds = range.and_then(|l| {
                let start = timestamp(&argument_value(&l[0], ctx), Some(ctx.now))?;
                let end = timestamp(&argument_value(&l[1], ctx), Some(ctx.now))?;
                Some((start, end))
            });
            let Some((start, end)) = bounds else {
                return Err(unreadable("a list of two timestamps"));
            };
            let Some(t) = timestamp(var, None) else {
                return Ok(false);
            };
            start <= t && t < end
        }
        IsBetween => {
            let range = list(argument).filter(|l| l.len() == 2);
            let bounds = range.and_then(|l| {
                Some((
                    number(&argument_value(&l[0], ctx))?,
                    number(&argument_value(&l[1], ctx))?,
                ))
            });
            let Some((low, high)) = bounds else {
                return Err(unreadable("a list of two numbers"));
            };
            let Some(x) = number(var) else {
                return Ok(false);
            };
            low <= x && x <= high
        }
        IsAudienceMember | IsNotAudienceMember => {
            let key = match argument {
                Value::String(s) if !s.is_empty() => s.as_str(),
                _ => return Err(unreadable("an audience key")),
            };
            let member = ctx.audiences.iter().any(|a| **a == *key);
            if op == IsAudienceMember {
                member
            } else {
                !member
            }
        }
    })
}

fn argument_value<'v>(argument: &'v Value, ctx: &Context<'v>) -> Cow<'v, Value> {
    match argument {
        Value::String(s) if split_variable(s).is_some() => {
            resolve(s, ctx).unwrap_or(Cow::Borrowed(&EMPTY))
        }
        literal => Cow::Borrowed(literal),
    }
}

/// Reads `namespace.path` from the context; `None` when the path has no value.
fn resolve<'v>(variable: &str, ctx: &Context<'v>) -> Option<Cow<'v, Value>> {
    let (namespace, path) = split_variable(variable)?;
    let mut segments = path.split('.');
    let root: &'v Value = match namespace {
        "recipient" => return resolve_entity(&ctx.recipient, segments),
        "actor" => return resolve_entity(ctx.actor.as_ref()?, segments),
        "data" => ctx.data,
        "tenant" => return resolve_tenant(ctx.tenant, segments),
        "vars" => ctx.vars,
        "workflow" => ctx.workflow,
        "run" => ctx.run,
        _ => return None,
    };
    walk(root, &mut segments).map(Cow::Borrowed)
}

fn resolve_entity<'v, 's>(
    entity: &Entity<'v>,
    mut segments: impl Iterator<Item = &'s str>,
) -> Option<Cow<'v, Value>> {
    let first = segments.next()?;
    let properties = entity.properties.get().as_object();
    // The fields Knock lists for a recipient (§6.1). `created_at` is the property when one
    // was identified (Knock's identify takes it), else when prefsd first stored the entity;
    // the others are prefsd's own and beat a property of the same name.
    let own = match first {
        "id" => Some(entity.id),
        "collection" => entity.collection,
        "__typename" if entity.collection.is_some() => Some("Object"),
        "__typename" => Some("User"),
        "updated_at" => entity.updated_at,
        "created_at" if properties.is_none_or(|p| !p.contains_key("created_at")) => {
            entity.created_at
        }
        _ => None,
    };
    if let Some(own) = own {
        // These are strings: they have no children.
        return segments
            .next()
            .is_none()
            .then(|| Cow::Owned(Value::String(own.to_string())));
    }
    let start = properties?.get(first)?;
    walk(start, &mut segments).map(Cow::Borrowed)
}

/// The `tenant` namespace (§6.1): `id`, `name`, `properties` and `settings`, with
/// `settings.preferences` an alias of `settings.preference_set` (Knock's own examples
/// condition on it), and any other first segment a custom property (`tenant.tier` is
/// `tenant.properties.tier`), as Knock exposes them.
fn resolve_tenant<'v, 's>(
    tenant: &'v Value,
    mut segments: impl Iterator<Item = &'s str>,
) -> Option<Cow<'v, Value>> {
    let tenant = tenant.as_object()?;
    let first = segments.next()?;
    let start = match first {
        "id" | "name" | "properties" => tenant.get(first)?,
        "settings" => {
            let settings = tenant.get("settings")?;
            match segments.next() {
                None => settings,
                Some("preferences") => settings.get("preference_set")?,
                Some(key) => settings.get(key)?,
            }
        }
        custom => tenant.get("properties")?.get(custom)?,
    };
    walk(start, &mut segments).map(Cow::Borrowed)
}

fn walk<'v, 's>(
    mut value: &'v Value,
    segments: &mut impl Iterator<Item = &'s str>,
) -> Option<&'v Value> {
    for segment in segments {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// `contains`: string ⊇ substring; list ∋ item; text ∈ list; list ∩ list ≠ ∅. `Err` when the
/// call's budget cannot pay for the lists.
fn contains(variable: &Value, argument: &Value, budget: &Budget) -> Result<bool, String> {
    Ok(match variable {
        Value::Array(have) => match list(argument) {
            Some(wanted) => {
                charge(budget, have.len() + wanted.len())?;
                intersects(have, &wanted)
            }
            None => {
                charge(budget, have.len())?;
                have.iter().any(|h| equal(h, argument))
            }
        },
        Value::Object(_) => false,
        scalar => match list(argument) {
            // Knock: "when one value is text and one is a list, true if the text is an
            // item in the list" (§6.2).
            Some(items) => {
                charge(budget, items.len())?;
                items.iter().any(|item| equal(scalar, item))
            }
            None => match argument {
                Value::Object(_) => false,
                arg => text(scalar).contains(text(arg).as_ref()),
            },
        },
    })
}

/// Up to this many pairs, comparing every pair beats building a hash set: the common case,
/// a few tags against a one- or two-item argument, measured 7% slower per decision hashed.
const PAIRWISE_MAX: usize = 64;

/// Whether some item of `wanted` is in `have` (under [`equal`]).
fn intersects(have: &[Value], wanted: &[Value]) -> bool {
    if have.len().saturating_mul(wanted.len()) <= PAIRWISE_MAX {
        return wanted.iter().any(|w| have.iter().any(|h| equal(h, w)));
    }
    let have = Keys::of(have);
    wanted.iter().any(|w| have.holds(w))
}

/// Whether every item of `wanted` is in `have` (under [`equal`]).
fn includes_all(have: &[Value], wanted: &[Value]) -> bool {
    if have.len().saturating_mul(wanted.len()) <= PAIRWISE_MAX {
        return wanted.iter().all(|w| have.iter().any(|h| equal(h, w)));
    }
    let have = Keys::of(have);
    wanted.iter().all(|w| have.holds(w))
}

/// Pays for reading `items` list items, or says why the condition cannot be evaluated.
fn charge(budget: &Budget, items: usize) -> Result<(), String> {
    if budget.charge(items) {
        Ok(())
    } else {
        Err("the call compares more list items than one call may; nothing was decided".into())
    }
}

/// The items of a variable list, as a set of [`Key`]s: each lookup costs one key, not one
/// comparison per item (issue 22: 4000 × 4000 items took half a second per decision).
struct Keys<'v>(HashSet<Key<'v>>);

impl<'v> Keys<'v> {
    fn of(items: &'v [Value]) -> Keys<'v> {
        Keys(items.iter().map(Key::of).collect())
    }

    fn holds(&self, value: &Value) -> bool {
        self.0.contains(&Key::of(value))
    }
}

fn is_empty(variable: Option<&Value>) -> bool {
    match variable {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// An empty JSON object, for contexts with no data or vars.
pub fn empty_object() -> &'static Value {
    static EMPTY_OBJECT: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| Value::Object(Map::new()));
    &EMPTY_OBJECT
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
