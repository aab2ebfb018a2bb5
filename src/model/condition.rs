//! The condition language of preferences.md §6: its operators, what argument each reads,
//! the namespaces of variables, and a condition borrowed from a valid set.

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
