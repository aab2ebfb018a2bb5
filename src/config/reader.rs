//! The TOML reader of the config files: spanned parsing, line numbers found once per file,
//! and [`TomlReader`], which reads typed values and records every problem with its line.

use std::ops::Range;
use std::path::PathBuf;

use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ConfigError, MAX_FILE_BYTES};

/// The 1-based line of a byte offset. For one error; [`Lines`] answers many.
pub(super) fn line_at(source: &str, offset: usize) -> usize {
    Lines::of(source).line_at(offset)
}

/// Where each line of a file ends, found once, so that naming the line of every workflow
/// and error costs a binary search and not a count from the start of the file (issue 22:
/// counting made a 20 000-workflow catalog take 8.7 s, quadratic in its length).
pub(super) struct Lines {
    newlines: Vec<usize>,
}

impl Lines {
    pub(super) fn of(source: &str) -> Lines {
        let newlines = source
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        Lines { newlines }
    }

    /// The 1-based line of a byte offset: one more than the newlines before it.
    pub(super) fn line_at(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

/// Parses a TOML file into its spanned table, or records the syntax error.
pub(super) fn parse_toml<'i>(
    file: &str,
    source: &'i str,
    errors: &mut Vec<ConfigError>,
) -> Option<DeTable<'i>> {
    match DeTable::parse(source) {
        Ok(table) => Some(table.into_inner()),
        Err(e) => {
            let line = e.span().map(|span| line_at(source, span.start));
            errors.push(ConfigError::new(
                file,
                line,
                format!("invalid TOML: {}", e.message()),
            ));
            None
        }
    }
}

pub(super) type Item<'i> = Spanned<DeValue<'i>>;

/// The error for a config file over [`MAX_FILE_BYTES`].
pub(crate) fn too_large(file: &str, len: usize) -> ConfigError {
    ConfigError::new(
        file,
        None,
        format!(
            "the file is {len} bytes; config files may be at most {MAX_FILE_BYTES} bytes \
             ({} MiB)",
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
}

/// Reads typed values out of one TOML file, recording every problem with its line.
pub(super) struct TomlReader<'a> {
    pub(super) file: &'a str,
    pub(super) lines: Lines,
    pub(super) errors: &'a mut Vec<ConfigError>,
}

impl TomlReader<'_> {
    pub(super) fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.lines.line_at(span.start);
        self.errors
            .push(ConfigError::new(self.file, Some(line), message));
    }

    pub(super) fn line(&self, span: Range<usize>) -> usize {
        self.lines.line_at(span.start)
    }

    pub(super) fn unknown_key(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, within: &str) {
        let name = key.get_ref();
        let message = if within.is_empty() {
            format!("unknown key `{name}`")
        } else {
            format!("unknown key `{name}` in {within}")
        };
        self.err(key.span(), message);
    }

    pub(super) fn wrong_type(&mut self, name: &str, item: &Item<'_>, expected: &str) {
        let got = item.get_ref().type_str();
        self.err(
            item.span(),
            format!("`{name}` must be {expected}, got {got}"),
        );
    }

    pub(super) fn table<'t, 'i>(
        &mut self,
        name: &str,
        item: &'t Item<'i>,
    ) -> Option<&'t DeTable<'i>> {
        match item.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(name, item, "a table");
                None
            }
        }
    }

    pub(super) fn string(&mut self, name: &str, item: &Item<'_>) -> Option<String> {
        match item.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(name, item, "a string");
                None
            }
        }
    }

    pub(super) fn non_empty_string(&mut self, name: &str, item: &Item<'_>) -> Option<String> {
        let s = self.string(name, item)?;
        if s.is_empty() {
            self.err(item.span(), format!("`{name}` must not be empty"));
            return None;
        }
        Some(s)
    }

    pub(super) fn path(&mut self, name: &str, item: &Item<'_>) -> Option<PathBuf> {
        self.non_empty_string(name, item).map(PathBuf::from)
    }

    pub(super) fn bool(&mut self, name: &str, item: &Item<'_>) -> Option<bool> {
        match item.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(name, item, "true or false");
                None
            }
        }
    }

    pub(super) fn integer(&mut self, name: &str, item: &Item<'_>) -> Option<i128> {
        match item.get_ref() {
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(item.span(), format!("`{name}` is out of range"));
                    None
                }
            },
            _ => {
                self.wrong_type(name, item, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn int_in(
        &mut self,
        name: &str,
        item: &Item<'_>,
        min: i128,
        max: i128,
    ) -> Option<i128> {
        let n = self.integer(name, item)?;
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            self.err(
                item.span(),
                format!("`{name}` must be an integer from {min} to {max}, got {n}"),
            );
            None
        }
    }

    pub(super) fn u32_in(&mut self, name: &str, item: &Item<'_>, min: u32) -> Option<u32> {
        let n = self.int_in(name, item, min.into(), u32::MAX.into())?;
        u32::try_from(n).ok()
    }

    pub(super) fn usize_in(&mut self, name: &str, item: &Item<'_>, min: usize) -> Option<usize> {
        let max = i128::try_from(usize::MAX).unwrap_or(i128::MAX);
        let min = i128::try_from(min).unwrap_or(0);
        let n = self.int_in(name, item, min, max)?;
        usize::try_from(n).ok()
    }

    pub(super) fn array<'t, 'i>(
        &mut self,
        name: &str,
        item: &'t Item<'i>,
    ) -> Option<&'t [Item<'i>]> {
        match item.get_ref() {
            DeValue::Array(array) => Some(array),
            _ => {
                self.wrong_type(name, item, "an array");
                None
            }
        }
    }

    pub(super) fn string_array(&mut self, name: &str, item: &Item<'_>) -> Option<Vec<String>> {
        let array = self.array(name, item)?;
        let mut out = Vec::with_capacity(array.len());
        let mut ok = true;
        for (i, element) in array.iter().enumerate() {
            match self.non_empty_string(&format!("{name}[{i}]"), element) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A TOML value as JSON (for `[vars]`): datetimes become their RFC 3339 strings.
    pub(super) fn json(&mut self, name: &str, item: &Item<'_>) -> Option<Value> {
        match item.get_ref() {
            DeValue::String(s) => Some(Value::String(s.to_string())),
            DeValue::Boolean(b) => Some(Value::Bool(*b)),
            DeValue::Datetime(d) => Some(Value::String(d.to_string())),
            DeValue::Integer(_) => {
                let n = self.integer(name, item)?;
                if let Ok(n) = i64::try_from(n) {
                    Some(Value::from(n))
                } else if let Ok(n) = u64::try_from(n) {
                    Some(Value::from(n))
                } else {
                    self.err(item.span(), format!("`{name}` is out of range"));
                    None
                }
            }
            DeValue::Float(f) => {
                let number = f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64);
                match number {
                    Some(n) => Some(Value::Number(n)),
                    None => {
                        self.err(
                            item.span(),
                            format!("`{name}` must be a finite number, got {}", f.as_str()),
                        );
                        None
                    }
                }
            }
            DeValue::Array(array) => {
                let mut out = Vec::with_capacity(array.len());
                for (i, element) in array.iter().enumerate() {
                    out.push(self.json(&format!("{name}[{i}]"), element)?);
                }
                Some(Value::Array(out))
            }
            DeValue::Table(table) => {
                let mut out = serde_json::Map::new();
                for (key, value) in table.iter() {
                    let key = key.get_ref().to_string();
                    let v = self.json(&format!("{name}.{key}"), value)?;
                    out.insert(key, v);
                }
                Some(Value::Object(out))
            }
        }
    }
}
