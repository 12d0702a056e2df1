//! Reading a [`Command`] without serde's buffering of internally tagged enums.
//!
//! A command is written internally tagged: `{"type": "PutWorkloads", "workloads": ...}`. The
//! reader serde derives for that form first copies the whole object into a generic tree to
//! find the tag wherever it is, then reads the variant from the tree; the commands inside a
//! `Batch` are copied once more each. Every federator decodes every replicated command, and
//! at 64 clients that copying made decoding AppendEntries about 6% of the servers' CPU.
//!
//! Serde writes the tag first, so here the tag is read first and the rest of the object goes
//! straight into the variant. An object whose tag comes later (written by hand, or by another
//! encoder) is gathered first and then read the same way, so both orders give the same
//! command.

use std::fmt;

use hansa_core::manifest::PolicyObject;
use hansa_core::rollout::Rollout;
use hansa_core::{Cluster, ClusterHealth, OverrideObject, Placement, Taint, Workload, WorkloadKey};
use hansa_gossip::{Record, Timestamp};
use serde::de::{self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, VariantAccess};
use serde::{Deserialize, Deserializer};

use super::revisions::RolloutAction;
use super::state::Command;

/// The variants of [`Command`] as serde reads an externally tagged enum; `remote` makes the
/// derived reader build a `Command`. Keep in step with `Command` (the compiler checks the
/// fields; the round-trip test checks the names).
#[derive(Deserialize)]
#[serde(remote = "Command")]
enum Variants {
    PutWorkloads {
        workloads: Vec<Workload>,
        now_ms: u64,
        #[serde(default)]
        policies: Vec<PolicyObject>,
        #[serde(default)]
        overrides: Vec<OverrideObject>,
    },
    DeletePolicy {
        key: String,
    },
    SetClusterCordon {
        name: String,
        cordoned: bool,
    },
    SetClusterTaints {
        name: String,
        add: Vec<Taint>,
        remove: Vec<String>,
    },
    DeleteWorkload {
        key: WorkloadKey,
    },
    UpsertCluster {
        cluster: Cluster,
    },
    SetClusterHealth {
        name: String,
        health: ClusterHealth,
    },
    SetPlacement {
        placement: Placement,
    },
    SetRollout {
        key: WorkloadKey,
        rollout: Rollout,
    },
    UpdateRollout {
        key: WorkloadKey,
        action: RolloutAction,
        now_ms: u64,
    },
    Batch {
        commands: Vec<Command>,
    },
    Stamped {
        command: Box<Command>,
        hlc: Timestamp,
        origin: String,
    },
    Merge {
        records: Vec<Record>,
    },
    ForgetTombstones {
        before_ms: u64,
    },
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Command, D::Error> {
        deserializer.deserialize_map(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> de::Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command: an object with a \"type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Command, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let tag: String = map.next_value()?;
            return Variants::deserialize(Rest { tag, map });
        }
        // The tag comes later: gather the object, then read it as if the tag came first.
        let mut rest = serde_json::Map::new();
        rest.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            rest.insert(key, value);
        }
        let tag = match rest.remove("type") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "the command's \"type\" must be a string, not {other}"
                )))
            }
            None => return Err(de::Error::missing_field("type")),
        };
        let object = serde_json::Map::from_iter([(tag, serde_json::Value::Object(rest))]);
        Variants::deserialize(serde_json::Value::Object(object)).map_err(de::Error::custom)
    }
}

/// The rest of a command's object once its tag was read, presented as an externally tagged
/// enum: the tag names the variant, and the remaining entries are its fields.
struct Rest<A> {
    tag: String,
    map: A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Rest<A> {
    type Error = A::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for Rest<A> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), A::Error> {
        let variant = seed.deserialize(self.tag.as_str().into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for Rest<A> {
    type Error = A::Error;

    fn unit_variant(mut self) -> Result<(), A::Error> {
        while self
            .map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        seed.deserialize(de::value::MapAccessDeserializer::new(self.map))
    }

    fn tuple_variant<V: de::Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("a command is an object, not a tuple"))
    }

    fn struct_variant<V: de::Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<Command> {
        let key = WorkloadKey::new("default", "web");
        let workload = super::super::tests::workload("web", "nginx:1", 2);
        let put = Command::PutWorkloads {
            workloads: vec![workload],
            now_ms: 7,
            policies: Vec::new(),
            overrides: Vec::new(),
        };
        vec![
            put.clone(),
            Command::DeletePolicy { key: "p".into() },
            Command::SetClusterCordon {
                name: "c".into(),
                cordoned: true,
            },
            Command::SetClusterTaints {
                name: "c".into(),
                add: Vec::new(),
                remove: vec!["k".into()],
            },
            Command::DeleteWorkload { key: key.clone() },
            Command::UpsertCluster {
                cluster: super::super::tests::cluster("c"),
            },
            Command::SetClusterHealth {
                name: "c".into(),
                health: ClusterHealth::Unreachable,
            },
            Command::SetRollout {
                key: key.clone(),
                rollout: Rollout::start(2, 1, [("c".to_string(), 1)].into()),
            },
            Command::SetPlacement {
                placement: super::super::tests::placement("web", 1),
            },
            Command::UpdateRollout {
                key,
                action: RolloutAction::Undo {
                    to_revision: Some(2),
                },
                now_ms: 3,
            },
            Command::Batch {
                commands: vec![put.clone(), Command::DeletePolicy { key: "q".into() }],
            },
            Command::Stamped {
                command: Box::new(put),
                hlc: Timestamp::default(),
                origin: "peer-a".into(),
            },
            Command::Merge {
                records: Vec::new(),
            },
            Command::ForgetTombstones { before_ms: 9 },
        ]
    }

    /// The variant's name; a variant added to `Command` fails to compile here until it is
    /// added to `Variants` and to `every_variant`.
    fn name(command: &Command) -> &'static str {
        match command {
            Command::PutWorkloads { .. } => "PutWorkloads",
            Command::DeletePolicy { .. } => "DeletePolicy",
            Command::SetClusterCordon { .. } => "SetClusterCordon",
            Command::SetClusterTaints { .. } => "SetClusterTaints",
            Command::DeleteWorkload { .. } => "DeleteWorkload",
            Command::UpsertCluster { .. } => "UpsertCluster",
            Command::SetClusterHealth { .. } => "SetClusterHealth",
            Command::SetPlacement { .. } => "SetPlacement",
            Command::SetRollout { .. } => "SetRollout",
            Command::UpdateRollout { .. } => "UpdateRollout",
            Command::Batch { .. } => "Batch",
            Command::Stamped { .. } => "Stamped",
            Command::Merge { .. } => "Merge",
            Command::ForgetTombstones { .. } => "ForgetTombstones",
        }
    }

    #[test]
    fn commands_read_back_as_written() {
        let names: std::collections::BTreeSet<_> = every_variant().iter().map(name).collect();
        assert_eq!(names.len(), 14, "every variant is tested: {names:?}");
        for command in every_variant() {
            let json = serde_json::to_vec(&command).unwrap();
            let read: Command = serde_json::from_slice(&json)
                .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&json)));
            assert_eq!(read, command);
        }
    }

    /// The buffered path: the same object with its tag last reads as the same command.
    #[test]
    fn a_tag_after_the_fields_reads_the_same() {
        for command in every_variant() {
            let serde_json::Value::Object(mut object) = serde_json::to_value(&command).unwrap()
            else {
                panic!("a command is an object");
            };
            let tag = object.remove("type").unwrap();
            object.insert("type".into(), tag);
            let json = serde_json::to_vec(&object).unwrap();
            assert!(!json.starts_with(b"{\"type\""));
            let read: Command = serde_json::from_slice(&json).unwrap();
            assert_eq!(read, command);
        }
    }

    #[test]
    fn a_command_without_a_known_type_is_an_error_that_says_so() {
        let unknown = serde_json::from_str::<Command>(r#"{"type":"Explode","key":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("Explode"), "{unknown}");
        let missing = serde_json::from_str::<Command>(r#"{"key":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("type"), "{missing}");
        let bad_field = serde_json::from_str::<Command>(r#"{"type":"DeletePolicy","key":5}"#)
            .unwrap_err()
            .to_string();
        assert!(bad_field.contains("invalid type"), "{bad_field}");
    }
}
