//! The subscriber's connection on a Redis Cluster: sharded Pub/Sub. The loop around it
//! (reconnect with backoff, subscription changes, gap fills) is `mod.rs`'s.
//!
//! Each watched project's shard channel `progress:{<id>}` lives in the project's slot,
//! so SSUBSCRIBE goes to the one primary that owns it and SPUBLISH (in `publish.lua`)
//! is delivered by that shard alone, not broadcast over the cluster bus as a plain
//! PUBLISH would be. redis-rs's cluster connection (RESP3, with a push channel) holds
//! one connection per node, routes each SSUBSCRIBE by slot and, after a node's
//! connection drops or the topology changes, subscribes again where the slot now lives.
//!
//! Lossless, as on one node: besides the gap fill after every (re)connect, every
//! SSUBSCRIBE confirmation the server sends (each resubscription by redis-rs after a
//! node's reconnect, failover or slot move) is followed by a gap fill of that project
//! from its history before the next message is delivered.
//!
//! Failover and slot moves: a node that loses a slot (a master demoted in a failover, or
//! the source of a migration) ends its subscriptions there with its own SUNSUBSCRIBE.
//! The project is subscribed again where the slot lives now; first a keyed probe sends
//! the connection to the slot's owner, so that a stale slot map is corrected (the old
//! node answers MOVED, redis-rs refreshes its map) before the SSUBSCRIBE is routed. This
//! matters: a replica accepts SSUBSCRIBE for its master's slots, and a subscription left
//! on the demoted master was found to receive nothing more (`a_manual_failover_is_survived`).
//! A refresh can still read a stale map from a node that has not heard of the failover
//! yet, so the subscriber then asks every node its map takes for a primary for its ROLE
//! ([`check_primaries`]); so does every new connection before it subscribes, and the
//! keep-alive. A node that answers as a replica, or does not answer, or whose connection
//! drops, makes the subscriber rebuild the whole cluster connection with backoff,
//! resubscribing and gap-filling every watched project, as the single-node subscriber
//! does after a reconnect.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::{Connection, Lost, Shared, fill_gap, within};
use crate::broker::Watched;
use crate::broker::redis::connection::cluster_builder;
use crate::broker::redis::layout;
use crate::wire::ProjectId;

/// Connect and response timeouts of the subscriber's cluster connection.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A live cluster connection and the push messages of all its nodes.
pub(in crate::broker::redis) struct Cluster {
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Connection for Cluster {
    /// The seed nodes.
    type Target = Vec<String>;
    type Message = PushInfo;
    const NAME: &'static str = "redis-cluster";
    const PROBE_PUBLISH: &'static str = "SPUBLISH";

    async fn open(seeds: &Vec<String>, topics: &[Arc<dyn Watched>]) -> Result<Self, Lost> {
        let (tx, pushes) = mpsc::unbounded_channel();
        let client = cluster_builder(seeds)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            .build()?;
        let conn = within(client.get_async_connection()).await?;
        let mut cluster = Self { conn, pushes };
        // A map that still names a demoted primary would put subscriptions on a replica.
        check_primaries(&mut cluster.conn).await?;
        cluster.subscribe(topics).await?;
        Ok(cluster)
    }

    async fn next(&mut self) -> Option<PushInfo> {
        self.pushes.recv().await
    }

    async fn handle(&mut self, shared: &Shared, push: PushInfo) -> Result<(), Lost> {
        let channel = |data: &[Value]| match data.first() {
            Some(Value::BulkString(name)) => std::str::from_utf8(name)
                .ok()
                .and_then(layout::project_of_shard_channel),
            _ => None,
        };
        match push.kind {
            PushKind::SMessage => {
                if let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                    && shared.probe_received(name, payload)
                {
                    return Ok(());
                }
                if let (Some(project), Some(Value::BulkString(payload))) =
                    (channel(&push.data), push.data.get(1))
                {
                    shared
                        .deliveries
                        .deliver(&project, Bytes::copy_from_slice(payload));
                }
            }
            // The first confirmation, or a resubscription after a reconnect, failover or
            // slot move: fill what may have been missed meanwhile.
            PushKind::SSubscribe => {
                if let Some(topic) = channel(&push.data).and_then(|p| shared.wanted.get(&p)) {
                    fill_gap(&shared.commands, shared.deliveries.as_ref(), topic.as_ref()).await?;
                }
            }
            // Ours (the last watcher left), or the server's: the slot moved away. Still
            // wanted means the server's: subscribe again where the slot lives now.
            PushKind::SUnsubscribe => {
                if let Some(project) = channel(&push.data)
                    && shared.wanted.contains_key(&project)
                {
                    // A keyed read goes to the slot's primary as this connection knows it;
                    // if that is the old owner, it answers MOVED and redis-rs refreshes its
                    // slot map before routing anything else.
                    let mut probe = redis::cmd("TYPE");
                    probe.arg(layout::shard_channel(&project));
                    within(probe.query_async::<Value>(&mut self.conn)).await?;
                    within(self.conn.ssubscribe(layout::shard_channel(&project))).await?;
                    // The map may have been refreshed from a node that has not heard of
                    // the failover yet: then start over on a fresh connection.
                    check_primaries(&mut self.conn).await?;
                }
            }
            // redis-rs reconnects to the node and subscribes again by itself, but not
            // reliably: after a node's restart a hub was found subscribed to nothing on it,
            // with no SSUBSCRIBE confirmation and no error (`a_restarted_node_is_resubscribed`,
            // hidden until then by a gap fill that happened to time out). So a dropped node
            // is a lost connection: rebuild, resubscribe and fill every gap.
            PushKind::Disconnection => {
                return Err(Lost::NodeDisconnected);
            }
            _ => {}
        }
        Ok(())
    }

    /// One SSUBSCRIBE per project: channels of different slots cannot share one.
    async fn subscribe(&mut self, topics: &[Arc<dyn Watched>]) -> Result<(), Lost> {
        for topic in topics {
            within(self.conn.ssubscribe(layout::shard_channel(topic.project()))).await?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, projects: &[ProjectId]) -> Result<(), Lost> {
        for project in projects {
            within(self.conn.sunsubscribe(layout::shard_channel(project))).await?;
        }
        Ok(())
    }

    /// One sharded channel per primary, in a slot it serves as the slot map says now: a
    /// deaf subscription on any shard is found. When the map changes (failover, slot
    /// move), a channel's slot may leave its primary; the server then ends that
    /// subscription, the probe misses, and the rebuilt connection chooses anew.
    async fn subscribe_probes(&mut self, instance: &str) -> Result<Vec<String>, Lost> {
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let answer = within(self.conn.route_command(slots, routing)).await?;
        let channels: Vec<String> = slot_ranges_by_primary(&answer)
            .iter()
            .filter_map(|ranges| layout::probe_shard_channel_in(instance, ranges))
            .collect();
        if channels.is_empty() {
            return Err(Lost::TopologyChanged(format!(
                "no slot ranges in CLUSTER SLOTS: {answer:?}"
            )));
        }
        for channel in &channels {
            within(self.conn.ssubscribe(channel)).await?;
        }
        Ok(channels)
    }

    async fn keepalive(&mut self) -> Result<(), Lost> {
        check_primaries(&mut self.conn).await
    }
}

/// `CLUSTER SLOTS` (`[[start, end, [host, port, ..], replicas..], ..]`) as each
/// primary's slot ranges.
fn slot_ranges_by_primary(answer: &Value) -> Vec<Vec<(u16, u16)>> {
    let mut primaries: Vec<(Value, Vec<(u16, u16)>)> = Vec::new();
    let Value::Array(entries) = answer else {
        return Vec::new();
    };
    for entry in entries {
        let Value::Array(fields) = entry else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
            continue;
        };
        let node = Value::Array(primary.iter().take(2).cloned().collect());
        match primaries.iter_mut().find(|(n, _)| *n == node) {
            Some((_, ranges)) => ranges.push((start, end)),
            None => primaries.push((node, vec![(start, end)])),
        }
    }
    primaries.into_iter().map(|(_, ranges)| ranges).collect()
}

/// The keep-alive: every node this connection takes for a primary must answer, and as a
/// primary. A replica among them means the slot map is stale (a failover it has not
/// seen), so subscriptions may sit on a node that no longer owns their slot.
async fn check_primaries(conn: &mut ClusterConnection) -> Result<(), Lost> {
    let role = redis::cmd("ROLE");
    let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let answers = within(conn.route_command(role, routing)).await?;
    let Value::Map(answers) = answers else {
        return Err(Lost::TopologyChanged(format!(
            "unexpected ROLE answer {answers:?}"
        )));
    };
    for (node, answer) in answers {
        let role = match &answer {
            Value::Array(fields) => fields.first(),
            _ => None,
        };
        match role {
            Some(Value::BulkString(role)) if role.as_slice() == b"master" => {}
            _ => {
                let node = match &node {
                    Value::BulkString(name) => String::from_utf8_lossy(name).into_owned(),
                    other => format!("{other:?}"),
                };
                return Err(Lost::TopologyChanged(format!(
                    "{node} is not a primary: {answer:?}"
                )));
            }
        }
    }
    Ok(())
}
