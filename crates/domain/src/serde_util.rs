//! Small serde helpers shared by the string-shaped types of this crate (not public).

use std::fmt::Display;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Deserializes a string and validates it with `T::from_str`, reporting `T::Err`'s message.
pub(crate) fn from_str_via_parse<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let raw = String::deserialize(deserializer)?;
    raw.parse::<T>().map_err(D::Error::custom)
}
