//! A JSON object, and only an object. serde's derived `Deserialize` for a struct also
//! takes a sequence of its fields in order (`[null, 5]`), which an API documenting an
//! object must refuse (schemathesis found `{"payment": [null, null]}` accepted).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `T`, read from a map only.
#[derive(Debug)]
pub struct MapOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(MapOnly)
    }
}

struct Fields<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// For `#[serde(default, deserialize_with = "optional_map")]`: absent or null is
/// `None`, an object is `Some`, anything else an error.
pub fn optional_map<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<MapOnly<T>>::deserialize(deserializer)?.map(|object| object.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Pair {
        a: Option<u8>,
        b: Option<u8>,
    }

    #[test]
    fn an_object_is_read_and_a_sequence_refused() {
        let read: MapOnly<Pair> = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        assert_eq!(
            read.0,
            Pair {
                a: Some(1),
                b: None
            }
        );
        assert!(
            serde_json::from_str::<Pair>("[1, 2]").is_ok(),
            "serde's derive takes it"
        );
        assert!(serde_json::from_str::<MapOnly<Pair>>("[1, 2]").is_err());
    }
}
