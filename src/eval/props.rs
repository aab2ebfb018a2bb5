//! Property tests of the pure core (preferences.md §2, §4, §5, §6).
//!
//! - (a) validation and writes are total: [`PreferenceSet::parse`],
//!   [`PreferenceSetRequest::parse`], [`PreferenceSetRequest::parse_as`] and
//!   [`PreferenceSetRequest::apply`] never panic, whatever JSON they are given, for both
//!   [`SetKind`]s; writes accept every valid set of their kind;
//! - (b) normalisation is idempotent: a parsed set, the result of a write, and the effective
//!   set of any hierarchy all parse back to themselves;
//! - (c) evaluation is total: [`decide`] never panics for any valid sets in any hierarchy
//!   (environment, tenant default, recipient sets, with or without a tenant), any workflow,
//!   any channel (with or without id) and any context (arbitrary JSON properties, data, vars,
//!   tenant; any `now`), and not even for sets that skipped validation; every decision is
//!   well-formed (code, path, layer and condition agree with `send`);
//! - (d) reads and evaluation agree: deciding against the materialised [`Stack::effective`]
//!   (as a single layer) gives the same `send`, code, path and condition as the lazy walk;
//! - and against the spec read literally: the effective set equals the left fold of `⊕`
//!   with locks (§4.2, §4.3); a decision that needs no condition is what §5's pseudo-code
//!   says; a denial's `layer` and `path` name a value that layer really holds.
//!
//! Inputs are arbitrary JSON whose strings lean on the vocabulary of the model (section
//! names, channel types, operators, namespace paths, RFC 3339 and relative times, numeric
//! strings), and *plausible* preference sets (mostly valid, with conditions using every
//! operator with fitting or unfitting, literal or dynamic arguments) so that evaluation is
//! reached; `generators_reach_evaluation` guards that they keep doing so.
//!
//! 256 cases per property by default; `PROPTEST_CASES=50000 cargo test --lib props` for a
//! longer run. Failures are not persisted to files: a failure found becomes an explicit
//! regression test at the end of this file.

use jiff::Timestamp;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value, json};

use crate::eval::{Context, Decision, Entity, Properties, ReasonCode, decide, decide_channels};
use crate::model::condition::{ArgumentKind, Operator};
use crate::model::{
    Channel, ChannelType, PreferenceSet, PreferenceSetRequest, SetKind, Strategy as WriteStrategy,
    Workflow,
};
use crate::resolve::{LayerId, SetRef, Sources, Stack};

// ---------------------------------------------------------------------------------------
// Vocabulary

const SECTIONS: &[&str] = &[
    "workflows",
    "categories",
    "channel_types",
    "channels",
    "commercial_subscribed",
    "conditions",
    "variable",
    "operator",
    "argument",
    "id",
    "__typename",
    "__persistence_strategy__",
    "__strategy__",
    "replace",
    "merge",
];

const CHANNEL_TYPES: &[&str] = &["email", "sms", "push", "chat", "in_app_feed", "http", "fax"];

const OPERATORS: &[&str] = &[
    "equal_to",
    "not_equal_to",
    "greater_than",
    "less_than",
    "greater_than_or_equal_to",
    "less_than_or_equal_to",
    "contains",
    "not_contains",
    "contains_all",
    "not_contains_all",
    "empty",
    "not_empty",
    "exists",
    "not_exists",
    "is_timestamp",
    "is_not_timestamp",
    "is_timestamp_before",
    "is_timestamp_on_or_after",
    "is_timestamp_before_date",
    "is_timestamp_on_or_after_date",
    "is_timestamp_between",
    "is_between",
    "is_audience_member",
    "is_not_audience_member",
    "is_cool",
];

/// Variables and dynamic arguments: valid namespaces (some paths into arrays, some into
/// nothing), and a few invalid ones.
const PATHS: &[&str] = &[
    "data.x",
    "data.n",
    "data.t",
    "data.list",
    "data.list.0",
    "data.list.1",
    "data.x.y.z",
    "data.max",
    "recipient.a",
    "recipient.a.0",
    "recipient.id",
    "recipient.collection",
    "recipient.country_code",
    "recipient.muted_alert_ids",
    "recipient.t",
    "recipient..",
    "actor.id",
    "actor.a",
    "actor.n",
    "tenant.id",
    "tenant.name",
    "tenant.properties.plan",
    "vars.v",
    "vars.list.0",
    "workflow.key",
    "workflow.categories",
    "workflow.commercial",
    "data.",
    "nope.x",
    "recipient",
];

const TIMES: &[&str] = &[
    "2026-11-29T12:00:00Z",
    "2026-11-29T23:59:59.999+01:00",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "-009999-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "3 days ago",
    "1 day ago",
    "2 weeks from now",
    "0 minutes ago",
    "5 hours from now",
    "99999999999999 weeks ago",
    "9223372036854775807 minutes from now",
    "3 fortnights ago",
    "-3 days ago",
    "1700000000",
    "-1e300",
];

const NUMERIC: &[&str] = &[
    "0", "42", "-1.5", " 7 ", "1e308", "1e400", "-1e400", "NaN", "inf", "0x10", "",
];

const OTHER: &[&str] = &[
    "true",
    "false",
    "null",
    "[1,2]",
    "[\"a\",\"b\"]",
    "[",
    "[[[[]]]]",
    "US",
    "a",
    "ch1",
];

/// Keys of properties and data, matching the paths above.
const PROP_KEYS: &[&str] = &[
    "a",
    "x",
    "n",
    "t",
    "list",
    "max",
    "country_code",
    "muted_alert_ids",
    "plan",
    "v",
];

const WORKFLOW_KEYS: &[&str] = &["w1", "w2", "new-comment", "welcome"];
const CATEGORY_KEYS: &[&str] = &["marketing", "c1", "c2"];
const CHANNEL_IDS: &[&str] = &["ch1", "ch2", "aef6e715-df82-4ab6-b61e-b743e249f7b6"];
const TENANTS: &[&str] = &["acme", "t2", "default"];
const AUDIENCES: &[&str] = &["beta", "vip", "a"];

fn vocab() -> impl Strategy<Value = String> {
    prop_oneof![
        select(SECTIONS),
        select(CHANNEL_TYPES),
        select(OPERATORS),
        select(PATHS),
        select(TIMES),
        select(NUMERIC),
        select(OTHER),
        select(PROP_KEYS),
        select(WORKFLOW_KEYS),
        select(CATEGORY_KEYS),
        select(CHANNEL_IDS),
        select(TENANTS),
    ]
    .prop_map(str::to_string)
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => vocab(),
        2 => "\\PC{0,12}",
        1 => "[a-z_.0-9 ]{0,300}",
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Arbitrary JSON

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // NaN and infinities become null, which is what a JSON number cannot be.
        any::<f64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        (-1000.0f64..1000.0).prop_map(Value::from),
        select(
            &[
                0.5,
                -0.0,
                1e308,
                -1e308,
                1.7e9,
                2.6e11,
                -2e11,
                f64::MIN_POSITIVE
            ][..]
        )
        .prop_map(Value::from),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => number(),
        4 => text().prop_map(Value::String),
    ]
    .boxed()
}

fn json() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(Value::Array),
                vec((text(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// An object whose keys are mostly the property keys that paths read.
fn properties() -> BoxedStrategy<Value> {
    let key = prop_oneof![4 => select(PROP_KEYS).prop_map(str::to_string), 1 => text()];
    prop_oneof![
        1 => json(),
        4 => vec((key, json()), 0..7).prop_map(|kv| Value::Object(kv.into_iter().collect())),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Plausible preference sets
//
// Every generator takes `junk`: with it, each position sometimes holds something invalid
// (arbitrary JSON, unknown keys, wrong arguments); without it, the sets are valid but for
// the odd unreadable literal argument. Strategies are boxed so that generating a value does
// not need huge stack frames in debug builds.

/// Paths with a known namespace and a non-empty path.
const VALID_PATHS: &[&str] = &[
    "data.x",
    "data.n",
    "data.t",
    "data.list",
    "data.list.0",
    "data.x.y.z",
    "data.max",
    "recipient.a",
    "recipient.a.0",
    "recipient.id",
    "recipient.collection",
    "recipient.country_code",
    "recipient.muted_alert_ids",
    "recipient.t",
    "actor.id",
    "actor.n",
    "tenant.name",
    "tenant.properties.plan",
    "vars.v",
    "workflow.key",
    "workflow.categories",
];

/// `fitting`, or with `junk` now and then arbitrary JSON.
fn or_junk(fitting: BoxedStrategy<Value>, junk: bool) -> BoxedStrategy<Value> {
    if junk {
        prop_oneof![12 => fitting, 1 => json()].boxed()
    } else {
        fitting
    }
}

/// A key from `pool`, or with `junk` now and then any text (often not a valid key).
fn key_from(pool: &'static [&'static str], junk: bool) -> BoxedStrategy<String> {
    let fitting = select(pool).prop_map(str::to_string);
    if junk {
        prop_oneof![
            12 => fitting,
            2 => text(),
            1 => Just(String::new()),
            1 => Just("k".repeat(257)),
        ]
        .boxed()
    } else {
        fitting.boxed()
    }
}

/// With `junk`, now and then a key that does not belong.
fn extra_key(junk: bool, p: f64) -> BoxedStrategy<Option<(String, Value)>> {
    if junk {
        option::weighted(p, (text(), json())).boxed()
    } else {
        Just(None).boxed()
    }
}

fn object(entries: Vec<Option<(String, Value)>>) -> Value {
    Value::Object(entries.into_iter().flatten().collect())
}

fn dynamic(junk: bool) -> BoxedStrategy<Value> {
    select(if junk { PATHS } else { VALID_PATHS })
        .prop_map(Value::from)
        .boxed()
}

fn time_arg(junk: bool) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => select(TIMES).prop_map(Value::from),
        1 => number(),
        2 => dynamic(junk),
    ]
    .boxed()
}

fn number_arg(junk: bool) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => number(),
        2 => select(NUMERIC).prop_map(Value::from),
        2 => dynamic(junk),
    ]
    .boxed()
}

fn list_arg(junk: bool) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => vec(leaf(), 0..4).prop_map(Value::Array),
        2 => vec(leaf(), 0..4).prop_map(|l| Value::String(Value::Array(l).to_string())),
        2 => dynamic(junk),
    ]
    .boxed()
}

/// An argument that fits the operator (mostly: some literal times and numbers in the
/// vocabulary are unreadable on purpose), or with `junk` now and then anything.
fn argument(kind: ArgumentKind, junk: bool) -> BoxedStrategy<Option<Value>> {
    let fitting: BoxedStrategy<Option<Value>> = match kind {
        ArgumentKind::None => option::weighted(0.2, json()).boxed(),
        ArgumentKind::Any => prop_oneof![leaf(), dynamic(junk), list_arg(junk), json()]
            .prop_map(Some)
            .boxed(),
        ArgumentKind::Number => number_arg(junk).prop_map(Some).boxed(),
        ArgumentKind::List => list_arg(junk).prop_map(Some).boxed(),
        ArgumentKind::Time => time_arg(junk).prop_map(Some).boxed(),
        ArgumentKind::TimeRange => prop_oneof![
            4 => (time_arg(junk), time_arg(junk)).prop_map(|(a, b)| Some(json!([a, b]))),
            1 => (time_arg(junk), time_arg(junk))
                .prop_map(|(a, b)| Some(Value::String(json!([a, b]).to_string()))),
            1 => dynamic(junk).prop_map(Some),
        ]
        .boxed(),
        ArgumentKind::NumberRange => prop_oneof![
            4 => (number_arg(junk), number_arg(junk)).prop_map(|(a, b)| Some(json!([a, b]))),
            1 => dynamic(junk).prop_map(Some),
        ]
        .boxed(),
        ArgumentKind::Text => prop_oneof![
            4 => select(AUDIENCES).prop_map(|s| Some(Value::from(s))),
            1 => dynamic(junk).prop_map(Some),
        ]
        .boxed(),
    };
    if junk {
        prop_oneof![12 => fitting, 1 => option::of(json())].boxed()
    } else {
        fitting
    }
}

fn condition(junk: bool) -> BoxedStrategy<Value> {
    let operators = if junk {
        OPERATORS
    } else {
        &OPERATORS[..Operator::ALL.len()]
    };
    let operator = select(operators).prop_flat_map(move |name| {
        let kind = Operator::parse(name).map_or(ArgumentKind::Any, Operator::argument_kind);
        (Just(name), argument(kind, junk))
    });
    let variable = if junk {
        prop_oneof![9 => select(PATHS), 1 => select(SECTIONS)].boxed()
    } else {
        select(VALID_PATHS).boxed()
    };
    let well_formed = (variable, operator).prop_map(|(variable, (operator, argument))| {
        let mut c = Map::new();
        c.insert("variable".into(), variable.into());
        c.insert("operator".into(), operator.into());
        if let Some(a) = argument {
            c.insert("argument".into(), a);
        }
        Value::Object(c)
    });
    or_junk(well_formed.boxed(), junk)
}

fn conditions(junk: bool) -> BoxedStrategy<Value> {
    or_junk(
        vec(condition(junk), 0..3).prop_map(Value::Array).boxed(),
        junk,
    )
}

/// `bool` or `{conditions}`; rarely `null`.
fn toggle(junk: bool) -> BoxedStrategy<Value> {
    let fitting = prop_oneof![
        8 => any::<bool>().prop_map(Value::Bool),
        3 => option::weighted(0.9, conditions(junk))
            .prop_map(|c| object(vec![c.map(|c| ("conditions".into(), c))])),
        1 => Just(Value::Null),
    ];
    or_junk(fitting.boxed(), junk)
}

/// `__strategy__`: often in defaults, rarely (and invalid) in recipient sets with junk.
fn lock(locks: bool, junk: bool) -> BoxedStrategy<Option<(String, Value)>> {
    let p = match (locks, junk) {
        (true, _) => 0.25,
        (false, true) => 0.01,
        (false, false) => return Just(None).boxed(),
    };
    let value = if junk {
        prop_oneof![20 => Just(Value::from("replace")), 1 => json()].boxed()
    } else {
        Just(Value::from("replace")).boxed()
    };
    option::weighted(p, value.prop_map(|v| ("__strategy__".to_string(), v))).boxed()
}

fn keyed_map(
    keys: BoxedStrategy<String>,
    value: BoxedStrategy<Value>,
    locks: bool,
    junk: bool,
) -> BoxedStrategy<Value> {
    let fitting = (vec((keys, value), 0..4), lock(locks, junk)).prop_map(|(kv, lock)| {
        let mut m: Map<String, Value> = kv.into_iter().collect();
        if let Some((k, v)) = lock {
            m.insert(k, v);
        }
        Value::Object(m)
    });
    or_junk(fitting.boxed(), junk)
}

fn channel_types(locks: bool, junk: bool) -> BoxedStrategy<Value> {
    keyed_map(
        key_from(CHANNEL_TYPES_VALID, junk),
        toggle(junk),
        locks,
        junk,
    )
}

const CHANNEL_TYPES_VALID: &[&str] = &["email", "sms", "push", "chat", "in_app_feed", "http"];

fn channels(locks: bool, junk: bool) -> BoxedStrategy<Value> {
    keyed_map(key_from(CHANNEL_IDS, junk), toggle(junk), locks, junk)
}

/// A workflow or category setting: `bool` or `{channel_types?, channels?, conditions?}`.
fn setting(locks: bool, junk: bool) -> BoxedStrategy<Value> {
    let object_setting = (
        option::weighted(0.5, channel_types(locks, junk)),
        option::weighted(0.3, channels(locks, junk)),
        option::weighted(0.4, conditions(junk)),
        lock(locks, junk),
        extra_key(junk, 0.03),
    )
        .prop_map(|(ct, ch, co, lock, extra)| {
            object(vec![
                ct.map(|v| ("channel_types".into(), v)),
                ch.map(|v| ("channels".into(), v)),
                co.map(|v| ("conditions".into(), v)),
                lock,
                extra,
            ])
        });
    let fitting = prop_oneof![
        6 => any::<bool>().prop_map(Value::Bool),
        8 => object_setting,
        1 => Just(Value::Null),
    ];
    or_junk(fitting.boxed(), junk)
}

fn settings(keys: &'static [&'static str], locks: bool, junk: bool) -> BoxedStrategy<Value> {
    keyed_map(key_from(keys, junk), setting(locks, junk), false, junk)
}

/// A plausible preference set, meant for `SetKind::Default` when `locks` and for
/// `SetKind::Recipient` otherwise; with `junk`, often invalid somewhere.
fn plausible_set(locks: bool, junk: bool) -> BoxedStrategy<Value> {
    let section = |s: BoxedStrategy<Value>| {
        option::weighted(0.6, prop_oneof![12 => s, 1 => Just(Value::Null)])
    };
    (
        section(settings(WORKFLOW_KEYS, locks, junk)),
        section(settings(CATEGORY_KEYS, locks, junk)),
        section(channel_types(locks, junk)),
        section(channels(locks, junk)),
        section(toggle(junk)),
        extra_key(junk, 0.05),
        option::weighted(0.05, prop_oneof![Just("id"), Just("__typename")]),
    )
        .prop_map(|(w, c, ct, ch, cs, extra, ignored)| {
            object(vec![
                w.map(|v| ("workflows".into(), v)),
                c.map(|v| ("categories".into(), v)),
                ct.map(|v| ("channel_types".into(), v)),
                ch.map(|v| ("channels".into(), v)),
                cs.map(|v| ("commercial_subscribed".into(), v)),
                extra,
                ignored.map(|k| (k.to_string(), Value::from("PreferenceSet"))),
            ])
        })
        .boxed()
}

/// Anything a client might send as a set: plausible sets of both kinds, or any JSON.
fn any_set_input() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => json(),
        2 => plausible_set(true, true),
        2 => plausible_set(false, true),
        1 => plausible_set(true, false),
        1 => plausible_set(false, false),
    ]
    .boxed()
}

/// A write body: a set, maybe with `__persistence_strategy__`.
fn write_body() -> BoxedStrategy<Value> {
    (
        any_set_input(),
        option::weighted(
            0.5,
            prop_oneof![
                4 => Just(Value::from("merge")),
                4 => Just(Value::from("replace")),
                1 => Just(Value::Null),
                1 => json(),
            ],
        ),
    )
        .prop_map(|(mut body, strategy)| {
            if let (Value::Object(map), Some(s)) = (&mut body, strategy) {
                map.insert("__persistence_strategy__".into(), s);
            }
            body
        })
        .boxed()
}

/// A set for a hierarchy: mostly clean, sometimes with junk (then often invalid, and absent).
fn hierarchy_set(locks: bool) -> BoxedStrategy<Value> {
    prop_oneof![4 => plausible_set(locks, false), 1 => plausible_set(locks, true)].boxed()
}

fn kind() -> impl Strategy<Value = SetKind> {
    prop_oneof![Just(SetKind::Recipient), Just(SetKind::Default)]
}

// ---------------------------------------------------------------------------------------
// Evaluation inputs

fn workflow() -> impl Strategy<Value = Workflow> {
    let key = prop_oneof![8 => select(WORKFLOW_KEYS).prop_map(str::to_string), 1 => text()];
    let category = prop_oneof![8 => select(CATEGORY_KEYS).prop_map(str::to_string), 1 => text()];
    (
        key,
        vec(category, 0..4),
        any::<bool>(),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(key, categories, commercial, override_preferences)| Workflow {
                key,
                categories,
                commercial,
                override_preferences,
            },
        )
}

fn channel() -> impl Strategy<Value = Channel> {
    (
        select(&ChannelType::ALL[..]),
        option::weighted(
            0.5,
            prop_oneof![8 => select(CHANNEL_IDS).prop_map(str::to_string), 1 => text()],
        ),
    )
        .prop_map(|(channel_type, id)| Channel { channel_type, id })
}

fn now() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        2 => Just("2026-11-29T12:00:00Z".parse().expect("a timestamp")),
        1 => Just(Timestamp::MIN),
        1 => Just(Timestamp::MAX),
        4 => (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
            .prop_map(|s| Timestamp::from_second(s).expect("in range")),
        4 => (1_600_000_000i64..1_900_000_000)
            .prop_map(|s| Timestamp::from_second(s).expect("in range")),
    ]
}

/// An entity, owned: id, collection, properties.
#[derive(Clone, Debug)]
struct OwnedEntity {
    id: String,
    collection: Option<String>,
    properties: Value,
}

impl OwnedEntity {
    fn borrow(&self) -> Entity<'_> {
        Entity {
            id: &self.id,
            collection: self.collection.as_deref(),
            properties: Properties::Parsed(&self.properties),
            created_at: None,
            updated_at: None,
        }
    }
}

fn entity() -> BoxedStrategy<OwnedEntity> {
    (
        prop_oneof![4 => Just("u1".to_string()), 1 => text()],
        option::weighted(0.2, text()),
        properties(),
    )
        .prop_map(|(id, collection, properties)| OwnedEntity {
            id,
            collection,
            properties,
        })
        .boxed()
}

/// Everything of a [`Context`] except the workflow, owned.
#[derive(Clone, Debug)]
struct World {
    recipient: OwnedEntity,
    actor: Option<OwnedEntity>,
    data: Value,
    tenant: Value,
    vars: Value,
    audiences: Vec<std::sync::Arc<str>>,
    now: Timestamp,
}

fn world() -> BoxedStrategy<World> {
    (
        entity(),
        option::of(entity()),
        properties(),
        prop_oneof![
            Just(Value::Null),
            (select(TENANTS), text(), properties()).prop_map(
                |(id, name, properties)| json!({"id": id, "name": name, "properties": properties})
            ),
            json(),
        ],
        properties(),
        vec(
            prop_oneof![4 => select(AUDIENCES).prop_map(str::to_string), 1 => text()],
            0..3,
        ),
        now(),
    )
        .prop_map(
            |(recipient, actor, data, tenant, vars, audiences, now)| World {
                recipient,
                actor,
                data,
                tenant,
                vars,
                audiences: audiences.into_iter().map(Into::into).collect(),
                now,
            },
        )
        .boxed()
}

/// The raw sets of one recipient's hierarchy; invalid ones count as absent.
#[derive(Clone, Debug)]
struct Hierarchy {
    environment: Option<Value>,
    tenant: Option<(String, Option<Value>)>,
    recipient_default: Option<Value>,
    recipient_tenant: Option<Value>,
}

fn hierarchy() -> BoxedStrategy<Hierarchy> {
    (
        option::weighted(0.8, hierarchy_set(true)),
        option::weighted(
            0.6,
            (
                select(TENANTS).prop_map(str::to_string),
                option::weighted(0.6, hierarchy_set(true)),
            ),
        ),
        option::weighted(0.8, hierarchy_set(false)),
        option::weighted(0.6, hierarchy_set(false)),
    )
        .prop_map(
            |(environment, tenant, recipient_default, recipient_tenant)| Hierarchy {
                environment,
                tenant,
                recipient_default,
                recipient_tenant,
            },
        )
        .boxed()
}

/// The parsed sets of a [`Hierarchy`], so that a [`Stack`] can borrow them.
struct Parsed {
    environment: PreferenceSet,
    tenant: Option<(String, Option<PreferenceSet>)>,
    recipient_default: Option<PreferenceSet>,
    recipient_tenant: Option<PreferenceSet>,
}

impl Parsed {
    fn new(h: &Hierarchy) -> Parsed {
        let parse = |v: &Option<Value>, kind| {
            v.as_ref()
                .and_then(|v| PreferenceSet::parse(v, kind, "p").ok())
        };
        Parsed {
            environment: parse(&h.environment, SetKind::Default).unwrap_or_default(),
            tenant: h
                .tenant
                .as_ref()
                .map(|(id, set)| (id.clone(), parse(set, SetKind::Default))),
            recipient_default: parse(&h.recipient_default, SetKind::Recipient),
            recipient_tenant: parse(&h.recipient_tenant, SetKind::Recipient),
        }
    }

    /// Sets that skip validation, to check that evaluation is total even then.
    fn unvalidated(h: &Hierarchy) -> Parsed {
        let raw = |v: &Option<Value>| {
            v.as_ref().map(|v| match v {
                Value::Object(m) => PreferenceSet::from_valid(m.clone()),
                _ => PreferenceSet::empty(),
            })
        };
        Parsed {
            environment: raw(&h.environment).unwrap_or_default(),
            tenant: h.tenant.as_ref().map(|(id, set)| (id.clone(), raw(set))),
            recipient_default: raw(&h.recipient_default),
            recipient_tenant: raw(&h.recipient_tenant),
        }
    }

    fn stack(&self) -> Stack<'_> {
        Stack::for_recipient(&Sources {
            environment: &self.environment,
            tenant: self
                .tenant
                .as_ref()
                .map(|(id, set)| (id.as_str(), set.as_ref())),
            recipient_default: self.recipient_default.as_ref().map(SetRef::from),
            recipient_tenant: self.recipient_tenant.as_ref().map(SetRef::from),
        })
    }
}

/// preferences.md §4.2 and §4.3 read literally: pick the layers, then fold `⊕` from the
/// lowest up, a locked node of the lower side winning whole.
fn spec_effective(parsed: &Parsed) -> Value {
    fn locked(v: &Value) -> bool {
        v.get("__strategy__") == Some(&json!("replace"))
    }
    fn merge(lower: &Value, higher: &Value) -> Value {
        match (lower, higher) {
            (Value::Object(_), _) if locked(lower) => lower.clone(),
            (Value::Object(a), Value::Object(b)) => {
                let mut out = a.clone();
                for (k, v) in b {
                    let merged = a.get(k).map_or_else(|| v.clone(), |av| merge(av, v));
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (_, b) => b.clone(),
        }
    }
    let mut layers = vec![&parsed.environment];
    match &parsed.tenant {
        Some((_, td)) if td.is_some() || parsed.recipient_tenant.is_some() => {
            layers.extend(td.as_ref());
            layers.extend(parsed.recipient_tenant.as_ref());
        }
        _ => layers.extend(parsed.recipient_default.as_ref()),
    }
    layers
        .into_iter()
        .fold(json!({}), |acc, set| merge(&acc, &set.to_value()))
}

/// Decides every channel, lazily and against the materialised effective set, and checks that
/// both agree and that each decision is well-formed.
fn check_decisions(
    parsed: &Parsed,
    workflow: &Workflow,
    channels: &[Channel],
    world: &World,
) -> Result<Vec<ReasonCode>, TestCaseError> {
    let workflow_value = workflow.to_value();
    let ctx = Context {
        recipient: world.recipient.borrow(),
        actor: world.actor.as_ref().map(OwnedEntity::borrow),
        data: &world.data,
        tenant: &world.tenant,
        vars: &world.vars,
        workflow: &workflow_value,
        run: &Value::Null,
        audiences: &world.audiences,
        now: world.now,
        budget: crate::eval::Budget::unlimited(),
    };
    let stack = parsed.stack();
    let effective = stack.effective();
    let flat = Stack::from_layers(&[(LayerId::Environment, SetRef::Json(&effective))]);
    // Deciding all channels at once gives each channel the answer it gets alone.
    let together = decide_channels(
        workflow,
        channels,
        &stack,
        parsed.recipient_default.as_ref().map(SetRef::from),
        &ctx,
    );
    let mut codes = Vec::new();
    for (channel, batched) in channels.iter().zip(&together) {
        let lazy = decide(
            workflow,
            channel,
            &stack,
            parsed.recipient_default.as_ref().map(SetRef::from),
            &ctx,
        );
        well_formed(&lazy)?;
        provenance(parsed, workflow, channel, &lazy)?;
        let materialised = decide(
            workflow,
            channel,
            &flat,
            parsed.recipient_default.as_ref().map(SetRef::from),
            &ctx,
        );
        prop_assert_eq!(
            (
                lazy.send,
                lazy.reason.code,
                &lazy.reason.path,
                &lazy.reason.condition
            ),
            (
                materialised.send,
                materialised.reason.code,
                &materialised.reason.path,
                &materialised.reason.condition
            ),
            "lazy and materialised evaluation disagree on {:?}; effective set {}",
            channel,
            effective.to_value()
        );
        if let Some(send) = oracle(
            effective.as_map(),
            parsed.recipient_default.as_ref(),
            workflow,
            channel,
        ) {
            prop_assert_eq!(
                lazy.send,
                send,
                "§5 says otherwise for {:?} on {:?}: {:?}; effective set {}",
                workflow,
                channel,
                lazy,
                effective.to_value()
            );
        }
        prop_assert_eq!(
            batched,
            &lazy,
            "decide_channels disagrees with decide on {:?}",
            channel
        );
        codes.push(lazy.reason.code);
    }
    Ok(codes)
}

/// preferences.md §5 read literally, over the effective set as plain JSON, for decisions
/// that need no condition: `None` when a non-empty condition list would have to be evaluated.
fn oracle(
    effective: &Map<String, Value>,
    recipient_default: Option<&PreferenceSet>,
    workflow: &Workflow,
    channel: &Channel,
) -> Option<bool> {
    fn conditions_hold(setting: &Map<String, Value>) -> Option<bool> {
        match setting.get("conditions") {
            None | Some(Value::Null) => Some(true),
            Some(Value::Array(list)) if list.is_empty() => Some(true),
            Some(_) => None,
        }
    }
    fn setting_allows(v: Option<&Value>) -> Option<bool> {
        match v {
            None | Some(Value::Null) => Some(true),
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::Object(m)) => conditions_hold(m),
            Some(_) => Some(true),
        }
    }
    fn scope_allows(s: Option<&Value>, channel: &Channel) -> Option<bool> {
        let s = match s {
            None | Some(Value::Null) => return Some(true),
            Some(Value::Bool(b)) => return Some(*b),
            Some(Value::Object(s)) => s,
            Some(_) => return Some(true),
        };
        if !conditions_hold(s)? {
            return Some(false);
        }
        let get = |section: &str, key: &str| s.get(section).and_then(|m| m.get(key));
        if let Some(v) = channel.id.as_ref().and_then(|id| get("channels", id)) {
            return setting_allows(Some(v));
        }
        setting_allows(get("channel_types", channel.channel_type.as_str()))
    }
    if workflow.override_preferences {
        return Some(true);
    }
    if workflow.commercial {
        let own = recipient_default.and_then(|set| set.as_map().get("commercial_subscribed"));
        if !setting_allows(own.or_else(|| effective.get("commercial_subscribed")))? {
            return Some(false);
        }
    }
    let top = Value::Object(effective.clone());
    let mut scopes = vec![Some(&top)];
    scopes.push(
        effective
            .get("workflows")
            .and_then(|w| w.get(&workflow.key)),
    );
    for c in &workflow.categories {
        scopes.push(effective.get("categories").and_then(|m| m.get(c)));
    }
    // Scopes are checked in order and the first denial decides, so a condition after a
    // denial does not matter, but one before it does.
    for scope in scopes {
        if !scope_allows(scope, channel)? {
            return Some(false);
        }
    }
    Some(true)
}

/// A denial's `layer` and `path` point at the value that decided: in that layer's own set,
/// at that path, is `false`, or a setting whose conditions include the failing one.
fn provenance(
    parsed: &Parsed,
    workflow: &Workflow,
    channel: &Channel,
    d: &Decision,
) -> Result<(), TestCaseError> {
    let (Some(path), Some(layer)) = (&d.reason.path, &d.reason.layer) else {
        return Ok(());
    };
    let tenant_branch = matches!(&parsed.tenant, Some((_, td)) if td.is_some() || parsed.recipient_tenant.is_some());
    let set = if d.reason.code == ReasonCode::CommercialUnsubscribed
        && parsed
            .recipient_default
            .as_ref()
            .is_some_and(|s| s.as_map().contains_key("commercial_subscribed"))
    {
        prop_assert_eq!(layer, "recipient:default");
        parsed.recipient_default.as_ref()
    } else if layer == "environment" {
        Some(&parsed.environment)
    } else if let Some(t) = layer.strip_prefix("tenant:") {
        prop_assert_eq!(Some(t), parsed.tenant.as_ref().map(|(id, _)| id.as_str()));
        parsed.tenant.as_ref().and_then(|(_, td)| td.as_ref())
    } else if let Some(r) = layer.strip_prefix("recipient:") {
        if tenant_branch {
            prop_assert_eq!(Some(r), parsed.tenant.as_ref().map(|(id, _)| id.as_str()));
            parsed.recipient_tenant.as_ref()
        } else {
            prop_assert_eq!(r, "default");
            parsed.recipient_default.as_ref()
        }
    } else {
        None
    };
    let set = set.ok_or_else(|| TestCaseError::fail(format!("no such layer: {d:?}")))?;

    let mut candidates: Vec<Vec<&str>> = vec![vec!["commercial_subscribed"]];
    let mut scopes: Vec<Vec<&str>> = vec![vec![], vec!["workflows", &workflow.key]];
    scopes.extend(
        workflow
            .categories
            .iter()
            .map(|c| vec!["categories", c.as_str()]),
    );
    for scope in scopes {
        if let Some(id) = &channel.id {
            candidates.push([&scope[..], &["channels", id.as_str()]].concat());
        }
        candidates.push(
            [
                &scope[..],
                &["channel_types", channel.channel_type.as_str()],
            ]
            .concat(),
        );
        candidates.push(scope);
    }
    let wanted = d.reason.condition.as_ref().map(|c| {
        let mut c = c.as_object().cloned().unwrap_or_default();
        for k in ["resolved_variable", "resolved_argument", "error"] {
            c.remove(k);
        }
        Value::Object(c)
    });
    let decided = candidates.iter().any(|segments| {
        if segments.join(".") != *path {
            return false;
        }
        let mut value = Some(&set.to_value()).cloned();
        for segment in segments {
            value = value.and_then(|v| v.get(segment).cloned());
        }
        match (&wanted, value) {
            (None, Some(Value::Bool(false))) => true,
            (Some(wanted), Some(v)) => v
                .get("conditions")
                .and_then(Value::as_array)
                .is_some_and(|list| list.contains(wanted)),
            _ => false,
        }
    });
    prop_assert!(
        decided,
        "{:?} names a value that is not in {}: {}",
        d.reason,
        layer,
        set.to_value()
    );
    Ok(())
}

fn well_formed(d: &Decision) -> Result<(), TestCaseError> {
    let sends = matches!(
        d.reason.code,
        ReasonCode::OptedIn | ReasonCode::OverridePreferences
    );
    prop_assert_eq!(d.send, sends, "send and reason code disagree: {:?}", d);
    prop_assert_eq!(
        d.reason.path.is_some(),
        !d.send,
        "a denial names its path: {:?}",
        d
    );
    prop_assert_eq!(
        d.reason.layer.is_some(),
        !d.send,
        "a denial names its layer: {:?}",
        d
    );
    if d.reason.code == ReasonCode::ConditionFailed {
        prop_assert!(d.reason.condition.is_some(), "no condition: {:?}", d);
    }
    if d.reason.condition.is_some() {
        prop_assert!(
            matches!(
                d.reason.code,
                ReasonCode::ConditionFailed | ReasonCode::CommercialUnsubscribed
            ),
            "only a failed condition carries one: {:?}",
            d
        );
    }
    Ok(())
}

fn config() -> ProptestConfig {
    // Failures are kept as explicit regression tests below, not in files.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config())]

    /// (a) + (b): validation is total, and a parsed set parses back to itself.
    #[test]
    fn parse_is_total_and_idempotent(input in any_set_input(), kind in kind()) {
        if let Ok(set) = PreferenceSet::parse(&input, kind, "preferences") {
            let again = PreferenceSet::parse(&set.to_value(), kind, "preferences");
            prop_assert_eq!(again.as_ref(), Ok(&set), "input {}", input);
            // A set valid for a recipient is valid as a default too.
            if kind == SetKind::Recipient {
                prop_assert_eq!(PreferenceSet::parse(&set.to_value(), SetKind::Default, "p"), Ok(set));
            }
        }
    }

    /// (a): writes are total, for both default strategies and both kinds; what they produce
    /// is a normalised set.
    #[test]
    fn writes_are_total(
        body in write_body(),
        stored in option::of(hierarchy_set(false)),
        default_merge in any::<bool>(),
        kind in kind(),
    ) {
        let stored = stored.and_then(|s| PreferenceSet::parse(&s, SetKind::Recipient, "stored").ok());
        let default = if default_merge { WriteStrategy::Merge } else { WriteStrategy::Replace };
        let generic = PreferenceSetRequest::parse(&body, default, "preferences");
        let for_kind = PreferenceSetRequest::parse_as(&body, default, kind, "preferences");
        // Checking the kind up front refuses no more than applying does.
        if let (Err(_), Ok(request)) = (&generic, &for_kind) {
            prop_assert!(false, "parse refused what parse_as({:?}) took: {:?}", kind, request);
        }
        for request in [generic, for_kind].into_iter().flatten() {
            for stored in [None, stored.as_ref()] {
                if let Ok(set) = request.apply(stored, kind, "preferences") {
                    prop_assert_eq!(PreferenceSet::parse(&set.to_value(), kind, "p"), Ok(set));
                }
            }
        }
    }

    /// Writes accept every valid set of their kind: replacing with it, merging it into
    /// nothing and merging it into itself all store it unchanged.
    #[test]
    fn writes_accept_valid_sets(input in any_set_input(), kind in kind()) {
        if let Ok(set) = PreferenceSet::parse(&input, kind, "preferences") {
            for (default, as_kind) in [
                (WriteStrategy::Replace, false),
                (WriteStrategy::Merge, false),
                (WriteStrategy::Replace, true),
                (WriteStrategy::Merge, true),
            ] {
                let body = set.to_value();
                let request = if as_kind {
                    PreferenceSetRequest::parse_as(&body, default, kind, "preferences")
                } else {
                    PreferenceSetRequest::parse(&body, default, "preferences")
                };
                prop_assert!(request.is_ok(), "{:?} of {} refused: {:?}", default, input, request);
                let request = request.expect("checked");
                prop_assert_eq!(request.apply(None, kind, "preferences"), Ok(set.clone()));
                prop_assert_eq!(request.apply(Some(&set), kind, "preferences"), Ok(set.clone()));
            }
        }
    }

    /// (c) + (d): evaluation is total over valid hierarchies, and the lazy walk agrees with
    /// the materialised effective set, which is itself a normalised set.
    #[test]
    fn decide_is_total_and_agrees_with_effective(
        h in hierarchy(),
        workflow in workflow(),
        channels in vec(channel(), 1..7),
        world in world(),
    ) {
        let parsed = Parsed::new(&h);
        let effective = parsed.stack().effective();
        let reparsed = PreferenceSet::parse(&effective.to_value(), SetKind::Default, "effective");
        prop_assert_eq!(reparsed.as_ref(), Ok(&effective));
        prop_assert_eq!(effective.to_value(), spec_effective(&parsed), "hierarchy {:?}", h);
        check_decisions(&parsed, &workflow, &channels, &world)?;
    }

    /// (c), stronger: evaluation stays total even over sets that skipped validation.
    #[test]
    fn decide_is_total_on_unvalidated_sets(
        h in hierarchy(),
        env in option::of(json()),
        workflow in workflow(),
        channels in vec(channel(), 1..7),
        world in world(),
    ) {
        let h = Hierarchy { environment: env.or(h.environment.clone()), ..h };
        let parsed = Parsed::unvalidated(&h);
        let stack = parsed.stack();
        let workflow_value = workflow.to_value();
        let ctx = Context {
            recipient: world.recipient.borrow(),
            actor: world.actor.as_ref().map(OwnedEntity::borrow),
            data: &world.data,
            tenant: &world.tenant,
            vars: &world.vars,
            workflow: &workflow_value,
            run: &Value::Null,
            audiences: &world.audiences,
            now: world.now,
            budget: crate::eval::Budget::unlimited(),
        };
        let _ = stack.effective();
        for channel in &channels {
            let _ = decide(&workflow, channel, &stack, parsed.recipient_default.as_ref().map(SetRef::from), &ctx);
        }
    }
}

/// How much of the generated input is valid and which outcomes evaluation reaches, so that
/// the properties above exercise evaluation and not only rejection. Not a property: a guard
/// on the generators.
#[test]
fn generators_reach_evaluation() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    fn sample<T>(s: impl Strategy<Value = T>, runner: &mut TestRunner) -> T {
        s.new_tree(runner).expect("a value").current()
    }
    let mut runner = TestRunner::deterministic();
    let (mut valid_default, mut valid_recipient, mut with_conditions) = (0, 0, 0);
    let mut codes = Vec::new();
    let n = 300;
    for _ in 0..n {
        let d = sample(plausible_set(true, false), &mut runner);
        let r = sample(plausible_set(false, false), &mut runner);
        if PreferenceSet::parse(&d, SetKind::Default, "p").is_ok() {
            valid_default += 1;
        }
        if let Ok(set) = PreferenceSet::parse(&r, SetKind::Recipient, "p") {
            valid_recipient += 1;
            if set.to_value().to_string().contains("\"conditions\":[{") {
                with_conditions += 1;
            }
        }
        let parsed = Parsed::new(&sample(hierarchy(), &mut runner));
        let workflow = sample(workflow(), &mut runner);
        let channels = sample(vec(channel(), 1..7), &mut runner);
        let world = sample(world(), &mut runner);
        codes.extend(
            check_decisions(&parsed, &workflow, &channels, &world).expect("properties hold"),
        );
    }
    let count = |code| codes.iter().filter(|c| **c == code).count();
    let report = format!(
        "valid default sets {valid_default}/{n}, valid recipient sets {valid_recipient}/{n}, \
         with conditions {with_conditions}/{n}; of {} decisions: opted_in {}, opted_out {}, \
         condition_failed {}, commercial_unsubscribed {}, override {}",
        codes.len(),
        count(ReasonCode::OptedIn),
        count(ReasonCode::OptedOut),
        count(ReasonCode::ConditionFailed),
        count(ReasonCode::CommercialUnsubscribed),
        count(ReasonCode::OverridePreferences),
    );
    println!("{report}");
    assert!(valid_default * 2 > n, "{report}");
    assert!(valid_recipient * 2 > n, "{report}");
    assert!(with_conditions * 5 > n, "{report}");
    for code in ReasonCode::ALL {
        assert!(count(code) * 50 > codes.len(), "{code:?} is rare: {report}");
    }
}

/// Regression (found by `writes_accept_valid_sets`): a write body was always validated as a
/// recipient's set, so `tenants.set` refused a tenant default with a `__strategy__` lock,
/// which §2 allows. The lock is accepted for defaults and still refused for recipients.
#[test]
fn regression_tenant_default_write_keeps_its_lock() {
    let body = json!({
        "channel_types": { "__strategy__": "replace", "email": true },
        "categories": { "security": { "__strategy__": "replace", "channel_types": { "email": true } } },
    });
    let stored = PreferenceSet::parse(
        &json!({ "channels": { "ch1": false } }),
        SetKind::Default,
        "s",
    )
    .expect("a valid set");
    let request =
        PreferenceSetRequest::parse(&body, WriteStrategy::Merge, "settings.preference_set")
            .expect("a tenant default may lock");
    let set = request
        .apply(Some(&stored), SetKind::Default, "settings.preference_set")
        .expect("a tenant default may lock");
    assert_eq!(
        set.as_map()["channel_types"]["__strategy__"],
        json!("replace")
    );
    assert_eq!(set.as_map()["channels"], json!({ "ch1": false }));

    let refused = request
        .apply(None, SetKind::Recipient, "preferences")
        .expect_err("a recipient may not lock");
    assert_eq!(
        refused.errors[0].field,
        "preferences.categories.security.__strategy__"
    );
    let refused = PreferenceSetRequest::parse_as(
        &body,
        WriteStrategy::Merge,
        SetKind::Recipient,
        "preferences",
    )
    .expect_err("a recipient may not lock");
    assert_eq!(refused.errors.len(), 2, "{refused}");
}
