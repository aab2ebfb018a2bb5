//! The condition language of preferences.md §6: its operators, what argument each reads,
//! the namespaces of variables, a condition borrowed from a valid set, the coercions of
//! §6.1 (numbers, text, lists, times) and the check of a literal argument at write time.
//! The validator and `eval` both use it; it does no I/O and takes `now` as a value.

use std::borrow::Cow;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// The condition operators of preferences.md §6.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    EqualTo,
    NotEqualTo,
    GreaterThan,
    LessThan,
    GreaterThanOrEqualTo,
    LessThanOrEqualTo,
    Contains,
    NotContains,
    ContainsAll,
    NotContainsAll,
    Empty,
    NotEmpty,
    Exists,
    NotExists,
    IsTimestamp,
    IsNotTimestamp,
    IsTimestampBefore,
    IsTimestampOnOrAfter,
    IsTimestampBeforeDate,
    IsTimestampOnOrAfterDate,
    IsTimestampBetween,
    IsBetween,
    IsAudienceMember,
    IsNotAudienceMember,
}

/// What kind of argument an operator reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgumentKind {
    /// The operator ignores its argument.
    None,
    /// Any JSON value.
    Any,
    /// A number, or a string that parses as one.
    Number,
    /// A list: a JSON array or a string holding one.
    List,
    /// A time: RFC 3339, an ISO 8601 date, unix seconds, or relative to now.
    Time,
    /// A list of two times.
    TimeRange,
    /// A list of two numbers.
    NumberRange,
    /// A string (an audience key).
    Text,
}

impl Operator {
    pub const ALL: [Operator; 24] = [
        Operator::EqualTo,
        Operator::NotEqualTo,
        Operator::GreaterThan,
        Operator::LessThan,
        Operator::GreaterThanOrEqualTo,
        Operator::LessThanOrEqualTo,
        Operator::Contains,
        Operator::NotContains,
        Operator::ContainsAll,
        Operator::NotContainsAll,
        Operator::Empty,
        Operator::NotEmpty,
        Operator::Exists,
        Operator::NotExists,
        Operator::IsTimestamp,
        Operator::IsNotTimestamp,
        Operator::IsTimestampBefore,
        Operator::IsTimestampOnOrAfter,
        Operator::IsTimestampBeforeDate,
        Operator::IsTimestampOnOrAfterDate,
        Operator::IsTimestampBetween,
        Operator::IsBetween,
        Operator::IsAudienceMember,
        Operator::IsNotAudienceMember,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::EqualTo => "equal_to",
            Operator::NotEqualTo => "not_equal_to",
            Operator::GreaterThan => "greater_than",
            Operator::LessThan => "less_than",
            Operator::GreaterThanOrEqualTo => "greater_than_or_equal_to",
            Operator::LessThanOrEqualTo => "less_than_or_equal_to",
            Operator::Contains => "contains",
            Operator::NotContains => "not_contains",
            Operator::ContainsAll => "contains_all",
            Operator::NotContainsAll => "not_contains_all",
            Operator::Empty => "empty",
            Operator::NotEmpty => "not_empty",
            Operator::Exists => "exists",
            Operator::NotExists => "not_exists",
            Operator::IsTimestamp => "is_timestamp",
            Operator::IsNotTimestamp => "is_not_timestamp",
            Operator::IsTimestampBefore => "is_timestamp_before",
            Operator::IsTimestampOnOrAfter => "is_timestamp_on_or_after",
            Operator::IsTimestampBeforeDate => "is_timestamp_before_date",
            Operator::IsTimestampOnOrAfterDate => "is_timestamp_on_or_after_date",
            Operator::IsTimestampBetween => "is_timestamp_between",
            Operator::IsBetween => "is_between",
            Operator::IsAudienceMember => "is_audience_member",
            Operator::IsNotAudienceMember => "is_not_audience_member",
        }
    }

    pub fn parse(s: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|op| op.as_str() == s)
    }

    pub fn argument_kind(self) -> ArgumentKind {
        use Operator::*;
        match self {
            Empty | NotEmpty | Exists | NotExists | IsTimestamp | IsNotTimestamp => {
                ArgumentKind::None
            }
            EqualTo | NotEqualTo | Contains | NotContains => ArgumentKind::Any,
            GreaterThan | LessThan | GreaterThanOrEqualTo | LessThanOrEqualTo => {
                ArgumentKind::Number
            }
            ContainsAll | NotContainsAll => ArgumentKind::List,
            IsTimestampBefore
            | IsTimestampOnOrAfter
            | IsTimestampBeforeDate
            | IsTimestampOnOrAfterDate => ArgumentKind::Time,
            IsTimestampBetween => ArgumentKind::TimeRange,
            IsBetween => ArgumentKind::NumberRange,
            IsAudienceMember | IsNotAudienceMember => ArgumentKind::Text,
        }
    }
}

/// The namespaces a condition variable or dynamic argument may name (preferences.md §6.1).
pub const NAMESPACES: [&str; 7] = [
    "recipient",
    "actor",
    "data",
    "tenant",
    "vars",
    "workflow",
    "run",
];

/// A condition, borrowed from a valid set. Building one re-checks the shape, so evaluation
/// stays total even if it were handed something unvalidated.
#[derive(Clone, Copy, Debug)]
pub struct Condition<'a> {
    pub variable: &'a str,
    pub operator: Operator,
    pub argument: &'a Value,
    /// The condition as written, for reasons.
    pub source: &'a Value,
}

impl<'a> Condition<'a> {
    pub fn from_value(value: &'a Value) -> Result<Condition<'a>, String> {
        static NULL: Value = Value::Null;
        let map = value.as_object().ok_or("must be an object")?;
        let variable = map
            .get("variable")
            .and_then(Value::as_str)
            .ok_or("variable must be a string")?;
        let operator = map
            .get("operator")
            .and_then(Value::as_str)
            .and_then(Operator::parse)
            .ok_or("operator must be a known operator")?;
        Ok(Condition {
            variable,
            operator,
            argument: map.get("argument").unwrap_or(&NULL),
            source: value,
        })
    }
}

/// Splits `ns.path` into a known namespace and a non-empty path.
pub fn split_variable(s: &str) -> Option<(&str, &str)> {
    let (ns, path) = s.split_once('.')?;
    (NAMESPACES.contains(&ns) && !path.is_empty()).then_some((ns, path))
}

/// The most items a literal list argument may hold (a validation error at write time).
/// Lists are compared through hash sets, so a condition costs its two lists' lengths; this
/// and the set size limit bound what one stored condition can ask for.
pub const MAX_LIST_ITEMS: usize = 1000;

/// Checks a literal argument at write time (preferences.md §6.2: an argument that cannot be
/// read for its operator is a validation error when it is literal). Dynamic arguments are
/// checked when they are read.
pub fn check_literal_argument(op: Operator, argument: &Value) -> Result<(), String> {
    if is_dynamic(argument) {
        return Ok(());
    }
    // Any fixed instant will do: only the form of a relative time matters here.
    let now = Timestamp::UNIX_EPOCH;
    let literal_or_dynamic = |v: &Value, ok: &dyn Fn(&Value) -> bool| is_dynamic(v) || ok(v);
    let name = op.as_str();
    if matches!(op.argument_kind(), ArgumentKind::Any | ArgumentKind::List)
        && let Some(items) = list(argument)
        && items.len() > MAX_LIST_ITEMS
    {
        return Err(format!(
            "{name} takes a list of at most {MAX_LIST_ITEMS} items; this one has {}",
            items.len()
        ));
    }
    let ok = match op.argument_kind() {
        ArgumentKind::None | ArgumentKind::Any => true,
        ArgumentKind::Number => number(argument).is_some(),
        ArgumentKind::List => list(argument).is_some(),
        ArgumentKind::Time => timestamp(argument, Some(now)).is_some(),
        ArgumentKind::TimeRange => list(argument).is_some_and(|l| {
            l.len() == 2
                && l.iter()
                    .all(|v| literal_or_dynamic(v, &|v| timestamp(v, Some(now)).is_some()))
        }),
        ArgumentKind::NumberRange => list(argument).is_some_and(|l| {
            l.len() == 2
                && l.iter()
                    .all(|v| literal_or_dynamic(v, &|v| number(v).is_some()))
        }),
        ArgumentKind::Text => argument.as_str().is_some_and(|s| !s.is_empty()),
    };
    if ok {
        return Ok(());
    }
    Err(match op.argument_kind() {
        ArgumentKind::Number => format!("{name} needs a number"),
        ArgumentKind::List => {
            format!("{name} needs a list (a JSON array, or a string holding one)")
        }
        ArgumentKind::Time => {
            format!(
                "{name} needs a time: RFC 3339, a date (YYYY-MM-DD), unix seconds, or \"<n> <unit> ago|from now\""
            )
        }
        ArgumentKind::TimeRange => format!("{name} needs a list of two times [start, end]"),
        ArgumentKind::NumberRange => format!("{name} needs a list of two numbers [low, high]"),
        _ => format!("{name} needs a non-empty audience key"),
    })
}

/// A string argument that names a namespace path is read from the context.
pub fn is_dynamic(argument: &Value) -> bool {
    argument
        .as_str()
        .is_some_and(|s| split_variable(s).is_some())
}

/// A number, or a string that parses as one.
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// The string a value compares as: `null` is `""`, booleans are `"true"`/`"false"`.
pub fn text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        other => Cow::Owned(other.to_string()),
    }
}

/// Equality after the coercions of §6.1.
pub fn equal(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    match (a, b) {
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => a == b,
        _ => text(a) == text(b),
    }
}

/// A list argument: a JSON array, or a string holding one.
pub fn list(value: &Value) -> Option<Cow<'_, [Value]>> {
    match value {
        Value::Array(items) => Some(Cow::Borrowed(items)),
        Value::String(s) if s.trim_start().starts_with('[') => {
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) => Some(Cow::Owned(items)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// What a value is equal to under [`equal`], as a hashable key: two values are `equal`
/// exactly when their keys are. Numbers and numeric strings are their number (`0` and
/// `-0` one key), arrays and objects their JSON text (serde_json's maps are sorted, so
/// equal values write equal text), and every other scalar the text it compares as
/// (`null` is `""`, booleans `"true"`/`"false"`). A numeric key never meets a text key
/// that `equal` would match: a text that parses as a number is a number.
#[derive(PartialEq, Eq, Hash)]
pub enum Key<'v> {
    Number(u64),
    Text(Cow<'v, str>),
    Json(String),
}

impl<'v> Key<'v> {
    pub fn of(value: &'v Value) -> Key<'v> {
        if let Some(x) = number(value) {
            // +0.0 and -0.0 are equal but have different bits.
            let x = if x == 0.0 { 0.0 } else { x };
            return Key::Number(x.to_bits());
        }
        match value {
            Value::Array(_) | Value::Object(_) => Key::Json(value.to_string()),
            scalar => Key::Text(text(scalar)),
        }
    }
}

/// A time: RFC 3339, an ISO 8601 date (midnight UTC), unix seconds (a number or a numeric
/// string), or, when `now` is given (arguments only), `"<n> <unit> ago"` /
/// `"<n> <unit> from now"`.
pub fn timestamp(value: &Value, now: Option<Timestamp>) -> Option<Timestamp> {
    match value {
        Value::Number(n) => from_unix(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = s.parse::<Timestamp>() {
                return Some(t);
            }
            if let Ok(secs) = s.parse::<f64>() {
                return from_unix(secs);
            }
            if let Some(t) = date(s) {
                return Some(t);
            }
            relative(s, now?)
        }
        _ => None,
    }
}

/// An ISO 8601 calendar date, `YYYY-MM-DD` exactly, as the instant it begins in UTC
/// (preferences.md §6.1; Knock's own example is `is_timestamp_between ["2025-01-01",
/// "2025-12-31"]`). Only the complete form: a date with a time but no offset stays
/// unreadable, since which instant it names is unknown.
pub fn date(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    let day: jiff::civil::Date = s.parse().ok()?;
    day.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

pub fn from_unix(secs: f64) -> Option<Timestamp> {
    if !secs.is_finite() {
        return None;
    }
    Timestamp::from_millisecond((secs * 1000.0).round() as i64).ok()
}

pub fn relative(s: &str, now: Timestamp) -> Option<Timestamp> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let (n, unit, sign) = match words.as_slice() {
        [n, unit, "ago"] => (n, unit, -1),
        [n, unit, "from", "now"] => (n, unit, 1),
        _ => return None,
    };
    let n: i64 = n.parse().ok().filter(|n| *n >= 0)?;
    let unit_secs = match unit.trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        "week" => 604_800,
        _ => return None,
    };
    let secs = n.checked_mul(unit_secs)?.checked_mul(sign)?;
    now.checked_add(SignedDuration::from_secs(secs)).ok()
}

pub fn utc_day(t: Timestamp) -> i64 {
    t.as_second().div_euclid(86_400)
}
