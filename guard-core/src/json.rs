//! Strict JSON helpers shared by the parsers of records and requests.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A JSON object read into a map that refuses a key given twice, which a plain map would let the
/// last one win.
#[derive(Debug, Default)]
pub(crate) struct UniqueMap<V>(pub(crate) BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate key `{}`",
                            key.chars().take(80).collect::<String>()
                        )));
                    }
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// For `#[serde(deserialize_with)]`: a map that refuses duplicate keys.
pub(crate) fn unique_map<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    UniqueMap::deserialize(deserializer).map(|m| m.0)
}

/// A record read from a JSON object only. Serde's derived `Deserialize` for a struct also reads
/// a JSON array of its fields in order, which would give a signed record a second encoding that
/// slips past the checks on field names (unknown, duplicate or case-variant keys). Types listed
/// in [`objects_only!`] derive with `#[serde(remote = "Self")]`, which turns the derived code
/// into inherent functions, and get trait impls that accept nothing but an object.
pub(crate) trait FromObject<'de>: Sized {
    /// Reads the record from the entries of an object.
    fn from_object<A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// The visitor that lets only an object through to [`FromObject`].
pub(crate) struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<T> ObjectVisitor<T> {
    pub(crate) fn new() -> Self {
        ObjectVisitor(std::marker::PhantomData)
    }
}

impl<'de, T: FromObject<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_object(map)
    }
}

/// `Serialize` and object-only `Deserialize` for types deriving both with
/// `#[serde(remote = "Self")]` (see [`FromObject`]).
macro_rules! objects_only {
    ($($ty:ty),+ $(,)?) => {$(
        impl<'de> $crate::json::FromObject<'de> for $ty {
            fn from_object<A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                <$ty>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map($crate::json::ObjectVisitor::<$ty>::new())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
    )+};
}
pub(crate) use objects_only;

/// Object-only `Deserialize` for types deriving only `Deserialize` with
/// `#[serde(remote = "Self")]`.
macro_rules! objects_only_deserialize {
    ($($ty:ty),+ $(,)?) => {$(
        impl<'de> $crate::json::FromObject<'de> for $ty {
            fn from_object<A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                <$ty>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map($crate::json::ObjectVisitor::<$ty>::new())
            }
        }
    )+};
}
pub(crate) use objects_only_deserialize;
